"""``fetalgan report`` on a small phantom sweep written straight into an MLflow store through
``fetalgan.tracking.SweepTracker`` (no Ray): the tables hold the stored values, the figures are
embedded, the page needs no network and escapes what it shows, the files go back to MLflow."""

from __future__ import annotations

import base64
import math
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from fetalgan.cli import main
from fetalgan.config import TrainConfig, with_overrides
from fetalgan.images import write_grid
from fetalgan.tracking.names import WORKER_HOST_TAG, WORKER_IP_TAG

SIZES = (16, 32)
EPOCHS = (2, 4)
WORKERS = (("node-a", "10.0.0.1"), ("node-b", "10.0.0.2"))  # trial k ran on WORKERS[k % 2]
LOSSES = ("loss_d", "loss_g")


def _metrics(size: int, epoch: int, lr_g: float) -> dict[str, float]:
    """Made-up evaluation metrics, distinct per trial and epoch."""
    fid = 400.0 / (size / 16) / epoch + 1000 * lr_g + 0.123
    return {
        "fid": fid,
        "kid_mean": fid / 1000,
        "kid_std": fid / 20000,
        "lbpv_l1": 0.01 * size / epoch,
        "lbpv_v8": 0.001 * epoch,
        "loss_d": 1.0 / epoch,
        "loss_g": 2.0 + epoch,
    }


