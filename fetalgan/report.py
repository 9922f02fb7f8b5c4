"""``fetalgan report EXPERIMENT``: one sweep's results as a self-contained HTML page.

From the MLflow store (through :mod:`fetalgan.tracking`, the one module that speaks MLflow):

- the trials table (status, the hyperparameters that vary, metrics at the last evaluation, the
  best value of the sweep metric and its epoch, the number of fake images behind each FID),
  and every evaluation's metrics per trial (also as ``trials.csv`` and ``evaluations.csv``);
- for a grid over data size (e.g. ``sweeps/paper_grid.yaml``): tables of FID / KID / LBPv by
  data size x epochs, as in the fetal head DCGAN study (cells are means when several trials
  fall in one cell, with the count shown);
- ``curves.png``: FID and KID against epoch for every trial on one plot, with ASHA stops (and
  failed or killed trials) marked at their last evaluation;
- ``hyperparams.png``: the sweep metric at each trial's last evaluation against every
  hyperparameter that varies;
- the best trial's samples (``best_samples.png``, the grid logged at its best evaluation)
  beside real training images (``real_samples.png``, loaded with the trial's own data
  config; the report says so when the data is not on this machine);
- the environment of the runs (git sha, host, Slurm job, container image, package versions)
  and the nodes that ran the trials, with how many each.

Best is :class:`fetalgan.evaluation.Objective` (the sweep's metric and mode) applied to each
trial's best value over its evaluations (:func:`trial_best`), as ``fetalgan best`` ranks them.
Params are read back by their TrainConfig type (:func:`fetalgan.config.param_value`); tag and
artefact names come from :mod:`fetalgan.tracking.names`; the figures are drawn by
:mod:`fetalgan.figures` and the page is ``fetalgan/templates/report.html``.

Images are embedded as base64 PNG data URIs and the page loads nothing else, so it opens
offline; every text is HTML-escaped (Jinja autoescaping). The HTML and the figures are written
to ``--out`` and logged back to the sweep's parent run under ``report/``.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from fetalgan import figures
from fetalgan.config import param_value
from fetalgan.evaluation import Objective, is_number
from fetalgan.metrics.image import LBPV_KEYS
from fetalgan.tracking import names

# Metrics in the order a reader looks for them; others follow alphabetically.
METRIC_ORDER = (
    "fid",
    "kid_mean",
    "kid_std",
    "mi_normalised",
    "mi_bits",
    "psnr",
    "ssim",
    *LBPV_KEYS,
    "loss_d",
    "loss_g",
)
HIDDEN_METRICS = (
    "eval_seconds", "train_seconds", "eval_fraction", "feature_dim", "n_real", "n_fake", "epoch",
)  # fmt: skip
GRID_METRICS = (
    ("fid", "FID"),
    ("kid_mean", "KID"),
    ("mi_normalised", "MI (normalised)"),
    ("psnr", "PSNR (dB)"),
    ("lbpv_l1", "LBPv L1 distance"),
)
CURVE_METRICS = (("fid", "FID"), ("kid_mean", "KID (mean over subsets)"))
# Tags that describe where and with what a run ran (the rest are bookkeeping): the environment
# tags tracking writes on every run, and the FID weights and real reference set behind the
# metrics. Which node ran each trial (names.WORKER_HOST_TAG / WORKER_IP_TAG) has its own table.
ENV_TAGS = (
    "git_sha",
    names.HOST_TAG,
    "slurm_job_id",
    "container_image",
    "container_image_sha256",
    names.WEIGHTS_TAG,
    names.REFERENCE_TAG,
    names.REFERENCE_N_TAG,
    names.REFERENCE_KEY_TAG,
)
UNKNOWN_HOST = "not recorded"  # a trial that never reported an evaluation from a worker


# --------------------------------------------------------------------------------------------
# Reading the sweep
# --------------------------------------------------------------------------------------------


def sweep_objective(sweep: dict) -> Objective:
    """What best means for this sweep (its metric and mode, stored on the experiment)."""
    return Objective(sweep["metric"], sweep["mode"])


def param(trial: dict, key: str) -> Any:
    """``trial``'s value of training key ``key`` by its TrainConfig type; None when not logged."""
    text = trial["params"].get(key)
    return None if text is None else param_value(key, text)


