"""The report's figures, drawn by :mod:`fetalgan.figures` from the sweep's numbers: learning
curves with how each trial ended, PBT schedules with their exploits, the sweep metric against
each varying hyperparameter."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from fetalgan import figures
from fetalgan.report.records import RunRecord, SweepRecord, best_trial, trial_state
from fetalgan.tracking import names

CURVE_METRICS = (("fid", "FID"), ("kid_mean", "KID (mean over subsets)"))


def _run_labels(trials: list[RunRecord]) -> dict[str, str]:
    """run id -> the name a figure shows (the run name; with the run id's start if two trials
    share a name)."""
    names_seen = Counter(t.run_name for t in trials)
    return {
        t.run_id: t.run_name if names_seen[t.run_name] == 1
        else f"{t.run_name} ({t.run_id[:8]})"
        for t in trials
    }  # fmt: skip


EXPLOIT_LABEL = "exploit: copied a better trial's state, new values from here"


def exploit_epochs(trials: list[RunRecord], labels: dict[str, str]) -> dict[str, list[int]]:
    """PBT/PB2: figure label -> the epochs at which the trial took another's state (its
    ``fetalgan.pbt.exploits`` tag); empty lists for other sweeps."""
    events = {}
    for t in trials:
        text = names.tag(t.tags, names.EXPLOITS_TAG)
        events[labels[t.run_id]] = [x["epoch"] for x in json.loads(text)] if text else []
    return events


def curves_figure(sweep: SweepRecord, path: Path) -> Path | None:
    """FID and KID against epoch, every trial one line (the best trial thick), the last
    evaluation marked by how the trial ended (ASHA stop, failure, completion) and, in a PBT
    sweep, each exploit where the curve goes on from the donor's state; None when no trial
    logged either."""
    trials = sweep.trials
    labels = _run_labels(trials)
    panels = {
        title: {labels[t.run_id]: t.series(key) for t in trials} for key, title in CURVE_METRICS
    }
    best = best_trial(sweep)
    return figures.metric_curves(
        panels,
        path,
        ends={labels[t.run_id]: trial_state(t) for t in trials},
        highlight=None if best is None else labels[best.run_id],
        events=exploit_epochs(trials, labels),
        event_label=EXPLOIT_LABEL,
        title=f"{sweep.experiment}: learning curves (thick line: best trial)",
    )


def schedules_figure(sweep: SweepRecord, path: Path) -> Path | None:
    """PBT/PB2: each trial's hyper-parameters against epoch (``hp/<key>``), one panel per
    key, its exploits marked where the new values start; None when no trial logged any."""
    trials = sweep.trials
    keys = sorted({k for t in trials for k in t.history if k.startswith("hp/")})
    if not keys:
        return None
    labels = _run_labels(trials)
    best = best_trial(sweep)
    return figures.metric_curves(
        {k.removeprefix("hp/"): {labels[t.run_id]: t.series(k) for t in trials} for k in keys},
        path,
        highlight=None if best is None else labels[best.run_id],
        events=exploit_epochs(trials, labels),
        event_label=EXPLOIT_LABEL,
        as_steps=True,
        title=f"{sweep.experiment}: hyper-parameter schedules (PBT; thick line: best trial)",
    )


def hyperparams_figure(sweep: SweepRecord, varying: list[str], path: Path) -> Path | None:
    """The sweep metric at each trial's last evaluation against every varying hyperparameter
    (hollow markers: trials that did not complete all epochs); None when nothing varies or no
    trial has the metric."""
    metric = sweep.metric
    points = []
    for t in sweep.trials:
        last = t.last(metric)
        if last is not None and math.isfinite(last[1]):
            points.append((t, last[1]))
    keys = [k for k in varying if any(k in t.params for t, _ in points)]
    return figures.metric_vs_hyperparams(
        {k: [t.param(k) for t, _ in points] for k in keys},
        [value for _, value in points],
        path,
        metric=metric,
        completed=[trial_state(t) == "completed" for t, _ in points],
        title=f"{metric} at each trial's last evaluation (hollow red: stopped early or failed)",
    )