def log_phantom_sweep(
    root: Path,
    name: str,
    *,
    data: dict | None = None,
    names: dict | None = None,
    specs: list[tuple] | None = None,
    sweep_yaml: str | None = None,
) -> dict:
    """A sweep over data.size x epochs (4 trials: one stopped early by ASHA, one whose FID
    worsens at its last evaluation) plus a failed trial with another lr_g, each evaluation
    logged as the sweep driver logs a trial's Evaluation (with the running best_fid and the
    worker's host and IP). Returns what was logged: {tracking_uri, parent, trials: {run id:
    {name, size, epochs, lr_g, history: {epoch: metrics}, state, host, ip}}}."""
    from fetalgan.evaluation import Evaluation, Objective
    from fetalgan.tracking import SweepTracker

    uri = f"sqlite:///{root / 'mlruns.db'}"
    objective = Objective("fid", "min")
    tracker = SweepTracker(name, objective=objective, tracking_uri=uri)
    parent = tracker.start_parent()
    tracker.log_sweep_config(sweep_yaml or f"name: {name}\n")
    data = data or {"kind": "phantom", "phantom_n": 64, "cache_dir": str(root / "cache")}
    base = with_overrides(TrainConfig(), {"resolution": 32, "eval_every": 1, "eval_n": 32})
    base = with_overrides(base, {f"data.{k}": v for k, v in data.items()})
    grid_image = np.random.default_rng(0).integers(0, 256, (16, 1, 32, 32), dtype=np.uint8)
    fake_checkpoint = root / "checkpoint.pt"
    fake_checkpoint.write_bytes(b"not a real checkpoint")
    if specs is None:
        # (data.size, epochs, lr_g, FINISHED | STOPPED by ASHA at 2 | DIVERGED: FINISHED with
        # its last FID 3x worse | FAILED)
        specs = [(s, e, 2e-4, "FINISHED") for s in SIZES for e in EPOCHS]
        specs[1] = (16, 4, 2e-4, "STOPPED")
        specs[3] = (32, 4, 2e-4, "DIVERGED")
        specs.append((32, 4, 1e-3, "FAILED"))
    logged = {}
    for k, (size, epochs, lr_g, status) in enumerate(specs):
        stopped = status == "STOPPED"
        last = 1 if status == "FAILED" else 2 if stopped else epochs
        cfg = with_overrides(base, {"data.size": size, "epochs": epochs, "lr_g": lr_g})
        trial_name = (names or {}).get(k, f"trial_{k:02d}")
        host, ip = WORKERS[k % len(WORKERS)]
        run_id = tracker.start_trial(f"t{k}", trial_name, cfg)
        history, best = {}, None
        for epoch in range(1, last + 1):
            result = _metrics(size, epoch, lr_g)
            if status == "DIVERGED" and epoch == last:
                result["fid"] *= 3
                result["kid_mean"] *= 3
            is_best = objective.better(result["fid"], best)
            best = result["fid"] if is_best else best
            history[epoch] = result
            evaluation = Evaluation(
                epoch=epoch,
                losses={m: result[m] for m in LOSSES},
                values={m: v for m, v in result.items() if m not in LOSSES},
                n_fake=32,
                n_real=64,
                objective=objective,
                best_value=best,
                is_best=is_best,
            )
            tracker.log_evaluation(
                run_id, evaluation, tags={WORKER_HOST_TAG: host, WORKER_IP_TAG: ip}
            )
            grid_path = root / f"grid_{k}_{epoch}.png"
            write_grid(grid_image // epoch, grid_path, nrow=4)
            tracker.log_evaluation_files(
                run_id, evaluation, checkpoint_file=fake_checkpoint, sample_grid=grid_path
            )
        if status == "FAILED":
            tracker.end_trial(run_id, "FAILED", error="RuntimeError: boom <at> epoch 2")
        else:
            tracker.end_trial(run_id, "FINISHED", stopped_early=stopped)
        state = "failed" if status == "FAILED" else "stopped" if stopped else "completed"
        logged[run_id] = {"name": trial_name, "size": size, "epochs": epochs, "lr_g": lr_g,
                          "history": history, "state": state, "host": host, "ip": ip}  # fmt: skip
    tracker.finish_parent("FINISHED", register=False)
    return {"tracking_uri": uri, "parent": parent, "trials": logged}


def _best_fid(trial: dict) -> tuple[int, float]:
    """(epoch, FID) of a logged trial's best evaluation, worked out from what was logged."""
    epoch = min(trial["history"], key=lambda e: trial["history"][e]["fid"])
    return epoch, trial["history"][epoch]["fid"]


class Tables(HTMLParser):
    """Every <table id=...> of a page as {id: [[cell text, ...], ...]}, and every <img>."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.row_ids: dict[str, list[str | None]] = {}
        self.images: dict[str, str] = {}
        self._table = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id")
            self.tables[self._table] = []
            self.row_ids[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
            self.row_ids[self._table].append(attrs.get("data-run-id"))
        elif tag in ("td", "th") and self._table:
            self._cell = []
        elif tag == "img":
            self.images[attrs.get("id")] = attrs.get("src", "")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(html: str) -> Tables:
    parser = Tables()
    parser.feed(html)
    return parser


def _close(cell: str, value: float) -> bool:
    number = float(cell.split()[0])
    return math.isclose(number, value, rel_tol=5e-4)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    return log_phantom_sweep(root, "phantom_grid", names={0: "size16<e2>&co"}) | {"root": root}


@pytest.fixture(scope="module")
def report(sweep):
    from fetalgan.report import write_report

    out = sweep["root"] / "out"
    result = write_report("phantom_grid", out=out, tracking_uri=sweep["tracking_uri"])
    return result | {"page": Path(result["html"]).read_text()}


def test_trials_table_holds_the_stored_values(sweep, report):
    page = _parse(report["page"])
    rows = page.tables["trials-table"]
    header = rows[0]
    assert header[:2] == ["trial", "status"]
    for column in ("data.size", "epochs", "lr_g", "fid", "kid_mean", "lbpv_l1", "best fid"):
        assert column in header
    assert not [c for c in header if c.startswith("best_")]  # best_fid is the "best fid" column
    body = dict(zip(page.row_ids["trials-table"][1:], rows[1:], strict=True))
    assert set(body) == set(sweep["trials"])
    for run_id, trial in sweep["trials"].items():
        cells = dict(zip(header, body[run_id], strict=True))
        last_epoch = max(trial["history"])
        final = trial["history"][last_epoch]
        assert cells["trial"] == trial["name"]
        assert cells["status"] == trial["state"]
        assert int(cells["data.size"]) == trial["size"] and int(cells["epochs"]) == trial["epochs"]
        assert int(cells["last epoch"]) == last_epoch
        for key in ("fid", "kid_mean", "kid_std", "lbpv_l1"):
            assert _close(cells[key], final[key]), (key, cells[key], final[key])
        best_epoch, best_fid = _best_fid(trial)
        assert _close(cells["best fid"], best_fid)
        assert int(cells["best epoch"]) == best_epoch
        assert int(cells["n fake"]) == 32


def test_grid_table_is_data_size_by_epochs(sweep, report):
    page = _parse(report["page"])
    grid = page.tables["grid-fid"]
    assert grid[0][1:] == [str(e) for e in EPOCHS]
    assert [row[0] for row in grid[1:]] == [str(s) for s in SIZES]
    expected = {}
    for trial in sweep["trials"].values():
        if trial["state"] == "completed":
            expected[(trial["size"], trial["epochs"])] = trial["history"][trial["epochs"]]["fid"]
    for i, size in enumerate(SIZES, start=1):
        for j, epochs in enumerate(EPOCHS, start=1):
            cell = grid[i][j]
            if (size, epochs) in expected:
                assert _close(cell, expected[(size, epochs)]), (size, epochs, cell)
            else:  # only the ASHA-stopped trial: it never reached that many epochs
                assert cell == "—", (size, epochs, cell)
    assert "grid-kid_mean" in page.tables and "grid-lbpv_l1" in page.tables


def test_every_evaluation_is_listed(sweep, report):
    page = _parse(report["page"])
    rows = page.tables["evaluations-table"]
    header = rows[0]
    assert "best_fid" not in header  # bookkeeping beside fid, not a metric of its own
    seen = {}
    for run_id, cells in zip(page.row_ids["evaluations-table"][1:], rows[1:], strict=True):
        cells = dict(zip(header, cells, strict=True))
        seen[(run_id, int(cells["epoch"]))] = cells
    expected = {(r, e): m for r, t in sweep["trials"].items() for e, m in t["history"].items()}
    assert set(seen) == set(expected)
    for key, metrics in expected.items():
        for name in ("fid", "kid_mean", "loss_d", "loss_g", "lbpv_v8"):
            assert _close(seen[key][name], metrics[name])


def test_figures_are_embedded_and_the_page_needs_no_network(report):
    page = _parse(report["page"])
    for image_id in ("curves", "hyperparams", "best-samples", "real-samples"):
        src = page.images[image_id]
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    html = report["page"]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<script" not in html and "<link" not in html
    for name in ("curves", "hyperparams", "best_samples", "real_samples"):
        assert Path(report["figures"][name]).read_bytes()[:4] == b"\x89PNG"


def test_best_trial_samples_and_real_images(sweep, report):
    from fetalgan.images import read_grey

    finished = {r: t for r, t in sweep["trials"].items() if t["state"] != "failed"}
    best_id = min(finished, key=lambda r: _best_fid(finished[r])[1])
    by_last = min(
        finished, key=lambda r: finished[r]["history"][max(finished[r]["history"])]["fid"]
    )
    assert by_last != best_id  # the fixture's diverged trial: best by its best, not its last
    assert f'data-run-id="{best_id}" class="best"' in report["page"]
    best_epoch, best_fid = _best_fid(sweep["trials"][best_id])
    summary = re.search(r'id="best-trial">([^<]*)<', report["page"]).group(1)
    assert best_id in summary and _close(summary.split("= ")[1], best_fid)
    # the grid logged at the best epoch: 16 images of 32 px in 4 columns, divided by that epoch
    samples = read_grey(report["figures"]["best_samples"])
    assert best_epoch != max(sweep["trials"][best_id]["history"])
    grid_image = np.random.default_rng(0).integers(0, 256, (16, 1, 32, 32), dtype=np.uint8)
    assert np.array_equal(samples[2:34, 2:34], grid_image[0, 0] // best_epoch)
    real = read_grey(report["figures"]["real_samples"])
    n_real = sweep["trials"][best_id]["size"]  # its training subset (< 64), 8 per row
    assert real.shape == ((n_real // 8) * 34 + 2, 8 * 34 + 2)
    assert f"{n_real} training images (phantom, 32 px)" in report["page"]


def test_text_is_escaped(report):
    html = report["page"]
    assert "size16&lt;e2&gt;&amp;co" in html
    assert "size16<e2>" not in html


def test_status_and_environment(sweep, report):
    page = _parse(report["page"])
    counts = re.search(r'id="trial-counts">([^<]*)<', report["page"]).group(1)
    assert counts == "5; 3 completed; 1 failed; 1 stopped"
    env = {row[0]: row[1] for row in page.tables["environment"][1:]}
    assert "host" in env and "(6)" in env["host"]  # the parent and five trials
    hosts = {row[0]: (row[1], int(row[2])) for row in page.tables["trial-hosts"][1:]}
    ran = Counter((t["host"], t["ip"]) for t in sweep["trials"].values())
    assert hosts == {host: (ip, n) for (host, ip), n in ran.items()}
    assert hosts["node-a"] == ("10.0.0.1", 3)
    assert "sweep driver environment" in report["page"] and "packages" in report["page"]


def test_report_is_logged_to_the_parent_run(sweep, report):
    from fetalgan.tracking import list_run_artifacts

    assert report["logged_to"] == sweep["parent"]
    logged = {
        Path(p).name
        for p in list_run_artifacts(sweep["parent"], "report", tracking_uri=sweep["tracking_uri"])
    }
    assert {"report.html", "curves.png", "hyperparams.png", "best_samples.png",
            "real_samples.png", "trials.csv", "evaluations.csv"} <= logged  # fmt: skip


def test_missing_training_data_is_reported_not_fatal(sweep, tmp_path, capsys):
    missing = tmp_path / "no_such_dataset"
    # another experiment in the same store (a new sqlite store costs seconds of migrations)
    sweep = log_phantom_sweep(
        sweep["root"], "folder_sweep", data={"kind": "folder", "root": str(missing)}
    )
    out = tmp_path / "out"
    code = main(["report", "folder_sweep", "--out", str(out), "--tracking-uri",
                 sweep["tracking_uri"]])  # fmt: skip
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    page = (out / "report.html").read_text()
    assert 'id="no-real-samples"' in page
    assert "real images not available on this machine" in page and str(missing) in page
    assert 'id="best-samples"' in page


def test_unknown_experiment_names_the_known_ones(sweep, capsys):
    code = main(["report", "nope", "--tracking-uri", sweep["tracking_uri"]])
    assert code == 2
    err = capsys.readouterr().err
    assert "'nope' not found" in err and "phantom_grid" in err


def test_paper_grid_columns_are_the_checkpoint_epochs(sweep, tmp_path):
    """Like sweeps/paper_grid.yaml: only data.size varies, every trial runs all epochs and is
    evaluated at each; the table's columns are the sweep's checkpoint_epochs."""
    from fetalgan.report import write_report

    specs = [(16, 4, 2e-4, "FINISHED"), (32, 4, 2e-4, "FINISHED")]
    paper = log_phantom_sweep(
        sweep["root"], "paper_like", specs=specs,
        sweep_yaml="name: paper_like\ncheckpoint_epochs: [2, 4]\n",
    )  # fmt: skip
    result = write_report("paper_like", out=tmp_path, tracking_uri=paper["tracking_uri"])
    page = _parse(Path(result["html"]).read_text())
    grid = page.tables["grid-fid"]
    assert grid[0][1:] == ["2", "4"]
    for row, trial in zip(grid[1:], paper["trials"].values(), strict=True):
        assert row[0] == str(trial["size"])
        assert _close(row[1], trial["history"][2]["fid"])
        assert _close(row[2], trial["history"][4]["fid"])
    assert "the sweep&#39;s checkpoint_epochs" in Path(result["html"]).read_text()


def test_a_sweep_without_trials_yet(sweep, tmp_path):
    from fetalgan.report import write_report
    from fetalgan.tracking import SweepTracker

    tracker = SweepTracker("just_started", tracking_uri=sweep["tracking_uri"])
    tracker.start_parent()
    result = write_report("just_started", out=tmp_path, tracking_uri=sweep["tracking_uri"])
    page = Path(result["html"]).read_text()
    assert "this sweep has no trial runs yet" in page
    assert 'id="no-best-samples"' in page and result["figures"] == {}
    assert _parse(page).tables["trials-table"] == [["trial", "status", "last epoch", "best fid",
                                                    "best epoch", "n fake"]]  # fmt: skip


# --------------------------------------------------------------------------------------------
# The rules on hand-made sweep records (built from the shape fetalgan.tracking.sweep_runs
# returns, as the report builds them)
# --------------------------------------------------------------------------------------------


def _trial(run_id: str, history: dict, *, status: str = "FINISHED", tags: dict | None = None):
    from fetalgan.report import RunRecord

    return RunRecord.from_run(
        {"run_id": run_id, "run_name": run_id, "status": status, "params": {},
         "tags": tags or {}, "metrics": {k: v[-1][1] for k, v in history.items()},
         "history": history}
    )  # fmt: skip


def _sweep(trials: list, mode: str = "min"):
    from fetalgan.report import SweepRecord

    return SweepRecord(metric="fid", mode=mode, trials=trials, parent=None,
                       tracking_uri="sqlite:///unused.db", experiment="hand_made")  # fmt: skip


def test_a_trials_best_is_its_logged_running_best():
    from fetalgan.evaluation import Objective
    from fetalgan.report import trial_best

    goal = Objective("fid", "min")
    # evaluations 1-2 were lost (a restart): fid's history alone would say 70 at epoch 3
    restarted = _trial("r", {"fid": [(3, 70.0)], "best_fid": [(1, 90.0), (2, 40.0), (3, 40.0)]})
    assert trial_best(restarted, goal) == (2, 40.0)
    # logged before the trainer wrote best_fid: the best of fid's history (first on ties)
    older = _trial("o", {"fid": [(1, 90.0), (2, 40.0), (3, math.nan), (4, 40.0), (5, 60.0)]})
    assert trial_best(older, goal) == (2, 40.0)
    assert trial_best(older, Objective("fid", "max")) == (1, 90.0)
    assert trial_best(_trial("none", {"loss_g": [(1, 1.0)]}), goal) is None


def test_the_best_trial_is_the_finished_one_with_the_best_best_value():
    from fetalgan.report import best_trial

    diverged = _trial("diverged", {"fid": [(1, 30.0), (2, 95.0)]})  # best 30, last 95
    steady = _trial("steady", {"fid": [(1, 60.0), (2, 50.0)]})  # best and last 50
    stopped = _trial("stopped", {"fid": [(1, 45.0)]}, tags={"stopped_early": "true"})
    failed = _trial("failed", {"fid": [(1, 5.0)]}, status="FAILED")
    running = _trial("running", {"fid": [(1, 1.0)]}, status="RUNNING")
    assert best_trial(_sweep([steady, diverged, stopped, failed, running])).run_id == "diverged"
    assert best_trial(_sweep([steady, stopped])).run_id == "stopped"  # ASHA stops count
    assert best_trial(_sweep([steady, diverged, failed], mode="max")).run_id == "diverged"
    assert best_trial(_sweep([failed, running])) is None


def test_running_bests_are_not_metrics_of_their_own():
    from fetalgan.report import ordered_metrics

    trial = _trial("t", {k: [(1, 1.0)] for k in ("best_fid", "fid", "zeta", "loss_g", "n_fake")})
    assert ordered_metrics([trial]) == ["fid", "loss_g", "zeta"]


def test_hosts_count_the_trials_each_ran():
    from fetalgan.report import UNKNOWN_HOST, trial_hosts

    a = {WORKER_HOST_TAG: "gpu-a", WORKER_IP_TAG: "10.0.0.1"}
    b = {WORKER_HOST_TAG: "gpu-b", WORKER_IP_TAG: "10.0.0.2"}
    trials = [_trial(f"t{k}", {}, tags=tags) for k, tags in enumerate([b, a, b, {}, b])]
    assert trial_hosts(_sweep(trials)) == [
        {"host": "gpu-b", "ip": "10.0.0.2", "trials": 3},
        {"host": "gpu-a", "ip": "10.0.0.1", "trials": 1},
        {"host": UNKNOWN_HOST, "ip": "—", "trials": 1},
    ]


def test_best_samples_fall_back_to_the_latest_grid(tmp_path, monkeypatch):
    """No grid logged at the best epoch: the latest one is shown, and the page says so."""
    import fetalgan.tracking
    from fetalgan.report import best_samples

    latest = tmp_path / "latest.png"
    write_grid(np.zeros((4, 1, 8, 8), dtype=np.uint8), latest, nrow=2)
    asked = []

    def download_sample_grid(run_id, epoch, dst, *, tracking_uri=None):
        asked.append((run_id, epoch, tracking_uri))
        return latest if epoch is None else None

    monkeypatch.setattr(fetalgan.tracking, "download_sample_grid", download_sample_grid)
    trial = _trial("t", {"fid": [(1, 90.0), (2, 40.0), (3, 70.0)]})
    sweep = _sweep([trial])
    path, epoch, note = best_samples(sweep, trial, tmp_path)
    assert asked == [("t", 2, sweep.tracking_uri), ("t", None, sweep.tracking_uri)]
    assert path == tmp_path / "best_samples.png" and path.read_bytes() == latest.read_bytes()
    assert epoch is None and "no grid logged at the best epoch (2)" in note

    monkeypatch.setattr(fetalgan.tracking, "download_sample_grid", lambda *a, **k: None)
    assert best_samples(sweep, trial, tmp_path / "none") == (
        None, None, "trial t has no sample grids logged"
    )  # fmt: skip


def test_learning_curves_mark_a_pbt_trials_exploits(tmp_path, monkeypatch):
    import json

    from PIL import Image

    from fetalgan import figures
    from fetalgan.report.plots import EXPLOIT_LABEL, curves_figure
    from fetalgan.tracking.names import EXPLOITS_TAG

    seen = {}
    draw = figures.metric_curves

    def spy(panels, path, **options):
        seen.update(options)
        return draw(panels, path, **options)

    monkeypatch.setattr(figures, "metric_curves", spy)
    history = {"fid": [(2, 50.0), (4, 40.0), (6, 20.0)], "kid_mean": [(2, 0.05), (4, 0.02)]}
    exploits = json.dumps([{"epoch": 4, "donor": "b", "config": {"lr_g": 1e-3}}])
    donor = _trial("b", {"fid": [(2, 30.0), (4, 25.0), (6, 22.0)]})
    pbt = _sweep([_trial("a", history, tags={EXPLOITS_TAG: exploits}), donor])
    assert curves_figure(pbt, tmp_path / "pbt.png") == tmp_path / "pbt.png"
    assert seen["events"] == {"a": [4], "b": []} and seen["event_label"] == EXPLOIT_LABEL
    plain = _sweep([_trial("a", history), donor])  # the same numbers, no exploit
    assert curves_figure(plain, tmp_path / "plain.png") == tmp_path / "plain.png"
    assert seen["events"] == {"a": [], "b": []}
    marked, unmarked = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("pbt", "plain"))
    assert marked.shape == unmarked.shape and (marked != unmarked).any()  # the mark is drawn