def varying_params(trials: list[dict]) -> list[str]:
    """Param keys whose values differ between trials (sorted; data.size and epochs first)."""
    values: dict[str, set[str]] = defaultdict(set)
    for trial in trials:
        for key, value in trial["params"].items():
            values[key].add(value)
    keys = [k for k, v in values.items() if len(v) > 1 or any(k not in t["params"] for t in trials)]
    first = [k for k in ("data.size", "epochs") if k in keys]
    return first + sorted(k for k in keys if k not in first)


def trial_state(trial: dict) -> str:
    """completed | stopped | failed | running (the keys of :data:`figures.END_MARKERS`)."""
    if trial["status"] in ("FAILED", "KILLED"):
        return "failed"
    if trial["status"] == "RUNNING" or trial["status"] == "SCHEDULED":
        return "running"
    stopped = names.tag(trial["tags"], names.STOPPED_EARLY_TAG) == "true"
    return "stopped" if stopped else "completed"


def _series(trial: dict, key: str) -> list[tuple[int, float]]:
    return [(int(s), v) for s, v in trial.get("history", {}).get(key, [])]


def _last(trial: dict, key: str) -> tuple[int, float] | None:
    points = _series(trial, key)
    return points[-1] if points else None


def trial_best(trial: dict, objective: Objective) -> tuple[int, float] | None:
    """(epoch, value) of ``trial``'s best value of the objective's metric; None if it has none.

    The value is the trial's last logged ``best_<metric>`` (``objective.best_key``, the
    trainer's running best) and the epoch the first evaluation at which that running best was
    reached; for a trial without ``best_<metric>`` (logged before the trainer wrote it), the
    best over the metric's history (the first such evaluation on ties).
    """
    running = [p for p in _series(trial, objective.best_key) if is_number(p[1])]
    if running:
        value = running[-1][1]
        return next(p for p in running if p[1] == value)
    return objective.pick(_series(trial, objective.metric), key=lambda p: p[1])


def ordered_metrics(trials: list[dict]) -> list[str]:
    """The metric keys the trials logged, in reading order, without bookkeeping: counts,
    timings, and ``best_<metric>`` (a running best, shown as the trials table's best column)."""
    keys = {k for t in trials for k in t.get("history", {}) if k not in HIDDEN_METRICS}
    keys -= {Objective(k).best_key for k in keys}
    keys = {k for k in keys if not k.startswith(names.SYSTEM_PREFIX)}  # CPU/GPU use, not quality
    return [k for k in METRIC_ORDER if k in keys] + sorted(keys - set(METRIC_ORDER))


