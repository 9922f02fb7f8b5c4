"""The report's tables, as ``{header, rows: [{run_id, cells}]}`` of raw values (the page
formats each cell with :func:`fmt`, :func:`write_csv` writes them as they are): the trials, every
evaluation, data size x epochs grids, the environment of the runs and the nodes that ran the
trials. The test across data sizes is :func:`fetalgan.study.stats.significance_table`."""

from __future__ import annotations

import csv
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from fetalgan.report.records import SweepRecord, trial_best, trial_state
from fetalgan.study.stats import sort_key
from fetalgan.tracking import names

GRID_METRICS = (
    ("fid", "FID"),
    ("kid_mean", "KID"),
    ("mi_normalised", "MI (normalised)"),
    ("psnr", "PSNR (dB)"),
    ("lbpv_l1", "LBPv L1 distance"),
)
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


def fmt(value: Any) -> str:
    """A table cell: 4 significant digits for floats, '—' for missing."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def trials_table(sweep: SweepRecord, varying: list[str], metrics: list[str]) -> dict:
    """Header and rows (raw values) of the per-trial table: FID, KID and LBPv L1 at the last
    evaluation (the evaluations table has every metric), and the trial's best value of the
    sweep metric (:func:`trial_best`) with its epoch."""
    goal = sweep.objective
    metric = goal.metric
    shown = [m for m in ("fid", "kid_mean", "kid_std", "lbpv_l1") if m in metrics]
    header = ["trial", "status", *varying, "last epoch", *shown, f"best {metric}", "best epoch",
              "n fake"]  # fmt: skip
    rows = []
    for t in sweep.trials:
        best = trial_best(t, goal)
        n_fake = t.last("n_fake")
        row = [t.run_name, trial_state(t)]
        row += [t.param(k) for k in varying]
        row += [t.last_epoch()]
        row += [(t.last(m) or (None, None))[1] for m in shown]
        row += [best[1] if best else None, best[0] if best else None]
        row += [int(n_fake[1]) if n_fake else None]
        rows.append({"run_id": t.run_id, "cells": row})
    return {"header": header, "rows": rows}


def evaluations_table(sweep: SweepRecord, metrics: list[str]) -> dict:
    """Header and rows of every evaluation of every trial (trial, epoch, metrics)."""
    header = ["trial", "epoch", *metrics]
    rows = []
    for t in sweep.trials:
        by_step: dict[int, dict[str, float]] = defaultdict(dict)
        for m in metrics:
            for step, value in t.series(m):
                by_step[step][m] = value
        for step in sorted(by_step):
            rows.append(
                {"run_id": t.run_id, "cells": [t.run_name, step]
                 + [by_step[step].get(m) for m in metrics]}
            )  # fmt: skip
    return {"header": header, "rows": rows}


def grid_tables(
    sweep: SweepRecord, varying: list[str], *, epochs: list[int] | None = None
) -> list[dict]:
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
        for t in sweep.trials:
            row = t.param(row_key)
            if isinstance(row, list | dict):  # a table key must be hashable: show its text
                row = t.params[row_key]
            if by_epochs_param:
                if trial_state(t) != "completed":  # its last value is not at `epochs`
                    continue
                last = t.last(metric)
                if last is not None:
                    cells[(row, t.param("epochs"))].append(last[1])
            else:
                for step, value in t.series(metric):
                    if not epochs or step in epochs:
                        cells[(row, step)].append(value)
        if not cells:
            continue
        rows = sorted({k[0] for k in cells}, key=sort_key)
        cols = sorted({k[1] for k in cells}, key=sort_key)
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


def selection_rows(selection: dict) -> list[dict]:
    """The final selection's candidates (``selection.json``'s) as table rows: trial, epoch,
    weights, in-sweep value, selection score mean and spread (winner first)."""
    return [
        {
            "run_id": c["run_id"],
            "cells": [c["run_name"], c["epoch"], c["artifact"].rsplit("/", 1)[-1],
                      c["in_sweep"], c["score"], c["spread"]],
        }
        for c in selection["candidates"]
    ]  # fmt: skip


def environment_table(sweep: SweepRecord) -> list[dict]:
    """For each environment tag: its distinct values over the parent and trial runs, with the
    number of runs having each."""
    runs = ([sweep.parent] if sweep.parent else []) + sweep.trials
    out = []
    for key in ENV_TAGS:
        values = (names.tag(r.tags, key) for r in runs)
        counts = Counter(value for value in values if value is not None)
        if counts:
            out.append({"key": names.short_tag(key), "values": sorted(counts.items())})
    return out


def trial_hosts(sweep: SweepRecord) -> list[dict]:
    """The nodes that ran the trials (``fetalgan.worker_host`` and ``fetalgan.worker_ip`` tags,
    set from the node of each trial's latest evaluation) with the number of trials each ran,
    most first; trials without the tags (none evaluated yet) count under ``UNKNOWN_HOST``."""
    counts = Counter(
        (
            names.tag(t.tags, names.WORKER_HOST_TAG, UNKNOWN_HOST),
            names.tag(t.tags, names.WORKER_IP_TAG),
        )
        for t in sweep.trials
    )
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0][0], item[0][1] or ""))
    return [{"host": host, "ip": fmt(ip), "trials": n} for (host, ip), n in ranked]


def write_csv(table: dict, path: Path) -> Path:
    """``table`` as CSV: ``run_id`` and the header, then each row's raw values (empty for
    missing)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run_id", *table["header"]])
        for row in table["rows"]:
            writer.writerow([row["run_id"], *("" if v is None else v for v in row["cells"])])
    return path
