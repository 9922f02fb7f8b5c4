"""``fetalgan report EXPERIMENT``: one sweep's results as a self-contained HTML page.

From the MLflow store (through :mod:`fetalgan.tracking`, the one module that speaks MLflow):

- the trials table (status, the hyperparameters that vary, metrics at the last evaluation, the
  best FID and its epoch, the number of fake images behind each FID), and every evaluation's
  metrics per trial (also as ``trials.csv`` and ``evaluations.csv``);
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
- the environment of the runs (git sha, host, Slurm job, container image, package versions).

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

from fetalgan.metrics.image import LBPV_KEYS

# Metrics in the order a reader looks for them; others follow alphabetically.
METRIC_ORDER = (
    "fid",
    "kid_mean",
    "kid_std",
    *LBPV_KEYS,
    "loss_d",
    "loss_g",
)
HIDDEN_METRICS = ("eval_seconds", "feature_dim", "n_real", "n_fake", "epoch")
GRID_METRICS = (("fid", "FID"), ("kid_mean", "KID"), ("lbpv_l1", "LBPv L1 distance"))
# Tags that describe where and with what a run ran (the rest are bookkeeping).
ENV_TAGS = (
    "git_sha",
    "host",
    "slurm_job_id",
    "container_image",
    "container_image_sha256",
    "trial_hostname",
    "trial_node_ip",
    "weights_sha256",
)
END_MARKERS = {  # how a trial's last evaluation is drawn on the curves
    "completed": ("o", "completed"),
    "stopped": ("X", "stopped early (ASHA)"),
    "failed": ("s", "failed / killed"),
    "running": (">", "still running"),
}


# --------------------------------------------------------------------------------------------
# Reading the sweep
# --------------------------------------------------------------------------------------------


def parse_param(text: str) -> Any:
    """An MLflow param string back to a value: int, float, bool, None, JSON list, or text."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    return text


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
    """completed | stopped | failed | running."""
    if trial["status"] in ("FAILED", "KILLED"):
        return "failed"
    if trial["status"] == "RUNNING" or trial["status"] == "SCHEDULED":
        return "running"
    return "stopped" if trial["tags"].get("stopped_early") == "true" else "completed"


def _series(trial: dict, key: str) -> list[tuple[int, float]]:
    return [(int(s), v) for s, v in trial.get("history", {}).get(key, [])]


def _last(trial: dict, key: str) -> tuple[int, float] | None:
    points = _series(trial, key)
    return points[-1] if points else None


def _best(trial: dict, key: str, mode: str) -> tuple[int, float] | None:
    points = [p for p in _series(trial, key) if math.isfinite(p[1])]
    if not points:
        return None
    return (min if mode == "min" else max)(points, key=lambda p: p[1])


def ordered_metrics(trials: list[dict]) -> list[str]:
    keys = {k for t in trials for k in t.get("history", {}) if k not in HIDDEN_METRICS}
    return [k for k in METRIC_ORDER if k in keys] + sorted(keys - set(METRIC_ORDER))