def best_trial(sweep: dict) -> dict | None:
    """The completed or ASHA-stopped trial with the best :func:`trial_best` value; None when no
    such trial has the metric."""
    # Computed rather than read from the parent's best_run_id tag: the tag only exists once the
    # sweep has finished, and is written by the same rule (write_report notes any disagreement).
    goal = sweep_objective(sweep)
    finished = [t for t in sweep["trials"] if trial_state(t) in ("completed", "stopped")]
    return goal.pick(finished, key=lambda t: (trial_best(t, goal) or (None, None))[1])


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    """A table cell: 4 significant digits for floats, '—' for missing."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def trials_table(sweep: dict, varying: list[str], metrics: list[str]) -> dict:
    """Header and rows (raw values) of the per-trial table: FID, KID and LBPv L1 at the last
    evaluation (the evaluations table has every metric), and the trial's best value of the
    sweep metric (:func:`trial_best`) with its epoch."""
    goal = sweep_objective(sweep)
    metric = goal.metric
    shown = [m for m in ("fid", "kid_mean", "kid_std", "lbpv_l1") if m in metrics]
    header = ["trial", "status", *varying, "last epoch", *shown, f"best {metric}", "best epoch",
              "n fake"]  # fmt: skip
    rows = []
    for t in sweep["trials"]:
        last_epoch = max((s for k in t.get("history", {}) for s, _ in _series(t, k)), default=None)
        best = trial_best(t, goal)
        n_fake = _last(t, "n_fake")
        row = [t["run_name"], trial_state(t)]
        row += [param(t, k) for k in varying]
        row += [last_epoch]
        row += [(_last(t, m) or (None, None))[1] for m in shown]
        row += [best[1] if best else None, best[0] if best else None]
        row += [int(n_fake[1]) if n_fake else None]
        rows.append({"run_id": t["run_id"], "cells": row})
    return {"header": header, "rows": rows}


def evaluations_table(sweep: dict, metrics: list[str]) -> dict:
    """Header and rows of every evaluation of every trial (trial, epoch, metrics)."""
    header = ["trial", "epoch", *metrics]
    rows = []
    for t in sweep["trials"]:
        by_step: dict[int, dict[str, float]] = defaultdict(dict)
        for m in metrics:
            for step, value in _series(t, m):
                by_step[step][m] = value
        for step in sorted(by_step):
            rows.append(
                {"run_id": t["run_id"], "cells": [t["run_name"], step]
                 + [by_step[step].get(m) for m in metrics]}
            )  # fmt: skip
    return {"header": header, "rows": rows}


def grid_tables(sweep: dict, varying: list[str], *, epochs: list[int] | None = None) -> list[dict]:
    """Data size x epochs tables (one per metric in GRID_METRICS that the trials logged).

    Rows: ``data.size`` (or the one varying param when data.size does not vary). Columns: the
    ``epochs`` param when it varies (each cell a completed trial's value at its last
    evaluation, as the study trained one model per cell; trials stopped early or failed are
    left out), else the evaluation epochs (values from every trial's history), only those in
    ``epochs`` when given (the sweep's ``checkpoint_epochs``: the study's 300/500/800/1000).
    """
    if "data.size" in varying:
        row_key = "data.size"
    elif len(varying) == 1:
        row_key = varying[0]
    else:
        return []
    by_epochs_param = "epochs" in varying and row_key != "epochs"
    tables = []
    for metric, title in GRID_METRICS:
        cells: dict[tuple, list[float]] = defaultdict(list)
        for t in sweep["trials"]:
            row = param(t, row_key)
            if isinstance(row, list | dict):  # a table key must be hashable: show its text
                row = t["params"][row_key]
            if by_epochs_param:
                if trial_state(t) != "completed":  # its last value is not at `epochs`
                    continue
                last = _last(t, metric)
                if last is not None:
                    cells[(row, param(t, "epochs"))].append(last[1])
            else:
                for step, value in _series(t, metric):
                    if not epochs or step in epochs:
                        cells[(row, step)].append(value)
        if not cells:
            continue
        rows = sorted({k[0] for k in cells}, key=_sort_key)
        cols = sorted({k[1] for k in cells}, key=_sort_key)
        body = []
        for r in rows:
            line = []
            for c in cols:
                values = cells.get((r, c), [])
                mean = sum(values) / len(values) if values else None
                line.append({"value": mean, "n": len(values)})
            body.append({"row": r, "cells": line})
        tables.append(
            {
                "metric": metric,
                "title": title,
                "row_key": row_key,
                "col_key": "epochs" if by_epochs_param else "evaluation epoch",
                "caption": (
                    "each cell: a trial's value after its last epoch; trials stopped early or "
                    "failed are left out"
                    if by_epochs_param
                    else "each cell: the value at that evaluation"
                    + (" (the sweep's checkpoint_epochs)" if epochs else "")
                ),
                "cols": cols,
                "rows": body,
            }
        )
    return tables


# Metrics tested for a difference across data sizes, in the study's order (FID, MI, PSNR, LBPv).
SIGNIFICANCE_METRICS = (
    "fid",
    "kid_mean",
    "mi_normalised",
    "mi_bits",
    "psnr",
    "ssim",
    *LBPV_KEYS,
)
ALPHA = 0.05  # the study's threshold ("did not differ significantly with p > 0.05")


def across_groups(groups: dict[Any, list[float]]) -> dict[str, Any]:
    """Kruskal-Wallis H and one-way ANOVA F across ``groups`` (group -> values), with their
    p-values (``scipy.stats.kruskal``, ``scipy.stats.f_oneway``) and N per group. A test
    that cannot be computed (fewer than two groups, no spread, no degrees of freedom within
    groups) gives NaN for its figures."""
    import warnings

    from scipy import stats

    samples = {g: [v for v in values if is_number(v)] for g, values in groups.items()}
    samples = {g: v for g, v in samples.items() if v}
    out: dict[str, Any] = {
        "n": {g: len(v) for g, v in sorted(samples.items(), key=lambda kv: _sort_key(kv[0]))},
        "h": math.nan, "p_h": math.nan, "f": math.nan, "p_f": math.nan,
    }  # fmt: skip
    if len(samples) < 2:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant or single-value groups: NaN, said above
        try:
            h = stats.kruskal(*samples.values())
            out["h"], out["p_h"] = float(h.statistic), float(h.pvalue)
        except ValueError:  # all values identical
            pass
        if sum(len(v) for v in samples.values()) > len(samples):
            f = stats.f_oneway(*samples.values())
            out["f"], out["p_f"] = float(f.statistic), float(f.pvalue)
    return out


def significance_table(
    sweep: dict, varying: list[str], metrics: list[str], *, epochs: list[int] | None = None
) -> dict | None:
    """Per metric, a difference across ``data.size`` tested with Kruskal-Wallis and one-way
    ANOVA (:func:`across_groups`): one row pooled over the evaluation epochs (each trial's
    value at every evaluation epoch in ``epochs``, all when None, one observation each), then
    one row per evaluation epoch. None when ``data.size`` does not vary."""
    if "data.size" not in varying:
        return None
    header = ["metric", "epochs", "N per data size", "Kruskal-Wallis H", "p (H)",
              "ANOVA F", "p (F)", f"differ at p < {ALPHA}?"]  # fmt: skip
    rows = []
    for metric in [m for m in SIGNIFICANCE_METRICS if m in metrics]:
        by_epoch: dict[int, dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
        for t in sweep["trials"]:
            size = param(t, "data.size")
            for step, value in _series(t, metric):
                if not epochs or step in epochs:
                    by_epoch[step][size].append(value)
        if not by_epoch:
            continue
        pooled: dict[Any, list[float]] = defaultdict(list)
        for groups in by_epoch.values():
            for size, values in groups.items():
                pooled[size] += values
        for label, groups in [("pooled", pooled), *sorted(by_epoch.items())]:
            test = across_groups(groups)
            ps = [p for p in (test["p_h"], test["p_f"]) if not math.isnan(p)]
            verdict = "—" if not ps else ("yes" if min(ps) < ALPHA else "no")
            sizes = ", ".join(f"{g}: {n}" for g, n in test["n"].items())
            rows.append(
                {"run_id": "", "cells": [metric, label, sizes, test["h"], test["p_h"],
                                         test["f"], test["p_f"], verdict]}
            )  # fmt: skip
    return {"header": header, "rows": rows}


def _sort_key(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, int | float) else (1, 0, str(value))


def write_csv(table: dict, path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run_id", *table["header"]])
        for row in table["rows"]:
            writer.writerow([row["run_id"], *("" if v is None else v for v in row["cells"])])
    return path


def environment_table(sweep: dict) -> list[dict]:
    """For each environment tag: its distinct values over the parent and trial runs, with the
    number of runs having each."""
    runs = ([sweep["parent"]] if sweep["parent"] else []) + sweep["trials"]
    out = []
    for key in ENV_TAGS:
        values = (names.tag(r["tags"], key) for r in runs)
        counts = Counter(value for value in values if value is not None)
        if counts:
            out.append({"key": names.short_tag(key), "values": sorted(counts.items())})
    return out


def trial_hosts(sweep: dict) -> list[dict]:
    """The nodes that ran the trials (``fetalgan.worker_host`` and ``fetalgan.worker_ip`` tags,
    set from the node of each trial's latest evaluation) with the number of trials each ran,
    most first; trials without the tags (none evaluated yet) count under ``UNKNOWN_HOST``."""
    counts = Counter(
        (
            names.tag(t["tags"], names.WORKER_HOST_TAG, UNKNOWN_HOST),
            names.tag(t["tags"], names.WORKER_IP_TAG),
        )
        for t in sweep["trials"]
    )
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0][0], item[0][1] or ""))
    return [{"host": host, "ip": fmt(ip), "trials": n} for (host, ip), n in ranked]


# --------------------------------------------------------------------------------------------
# Figures (drawn by fetalgan.figures from the sweep's numbers)
# --------------------------------------------------------------------------------------------


def _run_labels(trials: list[dict]) -> dict[str, str]:
    """run id -> the name a figure shows (the run name; with the run id's start if two trials
    share a name)."""
    names_seen = Counter(t["run_name"] for t in trials)
    return {
        t["run_id"]: t["run_name"] if names_seen[t["run_name"]] == 1
        else f"{t['run_name']} ({t['run_id'][:8]})"
        for t in trials
    }  # fmt: skip


def curves_figure(sweep: dict, path: Path) -> Path | None:
    """FID and KID against epoch, every trial one line (the best trial thick), the last
    evaluation marked by how the trial ended (ASHA stop, failure, completion); None when no
    trial logged either."""
    trials = sweep["trials"]
    labels = _run_labels(trials)
    panels = {
        title: {labels[t["run_id"]]: _series(t, key) for t in trials}
        for key, title in CURVE_METRICS
    }
    best = best_trial(sweep)
    return figures.metric_curves(
        panels,
        path,
        ends={labels[t["run_id"]]: trial_state(t) for t in trials},
        highlight=None if best is None else labels[best["run_id"]],
        title=f"{sweep['experiment']}: learning curves (thick line: best trial)",
    )


def schedules_figure(sweep: dict, path: Path) -> Path | None:
    """PBT/PB2: each trial's hyper-parameters against epoch (``hp/<key>``), one panel per
    key, its exploits marked where the new values start; None when no trial logged any."""
    trials = sweep["trials"]
    keys = sorted({k for t in trials for k in t.get("history", {}) if k.startswith("hp/")})
    if not keys:
        return None
    labels = _run_labels(trials)
    events = {}
    for t in trials:
        text = names.tag(t.get("tags", {}), names.EXPLOITS_TAG)
        events[labels[t["run_id"]]] = [x["epoch"] for x in json.loads(text)] if text else []
    best = best_trial(sweep)
    return figures.metric_curves(
        {k.removeprefix("hp/"): {labels[t["run_id"]]: _series(t, k) for t in trials} for k in keys},
        path,
        highlight=None if best is None else labels[best["run_id"]],
        events=events,
        event_label="exploit: copied a better trial's state, new values from here",
        as_steps=True,
        title=f"{sweep['experiment']}: hyper-parameter schedules (PBT; thick line: best trial)",
    )


def hyperparams_figure(sweep: dict, varying: list[str], path: Path) -> Path | None:
    """The sweep metric at each trial's last evaluation against every varying hyperparameter
    (hollow markers: trials that did not complete all epochs); None when nothing varies or no
    trial has the metric."""
    metric = sweep["metric"]
    points = []
    for t in sweep["trials"]:
        last = _last(t, metric)
        if last is not None and math.isfinite(last[1]):
            points.append((t, last[1]))
    keys = [k for k in varying if any(k in t["params"] for t, _ in points)]
    return figures.metric_vs_hyperparams(
        {k: [param(t, k) for t, _ in points] for k in keys},
        [value for _, value in points],
        path,
        metric=metric,
        completed=[trial_state(t) == "completed" for t, _ in points],
        title=f"{metric} at each trial's last evaluation (hollow red: stopped early or failed)",
    )


# --------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------


def best_samples(
    sweep: dict, trial: dict, out: Path, epoch: int | None = None
) -> tuple[Path | None, int | None, str]:
    """``trial``'s sample grid logged at ``epoch`` (default: its best evaluation,
    :func:`trial_best`), else its latest grid, as ``out/best_samples.png``; returns (path,
    epoch, note), epoch None when the latest grid stands in (its epoch is not known here)."""
    import shutil

    from fetalgan.tracking import download_sample_grid

    uri = sweep["tracking_uri"]
    best = trial_best(trial, sweep_objective(sweep))
    wanted = epoch if epoch is not None else (None if best is None else best[0])
    with tempfile.TemporaryDirectory() as tmp:
        # dst: a path that does not exist yet, whether the download treats it as file or folder
        grid = None
        if wanted is not None:
            grid = download_sample_grid(
                trial["run_id"], wanted, Path(tmp) / "at_best", tracking_uri=uri
            )
        epoch = wanted
        if grid is None:
            epoch = None
            grid = download_sample_grid(
                trial["run_id"], None, Path(tmp) / "latest", tracking_uri=uri
            )
        if grid is None:
            return None, None, f"trial {trial['run_name']} has no sample grids logged"
        target = out / "best_samples.png"
        shutil.copyfile(grid, target)
    if epoch is not None:
        note = ""
    elif wanted is not None:
        note = f"no grid logged at the best epoch ({wanted}); showing the latest grid"
    else:
        note = f"no {sweep['metric']} logged; showing the latest grid"
    return target, epoch, note


def real_samples(sweep: dict, trial: dict, out: Path, n: int = 64) -> tuple[Path | None, str]:
    """``n`` training images of ``trial``'s data config as ``out/real_samples.png``; (None,
    reason) when the data cannot be loaded here."""
    import yaml

    from fetalgan.config import ConfigError, train_config_from_dict
    from fetalgan.data import load_training_images
    from fetalgan.images import make_grid, write_png
    from fetalgan.tracking import download_run_artifact

    with tempfile.TemporaryDirectory() as tmp:
        local = download_run_artifact(
            trial["run_id"], names.CONFIG_ARTIFACT, tmp, tracking_uri=sweep["tracking_uri"]
        )
        if local is None:
            return None, f"trial {trial['run_name']} has no {names.CONFIG_ARTIFACT} artefact"
        try:
            cfg = train_config_from_dict(yaml.safe_load(local.read_text()))
        except ConfigError as err:
            return None, (
                f"trial {trial['run_name']}: its {names.CONFIG_ARTIFACT} no longer loads ({err})"
            )
    try:
        images = load_training_images(cfg.data, cfg.resolution, seed=cfg.seed, progress=False)
    except (FileNotFoundError, ValueError, OSError) as err:
        return None, f"real images not available on this machine: {err}"
    target = out / "real_samples.png"
    write_png(make_grid(images.images[:n], nrow=8), target)
    where = cfg.data.kind if cfg.data.kind == "phantom" else f"{cfg.data.kind} {cfg.data.root}"
    return target, f"{min(n, len(images.images))} training images ({where}, {cfg.resolution} px)"


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html(context: dict) -> str:
    """The report page (``fetalgan/templates/report.html``, read from the installed package)
    from ``context`` (see :func:`write_report`), every value escaped."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fetalgan", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals["fmt"] = fmt
    return env.get_template("report.html").render(**context)


