"""The final selection stage (fetalgan.selection) and what it changes: the four disjoint real
sets, the trainer's candidate weights, the cached and resumable re-scoring, and, through a real
Tune run and a real sqlite MLflow store, best / the registry alias / generate / the report /
`fetalgan best` / `fetalgan select` all naming the selected checkpoint; `rank_by: window`.

The LBPv distance (no Inception network) is the metric throughout: the re-scoring path is the
same for every metric the trainer computes, and these tests check the plumbing and the rule.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny import tiny_train_config

from fetalgan.config import ConfigError, load_sweep
from fetalgan.evaluation import Objective, window_value

# --------------------------------------------------------------------------------------------
# Pure pieces
# --------------------------------------------------------------------------------------------


def test_window_value_is_the_geometric_mean_of_the_last_w():
    assert window_value([9.0, 1.0, 4.0], 2) == pytest.approx(2.0)  # sqrt(1 * 4)
    assert window_value([None, 2.0, float("nan"), 8.0], 3) == pytest.approx(4.0)
    assert window_value([1.0, -1.0, 3.0], 3) == pytest.approx(1.0)  # a value <= 0: plain mean
    assert window_value([None, float("inf")], 3) is None


def test_trainer_keeps_the_k_best_evaluations_weights(tmp_path):
    """keep_candidates=2: the full state keeps the two best evaluations' generator weights
    (best first); the candidate file of the best one samples exactly what best.pt samples."""
    from fetalgan.checkpoint import candidate_weights, load_checkpoint, save_checkpoint
    from fetalgan.generate import load_generator
    from fetalgan.sampling import sample_images
    from fetalgan.train import train

    cfg = tiny_train_config(tmp_path / "cache", epochs=4, eval_metrics=["lbpv"])
    objective = Objective("lbpv_l1", "min")
    train(cfg, run_dir=tmp_path / "run", progress=False, objective=objective, keep_candidates=2)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    values = {h["epoch"]: h["values"]["lbpv_l1"] for h in state["history"]}
    kept = state["candidates"]
    assert [c["epoch"] for c in kept] == sorted(values, key=values.get)[:2]
    assert [c["value"] for c in kept] == sorted(values.values())[:2]
    assert set(kept[0]["networks"]) == {"generator"}  # the sampling networks only
    path = save_checkpoint(tmp_path / "cand.pt", candidate_weights(state, kept[0]))
    from_candidate = sample_images(*load_generator(path, "cpu"), 8, seed=3)
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    assert load_checkpoint(best)["epoch"] == kept[0]["epoch"]
    assert torch.equal(from_candidate, sample_images(*load_generator(best, "cpu"), 8, seed=3))
    # one candidate kept: no candidates in the state (the default costs nothing)
    train(cfg, run_dir=tmp_path / "one", progress=False, objective=objective)
    assert "candidates" not in load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")


# --------------------------------------------------------------------------------------------
# The select section and the four real sets
# --------------------------------------------------------------------------------------------


def sweep_dict(**select) -> dict:
    return {
        "name": "sel",
        "metric": "lbpv_l1",
        "base": {
            "resolution": 32,
            "data": {"kind": "phantom", "size": 24, "order": "listed", "phantom_n": 200},
            "eval_reference": {"size": 24, "order": "listed", "skip": 24},
            "eval_metrics": ["lbpv"],
        },
        "select": {
            "reference": {"order": "listed", "skip": 48, "size": 24},
            "test_reference": {"order": "listed", "skip": 72, "size": 24},
            **select,
        },
    }


def load(tmp_path: Path, data: dict, *overrides: str):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_sweep(path, list(overrides))


def test_select_section_is_checked(tmp_path):
    cfg = load(tmp_path, sweep_dict(top_k=2, per_trial=3))
    assert cfg.select.top_k == 2 and cfg.select.per_trial == 3
    cases = {
        "select.top_k=0": "select.top_k: must be > 0",
        "select.n_fake=1": "select.n_fake: must be >= 2",
        "select.metric=loss_g": "is a training loss",
        "select.metric=fdi": "select.metric: unknown 'fdi'",
        "select.fid_dims=100": "select.fid_dims: expected one of 64, 192, 768, 2048",
        "select.mode=low": "select.mode: unknown value 'low'",
        "select.reference.kind=hc18": "select.reference.root: required for kind 'hc18'",
    }
    for item, message in cases.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            load(tmp_path, sweep_dict(), item)


@pytest.mark.parametrize(
    ("override", "first", "second"),
    [
        ("select.test_reference.skip=60", "select.reference", "select.test_reference"),
        ("select.reference.skip=10", "the training set", "select.reference"),
        ("select.test_reference.skip=30,size=4", "eval_reference", "select.test_reference"),
    ],
)
def test_phantom_sets_that_share_images_are_refused_when_loading(tmp_path, override, first, second):
    key, _, values = override.partition("=")
    skip, _, size = values.partition(",size=")
    items = [f"{key}={skip}"] + ([f"{key.rsplit('.', 1)[0]}.size={size}"] if size else [])
    with pytest.raises(ConfigError, match=f"{first}.* and {second} share"):
        load(tmp_path, sweep_dict(), *items)


def test_a_searched_training_size_counts_its_whole_pool(tmp_path):
    """data.size drawn from a range: any image of the pool may train, so a reference inside
    the pool is refused; listed sizes count exactly the images they take."""
    data = sweep_dict()
    data["space"] = {"data.size": {"randint": [8, 24]}}
    data["search"] = {"kind": "random"}
    with pytest.raises(ConfigError, match="the training set.*share.*any image of its pool"):
        load(tmp_path, data)
    data["base"]["data"]["phantom_n"] = 24  # the pool is the training images alone
    data["base"]["eval_reference"] |= {"phantom_n": 200}
    for name in ("reference", "test_reference"):
        data["select"][name] |= {"phantom_n": 200, "phantom_seed": 1}
    assert load(tmp_path, data).select is not None


def _png(path: Path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 50), value, np.uint8)).save(path)


def test_file_sets_and_planes_patients_are_checked_when_the_sweep_starts(tmp_path):
    """Folders: the same file in two sets is refused (names, not pixels); FETAL_PLANES_DB:
    two sets sharing a patient through different images are refused."""
    from fetalgan.data.splits import check_real_sets

    folder = tmp_path / "scans"
    for i in range(40):
        _png(folder / f"img_{i:03d}.png", i)
    data = sweep_dict()
    data["base"]["data"] = {"kind": "folder", "root": str(folder), "size": 10, "order": "listed"}
    data["base"]["eval_reference"] = {"size": 10, "order": "listed", "skip": 10}
    data["select"]["reference"] = {"size": 10, "order": "listed", "skip": 20}
    data["select"]["test_reference"] = {"size": 10, "order": "listed", "skip": 25}
    cfg = load(tmp_path, data)  # files are not read when loading
    with pytest.raises(ConfigError, match="select.reference and select.test_reference share 5"):
        check_real_sets(cfg)
    cfg = load(tmp_path, data, "select.test_reference.skip=30")
    assert [len(s) for s in check_real_sets(cfg)] == [10, 10, 10, 10]

    planes = tmp_path / "planes"
    rows = ["Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train "]
    for i in range(12):  # two images per patient: patients 0..5
        rows.append(f"P{i:02d};{i // 2};Fetal brain;Trans-cerebellum;Op1;Voluson E6;1")
        _png(planes / "Images" / f"P{i:02d}.png", i)
    planes.joinpath("FETAL_PLANES_DB_data.csv").write_text("\n".join(rows) + "\n")
    data["base"]["data"] = {"kind": "planes", "root": str(planes), "size": 4, "order": "listed"}
    data["base"]["eval_reference"] = {"size": 2, "order": "listed", "skip": 4}
    data["select"]["reference"] = {"size": 3, "order": "listed", "skip": 6}  # P06..P08
    data["select"]["test_reference"] = {"size": 3, "order": "listed", "skip": 9}  # P09..P11
    with pytest.raises(ConfigError, match="share 1 patient.*patient 4 .P09.png"):
        check_real_sets(load(tmp_path, data))
    fixed = load(tmp_path, data, "select.test_reference.skip=10", "select.test_reference.size=2")
    assert check_real_sets(fixed) is not None


# --------------------------------------------------------------------------------------------
# Re-scoring: the same latents for every candidate, cached, resumable
# --------------------------------------------------------------------------------------------


def test_selection_resumes_after_a_kill_and_never_scores_twice(tmp_path, monkeypatch):
    from fetalgan.checkpoint import candidate_weights, load_checkpoint, save_checkpoint
    from fetalgan.selection import Candidate, ScoreCache, run_selection
    from fetalgan.train import train

    objective = Objective("lbpv_l1", "min")
    files, candidates = {}, []
    for lr in (1e-3, 3e-3):
        cfg = tiny_train_config(tmp_path / "cache", epochs=3, eval_metrics=["lbpv"], lr_g=lr)
        run = tmp_path / f"run{lr}"
        train(cfg, run_dir=run, progress=False, objective=objective, keep_candidates=2)
        state = load_checkpoint(run / "checkpoints" / "last.pt")
        for kept in state["candidates"]:
            c = Candidate(f"run{lr}", f"lr {lr}", None, kept["epoch"], kept["value"], "c.pt")
            files[c.key] = save_checkpoint(
                run / f"c{kept['epoch']}.pt", candidate_weights(state, kept)
            )
            candidates.append(c)
    data = sweep_dict(n_fake=16, draws=2)
    data["base"]["data"] |= {"phantom_n": 32, "cache_dir": str(tmp_path / "cache")}
    data["base"]["eval_reference"] = {"size": 4, "order": "listed", "skip": 24}
    data["select"]["reference"] = {"size": 4, "order": "listed", "skip": 28}
    data["select"]["test_reference"] = {"size": 4, "order": "listed", "skip": 26, "phantom_seed": 9}
    cfg = load(tmp_path, data)

    computed = []
    put = ScoreCache.put
    monkeypatch.setattr(ScoreCache, "put", lambda self, k, v: (computed.append(k), put(self, k, v)))
    fetched = []

    def fetch(candidate):
        fetched.append(candidate.key)
        if len(fetched) == 3 and killed:
            raise KeyboardInterrupt("killed half-way")
        return files[candidate.key]

    killed = True
    with pytest.raises(KeyboardInterrupt):
        run_selection(cfg, candidates, fetch, cache_path=tmp_path / "scores.json", progress=False)
    assert len(computed) == 4  # two candidates x two draws, then the kill
    killed, computed[:] = False, []
    resumed = run_selection(
        cfg, candidates, fetch, cache_path=tmp_path / "scores.json", progress=False
    )
    assert len(computed) == 2 * 2 + 2  # the two candidates left, then the winner's test draws
    assert resumed["cached_scores"] == 4
    computed[:] = []
    again = run_selection(
        cfg, candidates, fetch, cache_path=tmp_path / "scores.json", progress=False
    )
    assert computed == [] and again["winner"] == resumed["winner"]
    fresh = run_selection(cfg, candidates, fetch, cache_path=tmp_path / "new.json", progress=False)
    assert fresh["candidates"] == resumed["candidates"] and fresh["test"] == resumed["test"]
    # the winner has the best mean score; every candidate was scored on the same latents
    means = [c["score"] for c in fresh["candidates"]]
    assert means == sorted(means) and fresh["winner"]["score"] == means[0]
    assert all(len(c["scores"]) == 2 for c in fresh["candidates"])
    assert fresh["test"]["scores"] != fresh["winner"]["scores"]  # other latents, other set
    assert all(math.isfinite(v) for v in fresh["test"]["scores"])


# --------------------------------------------------------------------------------------------
# Through a real Tune run and a real MLflow store
# --------------------------------------------------------------------------------------------


def tiny_sweep(tmp_path: Path, name: str, **fields) -> Path:
    data = sweep_dict(top_k=2, per_trial=2, n_fake=16, draws=2)
    data["name"] = name
    data["base"] |= {
        "epochs": 3,
        "eval_every": 1,
        "eval_n": 16,
        "batch_size": 8,
        "ngf": 8,
        "ndf": 8,
        "nz": 16,
        "precision": "fp32",
        "device": "cpu",
    }
    data["base"]["data"] |= {"cache_dir": str(tmp_path / "cache")}
    data |= {
        "num_samples": 3,
        "resources": {"cpu": 1},
        "scheduler": {"kind": "fifo"},
        "search": {"kind": "random", "seed": 0},
        "space": {"lr_g": {"loguniform": [1e-4, 3e-3]}},
        **fields,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_best_alias_generate_report_and_select_follow_the_selection(
    tmp_path, ray_instance, monkeypatch, capsys
):
    from fetalgan.cli import main
    from fetalgan.sweep import run_sweep
    from fetalgan.tracking import best_run, download_checkpoint, names
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path}/mlruns.db"
    summary = run_sweep(tiny_sweep(tmp_path, "chosen"), storage=tmp_path / "rr", tracking_uri=store)
    printed = capsys.readouterr().out
    selection = summary["selection"]
    winner = selection["winner"]
    assert summary["num_errors"] == 0 and len(selection["candidates"]) == 4  # 2 trials x 2
    assert summary["best"]["run_id"] == winner["run_id"]
    assert f"test lbpv_l1 {selection['test']['value']:.4g}" in printed
    assert "selection lbpv_l1" in printed and "in-sweep lbpv_l1" in printed

    client = MlflowClient(store)
    parent = client.get_run(summary["parent_run_id"])
    assert parent.data.tags[names.SELECTED_RUN_TAG] == winner["run_id"]
    assert parent.data.tags[names.SELECTED_EPOCH_TAG] == str(winner["epoch"])
    assert parent.data.metrics["select/lbpv_l1"] == pytest.approx(winner["score"])
    assert parent.data.metrics["test/lbpv_l1"] == pytest.approx(selection["test"]["value"])
    # the real sets as MLflow dataset inputs: the parent's selection and test references,
    # each trial's training set and eval_reference (through Tune and the write queue)
    contexts = sorted(i.tags[0].value for i in parent.inputs.dataset_inputs)
    assert contexts == ["selection", "test"]
    for c in selection["candidates"]:
        inputs = client.get_run(c["run_id"]).inputs.dataset_inputs
        assert sorted(i.tags[0].value for i in inputs) == ["evaluation", "training"]
    for c in selection["candidates"]:
        history = client.get_metric_history(c["run_id"], "rescore_lbpv_l1")
        assert (c["epoch"], pytest.approx(c["score"])) in [(m.step, m.value) for m in history]
        files = [f.path for f in client.list_artifacts(c["run_id"], names.CANDIDATES_DIR)]
        assert len(files) == 1  # per_trial 2: best.pt and one more per trial

    best = best_run("chosen", tracking_uri=store)
    assert best["checkpoint_uri"] == f"runs:/{winner['run_id']}/{winner['artifact']}"
    assert best["test"]["value"] == pytest.approx(selection["test"]["value"])
    selected = download_checkpoint(best["checkpoint_uri"], tmp_path / "sel", tracking_uri=store)
    registered = download_checkpoint("models:/chosen@best", tmp_path / "reg", tracking_uri=store)
    assert selected.read_bytes() == registered.read_bytes()
    version = client.get_model_version_by_alias("chosen", "best")
    assert f"Test lbpv_l1 = {selection['test']['value']:.4g}" in version.description

    assert main(["generate", "--best", "chosen", "-n", "4", "--out", "via_best",
                 "--tracking-uri", store]) == 0  # fmt: skip
    assert main(["generate", "--checkpoint", str(selected), "-n", "4", "--out", "direct"]) == 0
    for name in ("img_00000.png", "img_00003.png"):
        assert (tmp_path / "via_best" / name).read_bytes() == (
            tmp_path / "direct" / name
        ).read_bytes()

    capsys.readouterr()
    assert main(["best", "chosen", "--tracking-uri", store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"epoch {winner['epoch']}: chosen by the sweep's final selection" in lines[0]
    assert lines[1].split()[:3] == ["in-sweep", "lbpv_l1", f"{winner['in_sweep']:.4g}"]
    assert lines[2].split()[:3] == ["selection", "lbpv_l1", f"{winner['score']:.4g}"]
    assert lines[3].split()[:3] == ["test", "lbpv_l1", f"{selection['test']['value']:.4g}"]
    assert "report this one" in lines[3] and "not for reporting" in lines[1]

    assert main(["report", "chosen", "--out", "rep", "--tracking-uri", store]) == 0
    html = (tmp_path / "rep" / "report.html").read_text()
    assert f"({winner['run_id']}): chosen by the final selection, epoch {winner['epoch']}" in html
    assert 'id="selection-table"' in html and html.count("<tr", html.index("selection-table")) >= 5

    # `fetalgan select` again with top_k 1: only the top in-sweep trial's candidates compete.
    capsys.readouterr()
    assert main(["select", "chosen", "--set", "select.top_k=1", "--tracking-uri", store]) == 0
    assert "registered model: models:/chosen@best (version 2)" in capsys.readouterr().out
    top = min(
        selection["candidates"],
        key=lambda c: c["in_sweep"] if c["artifact"].endswith("best.pt") else math.inf,
    )
    moved = best_run("chosen", tracking_uri=store)
    assert moved["run_id"] == top["run_id"] and moved["selection"]["candidates"] == 2
    assert str(client.get_model_version_by_alias("chosen", "best").version) == "2"


def test_rank_by_window_reaches_tune_and_mlflow(tmp_path, ray_instance):
    """rank_by: window: each evaluation reports window_<metric>, the geometric mean of the
    trial's last rank_window values, and ASHA ranks by it (its rungs read that key)."""
    from fetalgan.sweep import run_sweep
    from fetalgan.sweep.space import tune_metric
    from mlflow import MlflowClient

    path = tiny_sweep(
        tmp_path,
        "windowed",
        rank_by="window",
        rank_window=2,
        num_samples=2,
        scheduler={"kind": "asha", "grace_period": 1, "max_t": 3, "reduction_factor": 2},
        select=None,
    )
    cfg = load_sweep(path)
    assert tune_metric(cfg) == "window_lbpv_l1"
    store = f"sqlite:///{tmp_path}/mlruns.db"
    summary = run_sweep(path, storage=tmp_path / "rr", tracking_uri=store)
    assert summary["num_errors"] == 0
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("windowed").experiment_id],
                              filter_string="tags.`fetalgan.role` = 'trial'")  # fmt: skip
    assert len(runs) == 2
    for run in runs:
        values = [
            m.value
            for m in sorted(
                client.get_metric_history(run.info.run_id, "lbpv_l1"), key=lambda m: m.step
            )
        ]
        windowed = sorted(
            client.get_metric_history(run.info.run_id, "window_lbpv_l1"), key=lambda m: m.step
        )
        assert [m.value for m in windowed] == pytest.approx(
            [window_value(values[: i + 1], 2) for i in range(len(values))]
        )


@pytest.mark.parametrize(("metrics", "best_metric"), [(["lbpv"], "lbpv_l1"), ([], None)])
def test_train_on_a_sweep_file_without_metric_uses_the_default_objective(
    tmp_path, metrics, best_metric
):
    """The README's promise: the lowest FID, else KID, else LBPv; no best.pt when nothing is
    evaluated (a sweep-shaped file without `metric` used to demand FID)."""
    from fetalgan.checkpoint import load_checkpoint
    from fetalgan.cli import main

    base = {
        "resolution": 32,
        "data": {"kind": "phantom", "size": 16, "phantom_n": 32, "cache_dir": str(tmp_path)},
        "epochs": 2,
        "eval_every": 1,
        "eval_n": 8,
        "eval_metrics": metrics,
        "batch_size": 8,
        "ngf": 8,
        "ndf": 8,
        "nz": 16,
        "device": "cpu",
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "bare", "base": base}))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    if best_metric is None:
        assert not best.exists()
    else:
        assert load_checkpoint(best)["objective"] == best_metric