def best_trial(sweep: dict) -> dict | None:
    """The parent's ``best_run_id`` trial; else the best finished trial by the sweep metric at
    its last evaluation (as ``fetalgan best`` ranks them)."""
    by_id = {t["run_id"]: t for t in sweep["trials"]}
    tagged = (sweep["parent"] or {}).get("tags", {}).get("best_run_id")
    if tagged in by_id:
        return by_id[tagged]
    metric, mode = sweep["metric"], sweep["mode"]
    scored = [
        (t["metrics"][metric], t)
        for t in sweep["trials"]
        if t["status"] == "FINISHED" and math.isfinite(t["metrics"].get(metric, math.nan))
    ]
    if not scored:
        return None
    pick = min if mode == "min" else max
    return pick(scored, key=lambda item: item[0])[1]


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
    evaluation (the evaluations table has every metric)."""
    metric, mode = sweep["metric"], sweep["mode"]
    shown = [m for m in ("fid", "kid_mean", "kid_std", "lbpv_l1") if m in metrics]
    header = ["trial", "status", *varying, "last epoch", *shown, f"best {metric}", "best epoch",
              "n fake"]  # fmt: skip
    rows = []
    for t in sweep["trials"]:
        last_epoch = max((s for k in t.get("history", {}) for s, _ in _series(t, k)), default=None)
        best = _best(t, metric, mode)
        n_fake = _last(t, "n_fake")
        row = [t["run_name"], trial_state(t)]
        row += [parse_param(t["params"][k]) if k in t["params"] else None for k in varying]
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
            row = parse_param(t["params"].get(row_key, "None"))
            if by_epochs_param:
                if trial_state(t) != "completed":  # its last value is not at `epochs`
                    continue
                last = _last(t, metric)
                if last is not None:
                    cells[(row, parse_param(t["params"]["epochs"]))].append(last[1])
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
        counts = Counter(r["tags"][key] for r in runs if key in r["tags"])
        if counts:
            out.append({"key": key, "values": sorted(counts.items())})
    return out


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _use_log(values: list[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and len(values) > 1 and max(positive) / min(positive) > 30


def curves_figure(sweep: dict, path: Path) -> Path | None:
    """FID and KID against epoch, every trial one line, the last evaluation marked by how the
    trial ended (ASHA stop, failure, completion); one legend below both panels."""
    keys = [k for k in ("fid", "kid_mean") if any(_series(t, k) for t in sweep["trials"])]
    if not keys:
        return None
    plt = _pyplot()
    trials = sweep["trials"]
    named = len(trials) <= 15  # more trials: no per-trial legend, colours only
    states = [s for s in END_MARKERS if any(trial_state(t) == s for t in trials)]
    legend_rows = math.ceil(((len(trials) if named else 0) + len(states)) / 3)
    height = 4.2 + 0.2 * legend_rows
    fig, axes = plt.subplots(1, len(keys), figsize=(6.2 * len(keys), height), squeeze=False)
    colours = plt.get_cmap("tab20" if len(trials) > 10 else "tab10")
    best = best_trial(sweep)
    handles = {}
    for ax, key in zip(axes[0], keys, strict=True):
        all_values = []
        for k, t in enumerate(trials):
            points = [p for p in _series(t, key) if math.isfinite(p[1])]
            if not points:
                continue
            steps, values = zip(*points, strict=True)
            all_values += values
            is_best = best is not None and t["run_id"] == best["run_id"]
            colour = colours(k % colours.N)
            (line,) = ax.plot(steps, values, color=colour, lw=2.4 if is_best else 1.2,
                              zorder=3 if is_best else 2)  # fmt: skip
            handles.setdefault(t["run_name"], line)
            marker, _ = END_MARKERS[trial_state(t)]
            ax.scatter([steps[-1]], [values[-1]], marker=marker, s=70 if marker == "X" else 36,
                       color="black" if marker == "X" else colour, zorder=4)  # fmt: skip
        if _use_log(all_values):
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel({"fid": "FID", "kid_mean": "KID (mean over subsets)"}[key])
        ax.grid(alpha=0.3)
    entries = dict(handles) if named else {}
    for state in states:
        marker, text = END_MARKERS[state]
        entries[text] = plt.Line2D([], [], ls="", marker=marker, color="black")
    fig.legend(entries.values(), entries.keys(), loc="lower center", ncol=3, fontsize=7,
               frameon=False)  # fmt: skip
    fig.suptitle(f"{sweep['experiment']}: learning curves (thick line: best trial)", fontsize=10)
    fig.tight_layout(rect=(0, (0.2 * legend_rows + 0.15) / height, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def hyperparams_figure(sweep: dict, varying: list[str], path: Path) -> Path | None:
    """The sweep metric at each trial's last evaluation against every varying hyperparameter
    (hollow markers: trials that did not complete all epochs)."""
    metric = sweep["metric"]
    points = []
    for t in sweep["trials"]:
        last = _last(t, metric)
        if last is not None and math.isfinite(last[1]):
            points.append((t, last[1]))
    params = [k for k in varying if any(k in t["params"] for t, _ in points)][:8]
    if not params or not points:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    cols = min(4, len(params))
    rows = math.ceil(len(params) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel()[len(params) :]:
        ax.axis("off")
    for ax, key in zip(axes.ravel(), params, strict=False):
        xs = [parse_param(t["params"].get(key, "None")) for t, _ in points]
        ys = [v for _, v in points]
        numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
        if not numeric:
            labels = sorted({str(x) for x in xs})
            xs = [labels.index(str(x)) for x in xs]
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
        elif _use_log([float(x) for x in xs]):
            ax.set_xscale("log")
        else:  # few ticks, in scientific notation for small learning rates
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        done = [trial_state(t) == "completed" for t, _ in points]
        ax.scatter([x for x, d in zip(xs, done, strict=True) if d],
                   [y for y, d in zip(ys, done, strict=True) if d], color="tab:blue", s=28)  # fmt: skip
        ax.scatter([x for x, d in zip(xs, done, strict=True) if not d],
                   [y for y, d in zip(ys, done, strict=True) if not d], facecolors="none",
                   edgecolors="tab:red", s=28)  # fmt: skip
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"{metric} at each trial's last evaluation (hollow red: stopped early or failed)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------


def best_samples(sweep: dict, trial: dict, out: Path) -> tuple[Path | None, int | None, str]:
    """The best trial's sample grid at its best evaluation (else its latest grid) as
    ``out/best_samples.png``; returns (path, epoch, note)."""
    import shutil

    from fetalgan.tracking import download_run_artifact, list_run_artifacts

    uri = sweep["tracking_uri"]
    names = sorted(
        Path(p).name for p in list_run_artifacts(trial["run_id"], "samples", tracking_uri=uri)
    )
    if not names:
        return None, None, f"trial {trial['run_name']} has no sample grids logged"
    best = _best(trial, sweep["metric"], sweep["mode"])
    wanted = f"epoch_{best[0]:04d}.png" if best else None
    name = wanted if wanted in names else names[-1]
    with tempfile.TemporaryDirectory() as tmp:
        local = download_run_artifact(trial["run_id"], f"samples/{name}", tmp, tracking_uri=uri)
        target = out / "best_samples.png"
        shutil.copyfile(local, target)
    epoch = int(name[len("epoch_") : -len(".png")])
    note = "" if name == wanted else f"no grid at the best epoch; showing epoch {epoch}"
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
            trial["run_id"], "config.yaml", tmp, tracking_uri=sweep["tracking_uri"]
        )
        if local is None:
            return None, f"trial {trial['run_name']} has no config.yaml artefact"
        try:
            cfg = train_config_from_dict(yaml.safe_load(local.read_text()))
        except ConfigError as err:
            return None, f"trial {trial['run_name']}: its config.yaml no longer loads ({err})"
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

TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>fetalgan report · {{ sweep.experiment }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 78rem; padding: 1rem 2rem;
  color: #1f2937; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; } h2 { font-size: 1.15rem; margin-top: 2rem;
  border-bottom: 1px solid #e5e7eb; padding-bottom: 0.2rem; }
table { border-collapse: collapse; font-size: 0.82rem; margin: 0.5rem 0; }
th, td { border: 1px solid #e5e7eb; padding: 0.2rem 0.5rem; text-align: right; }
th { background: #f3f4f6; } td.text, th.text { text-align: left; }
tr.best td { background: #ecfdf5; font-weight: 600; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: 0.15rem 1rem; }
dl.summary dt { color: #6b7280; } dl.summary dd { margin: 0; }
img.figure { max-width: 100%; } .note { color: #92400e; background: #fffbeb; padding: 0.3rem 0.6rem;
  border-left: 3px solid #f59e0b; }
.samples { display: flex; gap: 2rem; flex-wrap: wrap; } .samples figure { margin: 0; }
.samples img { image-rendering: pixelated; border: 1px solid #d1d5db; }
.state-stopped { color: #b45309; } .state-failed { color: #b91c1c; }
pre { background: #f9fafb; padding: 0.6rem; font-size: 0.8rem; overflow-x: auto; }
small { color: #6b7280; } .wide { overflow-x: auto; }
</style>
</head>
<body>
<h1>Sweep report: {{ sweep.experiment }}</h1>
<dl class="summary" id="summary">
  <dt>tracking store</dt><dd>{{ sweep.tracking_uri }}</dd>
  <dt>experiment id</dt><dd>{{ sweep.experiment_id }}</dd>
  {% if sweep.parent %}<dt>sweep run</dt><dd>{{ sweep.parent.run_name }} ({{ sweep.parent.run_id }}), {{ sweep.parent.status }}, started {{ started }}</dd>{% endif %}
  {% if sweep.parents|length > 1 %}<dt>other sweep runs</dt><dd>{{ sweep.parents[1:]|join(', ') }} (choose one with --parent)</dd>{% endif %}
  <dt>metric</dt><dd>{{ sweep.metric }} ({{ sweep.mode }})</dd>
  <dt>trials</dt><dd id="trial-counts">{{ sweep.trials|length }}{% for state, count in states %}; {{ count }} {{ state }}{% endfor %}</dd>
  {% if best %}<dt>best trial</dt><dd id="best-trial">{{ best.run_name }} ({{ best.run_id }}): {{ sweep.metric }} = {{ fmt(best_value) }}</dd>{% endif %}
  <dt>report written</dt><dd>{{ generated }}</dd>
</dl>
{% for note in notes %}<p class="note">{{ note }}</p>{% endfor %}

<h2>Trials</h2>
<p><small>Metrics at each trial's last evaluation; best {{ sweep.metric }} over all its evaluations.
Varying hyperparameters only; every trial's full configuration is in its MLflow params.</small></p>
<div class="wide">{{ table(trials_table, "trials-table", best.run_id if best else none) }}</div>

{% for grid in grids %}
<h2>{{ grid.title }} by {{ grid.row_key }} × {{ grid.col_key }}</h2>
<p><small>{{ grid.caption }}</small></p>
<table id="grid-{{ grid.metric }}">
<tr><th class="text">{{ grid.row_key }} \\ {{ grid.col_key }}</th>{% for c in grid.cols %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in grid.rows %}<tr><th class="text">{{ r.row }}</th>{% for cell in r.cells %}<td>{{ fmt(cell.value) }}{% if cell.n > 1 %} <small>(mean of {{ cell.n }})</small>{% endif %}</td>{% endfor %}</tr>
{% endfor %}</table>
{% endfor %}

{% if figures.curves %}
<h2>Learning curves</h2>
<img class="figure" id="curves" alt="FID and KID against epoch for every trial" src="{{ figures.curves }}">
{% endif %}
{% if figures.hyperparams %}
<h2>{{ sweep.metric }} against hyperparameters</h2>
<img class="figure" id="hyperparams" alt="metric against each varying hyperparameter" src="{{ figures.hyperparams }}">
{% endif %}

<h2>Best trial's samples beside real images</h2>
<div class="samples">
{% if figures.best_samples %}<figure><img id="best-samples" width="{{ display_widths.best_samples }}" alt="synthetic samples of the best trial" src="{{ figures.best_samples }}"><figcaption>{{ best.run_name }}, epoch {{ best_epoch }}{% if samples_note %}: {{ samples_note }}{% endif %}</figcaption></figure>
{% else %}<p class="note" id="no-best-samples">{{ samples_note }}</p>{% endif %}
{% if figures.real_samples %}<figure><img id="real-samples" width="{{ display_widths.real_samples }}" alt="real training images" src="{{ figures.real_samples }}"><figcaption>{{ real_note }}</figcaption></figure>
{% else %}<p class="note" id="no-real-samples">{{ real_note }}</p>{% endif %}
</div>

<h2>Every evaluation</h2>
<details><summary>{{ evaluations_table.rows|length }} evaluations</summary>
<div class="wide">{{ table(evaluations_table, "evaluations-table", none) }}</div>
</details>

<h2>Environment</h2>
<table id="environment">
<tr><th class="text">tag</th><th class="text">values (runs)</th></tr>
{% for env in environment %}<tr><td class="text">{{ env.key }}</td><td class="text">{% for value, count in env["values"] %}{{ value }} ({{ count }}){% if not loop.last %}<br>{% endif %}{% endfor %}</td></tr>
{% endfor %}</table>
{% if parent_env %}<details><summary>sweep driver environment (environment.json)</summary><pre>{{ parent_env }}</pre></details>{% endif %}
{% if sweep_yaml %}<details><summary>sweep configuration (sweep.yaml)</summary><pre>{{ sweep_yaml }}</pre></details>{% endif %}
</body>
</html>
"""