def _download_text(run_id: str, path: str, tracking_uri: str) -> str | None:
    from fetalgan.tracking import download_run_artifact

    with tempfile.TemporaryDirectory() as tmp:
        local = download_run_artifact(run_id, path, tmp, tracking_uri=tracking_uri)
        return None if local is None else local.read_text()


def write_report(
    experiment: str,
    *,
    out: str | Path | None = None,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
    log_to_mlflow: bool = True,
) -> dict[str, Any]:
    """Write ``report.html``, the figures (PNG) and ``trials.csv``/``evaluations.csv`` for one
    sweep of ``experiment`` (``parent_run_id``, default the newest) into ``out`` (default
    ``reports/<experiment>``) and log them to the sweep's parent run under ``report/``.

    Returns ``{html, figures, csv, logged_to, notes}``.
    """
    from fetalgan.tracking import log_run_artifacts, sweep_runs

    sweep = sweep_runs(experiment, tracking_uri=tracking_uri, parent_run_id=parent_run_id)
    out = Path(out) if out is not None else Path("reports") / experiment
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    if not sweep["trials"]:
        notes.append("this sweep has no trial runs yet")
    if sweep["parent"] is None:
        notes.append("no sweep (parent) run found: showing every trial run of the experiment")

    varying = varying_params(sweep["trials"])
    metrics = ordered_metrics(sweep["trials"])
    trials = trials_table(sweep, varying, metrics)
    evaluations = evaluations_table(sweep, metrics)
    parent = sweep["parent"]
    parent_env = sweep_yaml = None
    if parent is not None:
        uri = sweep["tracking_uri"]
        parent_env = _download_text(parent["run_id"], names.ENVIRONMENT_ARTIFACT, uri)
        sweep_yaml = _download_text(parent["run_id"], names.SWEEP_ARTIFACT, uri)
    grids = grid_tables(sweep, varying, epochs=_checkpoint_epochs(sweep_yaml))
    significance = significance_table(
        sweep, varying, metrics, epochs=_checkpoint_epochs(sweep_yaml)
    )
    csv_files = [
        write_csv(trials, out / "trials.csv"),
        write_csv(evaluations, out / "evaluations.csv"),
    ]
    if significance is not None:
        csv_files.append(write_csv(significance, out / "significance.csv"))

    pngs: dict[str, Path] = {}
    curves = curves_figure(sweep, out / "curves.png")
    if curves:
        pngs["curves"] = curves
    schedules = schedules_figure(sweep, out / "schedules.png")
    if schedules:
        pngs["schedules"] = schedules
    hyper = hyperparams_figure(sweep, varying, out / "hyperparams.png")
    if hyper:
        pngs["hyperparams"] = hyper
    elif sweep["trials"]:
        notes.append("no hyperparameter varies between the trials: no metric-vs-parameter plot")

    best = best_trial(sweep)
    best_value = None if best is None else trial_best(best, sweep_objective(sweep))[1]
    selection = selection_table(sweep, parent)
    selected_epoch = None
    if selection is not None:  # the final selection's winner is the sweep's best
        winner = selection["winner"]
        best = next((t for t in sweep["trials"] if t["run_id"] == winner["run_id"]), best)
        best_value, selected_epoch = winner["in_sweep"], winner["epoch"]
    tagged = names.tag((parent or {}).get("tags", {}), names.BEST_RUN_TAG)
    if best is not None and tagged is not None and tagged != best["run_id"]:
        notes.append(
            f"the sweep run's {names.BEST_RUN_TAG} tag names run {tagged}, but by each trial's "
            f"best {sweep['metric']} the best is {best['run_name']} ({best['run_id']}); "
            "the report shows the latter"
        )
    best_epoch, samples_note, real_note = None, "no finished trial with the metric", ""
    if best is not None:
        grid, best_epoch, samples_note = best_samples(sweep, best, out, selected_epoch)
        if grid:
            pngs["best_samples"] = grid
        real, real_note = real_samples(sweep, best, out)
        if real:
            pngs["real_samples"] = real
    else:
        real_note = "no best trial: no training data to show"

    # both grids at one scale, so a synthetic image and a real one look the same size
    sample_widths = {k: _png_width(pngs[k]) for k in ("best_samples", "real_samples") if k in pngs}
    scale = min(3.0, 560 / max(sample_widths.values())) if sample_widths else 1.0
    display_widths = {k: round(w * scale) for k, w in sample_widths.items()}

    states = Counter(trial_state(t) for t in sweep["trials"])
    context = {
        "sweep": sweep,
        "states": sorted(states.items()),
        "best": best,
        "best_value": best_value,
        "best_epoch": best_epoch,
        "selection": selection,
        "samples_note": samples_note,
        "real_note": real_note,
        "started": _when(parent["start_time"]) if parent else "",
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "notes": notes,
        "trials_table": trials,
        "evaluations_table": evaluations,
        "grids": grids,
        "significance": significance,
        "alpha": ALPHA,
        "display_widths": display_widths,
        "figures": {
            k: data_uri(pngs[k]) if k in pngs else None
            for k in ("curves", "schedules", "hyperparams", "best_samples", "real_samples")
        },
        "environment": environment_table(sweep),
        "trial_hosts": trial_hosts(sweep),
        "parent_env": parent_env,
        "sweep_yaml": sweep_yaml,
    }
    html_path = out / "report.html"
    html_path.write_text(render_html(context), encoding="utf-8")

    logged_to = None
    if log_to_mlflow and parent is not None:
        log_run_artifacts(
            parent["run_id"],
            [html_path, *pngs.values(), *csv_files],
            "report",
            tracking_uri=sweep["tracking_uri"],
        )
        logged_to = parent["run_id"]
    return {
        "html": str(html_path),
        "figures": {k: str(p) for k, p in pngs.items()},
        "csv": [str(p) for p in csv_files],
        "logged_to": logged_to,
        "notes": notes,
    }


