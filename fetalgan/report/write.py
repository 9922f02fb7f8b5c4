"""``write_report``: read one sweep from MLflow, write its page, figures and tables, and log
them back to the sweep's parent run (the order of the report's jobs; each is its own
module)."""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fetalgan.report.html import figure_uris, render_html, sample_display_widths, when
from fetalgan.report.plots import curves_figure, hyperparams_figure, schedules_figure
from fetalgan.report.records import (
    RunRecord,
    SweepRecord,
    best_trial,
    ordered_metrics,
    trial_best,
    trial_state,
    varying_params,
)
from fetalgan.report.samples import best_samples, real_samples
from fetalgan.report.tables import (
    environment_table,
    evaluations_table,
    grid_tables,
    selection_rows,
    trial_hosts,
    trials_table,
    write_csv,
)
from fetalgan.study.stats import ALPHA, significance_table
from fetalgan.tracking import names


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

    sweep = SweepRecord.from_runs(
        sweep_runs(experiment, tracking_uri=tracking_uri, parent_run_id=parent_run_id)
    )
    out = Path(out) if out is not None else Path("reports") / experiment
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    if not sweep.trials:
        notes.append("this sweep has no trial runs yet")
    if sweep.parent is None:
        notes.append("no sweep (parent) run found: showing every trial run of the experiment")

    varying = varying_params(sweep.trials)
    metrics = ordered_metrics(sweep.trials)
    trials = trials_table(sweep, varying, metrics)
    evaluations = evaluations_table(sweep, metrics)
    parent = sweep.parent
    parent_env = sweep_yaml = None
    if parent is not None:
        uri = sweep.tracking_uri
        parent_env = _download_text(parent.run_id, names.ENVIRONMENT_ARTIFACT, uri)
        sweep_yaml = _download_text(parent.run_id, names.SWEEP_ARTIFACT, uri)
    grids = grid_tables(sweep, varying, epochs=_checkpoint_epochs(sweep_yaml))
    significance = significance_table(
        sweep.trials, varying, metrics, epochs=_checkpoint_epochs(sweep_yaml)
    )
    csv_files = [
        write_csv(trials, out / "trials.csv"),
        write_csv(evaluations, out / "evaluations.csv"),
    ]
    if significance is not None:
        csv_files.append(write_csv(significance, out / "significance.csv"))

    pngs = _figures(sweep, varying, out, notes)
    selection = selection_table(sweep, parent)
    best, best_value, selected_epoch = _best(sweep, selection, notes)
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

    states = Counter(trial_state(t) for t in sweep.trials)
    context = {
        "sweep": sweep,
        "states": sorted(states.items()),
        "best": best,
        "best_value": best_value,
        "best_epoch": best_epoch,
        "selection": selection,
        "samples_note": samples_note,
        "real_note": real_note,
        "started": when(parent.start_time) if parent else "",
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "notes": notes,
        "trials_table": trials,
        "evaluations_table": evaluations,
        "grids": grids,
        "significance": significance,
        "alpha": ALPHA,
        "display_widths": sample_display_widths(pngs),
        "figures": figure_uris(pngs),
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
            parent.run_id,
            [html_path, *pngs.values(), *csv_files],
            "report",
            tracking_uri=sweep.tracking_uri,
        )
        logged_to = parent.run_id
    return {
        "html": str(html_path),
        "figures": {k: str(p) for k, p in pngs.items()},
        "csv": [str(p) for p in csv_files],
        "logged_to": logged_to,
        "notes": notes,
    }


def _figures(sweep: SweepRecord, varying: list[str], out: Path, notes: list[str]) -> dict:
    """The sweep's figures written into ``out``, by name (curves, schedules, hyperparams),
    those the sweep has data for."""
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
    elif sweep.trials:
        notes.append("no hyperparameter varies between the trials: no metric-vs-parameter plot")
    return pngs


def _best(sweep: SweepRecord, selection: dict | None, notes: list[str]):
    """The trial the report shows as the sweep's best, its value and (after a final
    selection, whose winner it is) the selected epoch; a note where the parent's best tag
    disagrees."""
    best = best_trial(sweep)
    best_value = None if best is None else trial_best(best, sweep.objective)[1]
    selected_epoch = None
    if selection is not None:  # the final selection's winner is the sweep's best
        winner = selection["winner"]
        best = next((t for t in sweep.trials if t.run_id == winner["run_id"]), best)
        best_value, selected_epoch = winner["in_sweep"], winner["epoch"]
    parent = sweep.parent
    tagged = names.tag(parent.tags if parent else {}, names.BEST_RUN_TAG)
    if best is not None and tagged is not None and tagged != best.run_id:
        notes.append(
            f"the sweep run's {names.BEST_RUN_TAG} tag names run {tagged}, but by each trial's "
            f"best {sweep.metric} the best is {best.run_name} ({best.run_id}); "
            "the report shows the latter"
        )
    return best, best_value, selected_epoch


def selection_table(sweep: SweepRecord, parent: RunRecord | None) -> dict | None:
    """The sweep's final selection (its ``selection.json``) with its candidates as table rows
    (:func:`fetalgan.report.tables.selection_rows`); None when the sweep ran none."""
    if parent is None or names.SELECTED_RUN_TAG not in parent.tags:
        return None
    text = _download_text(parent.run_id, names.SELECTION_ARTIFACT, sweep.tracking_uri)
    if not text:
        return None
    record = json.loads(text)
    record["rows"] = selection_rows(record)
    return record


def _download_text(run_id: str, path: str, tracking_uri: str) -> str | None:
    from fetalgan.tracking import download_run_artifact

    with tempfile.TemporaryDirectory() as tmp:
        local = download_run_artifact(run_id, path, tmp, tracking_uri=tracking_uri)
        return None if local is None else local.read_text()


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