TABLE_MACRO = """{% macro table(t, id, best_id) -%}
<table id="{{ id }}">
<tr>{% for h in t.header %}<th{% if loop.index <= 2 %} class="text"{% endif %}>{{ h }}</th>{% endfor %}</tr>
{% for row in t.rows %}<tr data-run-id="{{ row.run_id }}"{% if row.run_id == best_id %} class="best"{% endif %}>{% for v in row.cells %}<td{% if loop.index <= 2 %} class="text{% if loop.index == 2 %} state-{{ v }}{% endif %}"{% endif %}>{{ fmt(v) }}</td>{% endfor %}</tr>
{% endfor %}</table>
{%- endmacro %}"""


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html(context: dict) -> str:
    """The report page from ``context`` (see :func:`write_report`), every value escaped."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.globals["fmt"] = fmt
    env.globals["table"] = env.from_string(TABLE_MACRO).module.table
    return env.from_string(TEMPLATE).render(**context)


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
        parent_env = _download_text(parent["run_id"], "environment.json", sweep["tracking_uri"])
        sweep_yaml = _download_text(parent["run_id"], "sweep.yaml", sweep["tracking_uri"])
    grids = grid_tables(sweep, varying, epochs=_checkpoint_epochs(sweep_yaml))
    csv_files = [
        write_csv(trials, out / "trials.csv"),
        write_csv(evaluations, out / "evaluations.csv"),
    ]

    figures: dict[str, Path] = {}
    curves = curves_figure(sweep, out / "curves.png")
    if curves:
        figures["curves"] = curves
    hyper = hyperparams_figure(sweep, varying, out / "hyperparams.png")
    if hyper:
        figures["hyperparams"] = hyper
    elif sweep["trials"]:
        notes.append("no hyperparameter varies between the trials: no metric-vs-parameter plot")

    best = best_trial(sweep)
    best_epoch, samples_note, real_note = None, "no finished trial with the metric", ""
    if best is not None:
        grid, best_epoch, samples_note = best_samples(sweep, best, out)
        if grid:
            figures["best_samples"] = grid
        real, real_note = real_samples(sweep, best, out)
        if real:
            figures["real_samples"] = real
    else:
        real_note = "no best trial: no training data to show"

    # both grids at one scale, so a synthetic image and a real one look the same size
    sample_widths = {
        k: _png_width(figures[k]) for k in ("best_samples", "real_samples") if k in figures
    }
    scale = min(3.0, 560 / max(sample_widths.values())) if sample_widths else 1.0
    display_widths = {k: round(w * scale) for k, w in sample_widths.items()}

    states = Counter(trial_state(t) for t in sweep["trials"])
    context = {
        "sweep": sweep,
        "states": sorted(states.items()),
        "best": best,
        "best_value": None if best is None else best["metrics"].get(sweep["metric"]),
        "best_epoch": best_epoch,
        "samples_note": samples_note,
        "real_note": real_note,
        "started": _when(parent["start_time"]) if parent else "",
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "notes": notes,
        "trials_table": trials,
        "evaluations_table": evaluations,
        "grids": grids,
        "display_widths": display_widths,
        "figures": {
            k: data_uri(figures[k]) if k in figures else None
            for k in ("curves", "hyperparams", "best_samples", "real_samples")
        },
        "environment": environment_table(sweep),
        "parent_env": parent_env,
        "sweep_yaml": sweep_yaml,
    }
    html_path = out / "report.html"
    html_path.write_text(render_html(context), encoding="utf-8")

    logged_to = None
    if log_to_mlflow and parent is not None:
        log_run_artifacts(
            parent["run_id"],
            [html_path, *figures.values(), *csv_files],
            "report",
            tracking_uri=sweep["tracking_uri"],
        )
        logged_to = parent["run_id"]
    return {
        "html": str(html_path),
        "figures": {k: str(p) for k, p in figures.items()},
        "csv": [str(p) for p in csv_files],
        "logged_to": logged_to,
        "notes": notes,
    }


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