def selection_table(sweep: dict, parent: dict | None) -> dict | None:
    """The sweep's final selection (its ``selection.json``) with its candidates as table rows
    (trial, epoch, weights, in-sweep value, selection score mean and spread, winner first);
    None when the sweep ran none."""
    import json

    if parent is None or names.SELECTED_RUN_TAG not in parent.get("tags", {}):
        return None
    text = _download_text(parent["run_id"], names.SELECTION_ARTIFACT, sweep["tracking_uri"])
    if not text:
        return None
    record = json.loads(text)
    record["rows"] = [
        {
            "run_id": c["run_id"],
            "cells": [c["run_name"], c["epoch"], c["artifact"].rsplit("/", 1)[-1],
                      c["in_sweep"], c["score"], c["spread"]],
        }
        for c in record["candidates"]
    ]  # fmt: skip
    return record


def _checkpoint_epochs(sweep_yaml: str | None) -> list[int] | None:
    """The sweep's ``checkpoint_epochs`` (the evaluations it keeps checkpoints of), if any."""
    import yaml

    if not sweep_yaml:
        return None
    try:
        config = yaml.safe_load(sweep_yaml)
    except yaml.YAMLError:
        return None
    epochs = config.get("checkpoint_epochs") if isinstance(config, dict) else None
    if isinstance(epochs, list) and epochs and all(isinstance(e, int) for e in epochs):
        return sorted(epochs)
    return None


def _png_width(path: Path) -> int:
    from fetalgan.images import read_grey

    return int(read_grey(path).shape[1])


def _when(ms: int | None) -> str:
    return "" if not ms else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))
