"""A sweep as the report reads it: typed records built once from what
:func:`fetalgan.tracking.sweep_runs` returns (:meth:`SweepRecord.from_runs`), and the rules
read off them: a trial's state, its best value, the sweep's best trial, the params that vary
and the metrics shown.

Best is :class:`fetalgan.evaluation.Objective` (the sweep's metric and mode) applied to each
trial's best value over its evaluations (:func:`trial_best`), as ``fetalgan best`` ranks them.
Params are read back by their TrainConfig type (:func:`fetalgan.config.param_value`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run of the sweep (a trial, or the sweep's parent run): params as logged
    (text), tags without MLflow's own, the latest value of each metric and, for a trial,
    every metric's history ``[(epoch, value), ...]`` sorted by epoch."""

    run_id: str
    run_name: str
    status: str  # MLflow's: RUNNING, SCHEDULED, FINISHED, FAILED, KILLED
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    start_time: int | None = None  # ms since the epoch
    end_time: int | None = None

    @classmethod
    def from_run(cls, run: Mapping[str, Any]) -> RunRecord:
        """The record of one run as :func:`fetalgan.tracking.sweep_runs` lists it."""
        return cls(
            run_id=run["run_id"],
            run_name=run["run_name"],
            status=run["status"],
            params=dict(run.get("params") or {}),
            tags=dict(run.get("tags") or {}),
            metrics=dict(run.get("metrics") or {}),
            history={
                key: [(int(step), value) for step, value in points]
                for key, points in (run.get("history") or {}).items()
            },
            start_time=run.get("start_time"),
            end_time=run.get("end_time"),
        )

    def param(self, key: str) -> Any:
        """The value of training key ``key`` by its TrainConfig type; None when not logged."""
        text = self.params.get(key)
        return None if text is None else param_value(key, text)

    def series(self, key: str) -> list[tuple[int, float]]:
        """``[(epoch, value), ...]`` of metric ``key`` (empty when not logged)."""
        return list(self.history.get(key, ()))

    def last(self, key: str) -> tuple[int, float] | None:
        """(epoch, value) of metric ``key`` at its last evaluation; None when not logged."""
        points = self.history.get(key)
        return points[-1] if points else None

    def last_epoch(self) -> int | None:
        """The last epoch any metric was logged at."""
        return max((s for points in self.history.values() for s, _ in points), default=None)


@dataclass(frozen=True)
class SweepRecord:
    """One sweep of an experiment: its parent run (None when the experiment has none: then
    ``trials`` are every trial run of the experiment), its trials in start order, and what
    best means for it (``metric``, ``mode``)."""

    experiment: str
    tracking_uri: str
    metric: str
    mode: str
    trials: list[RunRecord]
    parent: RunRecord | None = None
    experiment_id: str = ""
    parents: list[str] = field(default_factory=list)  # every sweep run id, newest first

    @classmethod
    def from_runs(cls, runs: Mapping[str, Any]) -> SweepRecord:
        """The record of :func:`fetalgan.tracking.sweep_runs`'s answer."""
        parent = runs.get("parent")
        return cls(
            experiment=runs["experiment"],
            tracking_uri=runs["tracking_uri"],
            metric=runs["metric"],
            mode=runs["mode"],
            trials=[RunRecord.from_run(t) for t in runs["trials"]],
            parent=None if parent is None else RunRecord.from_run(parent),
            experiment_id=runs.get("experiment_id", ""),
            parents=list(runs.get("parents") or []),
        )

    @property
    def objective(self) -> Objective:
        """What best means for this sweep (its metric and mode, stored on the experiment)."""
        return Objective(self.metric, self.mode)


def varying_params(trials: list[RunRecord]) -> list[str]:
    """Param keys whose values differ between trials (sorted; data.size and epochs first)."""
    values: dict[str, set[str]] = defaultdict(set)
    for trial in trials:
        for key, value in trial.params.items():
            values[key].add(value)
    keys = [k for k, v in values.items() if len(v) > 1 or any(k not in t.params for t in trials)]
    first = [k for k in ("data.size", "epochs") if k in keys]
    return first + sorted(k for k in keys if k not in first)


def trial_state(trial: RunRecord) -> str:
    """completed | stopped | failed | running (the keys of :data:`figures.END_MARKERS`)."""
    if trial.status in ("FAILED", "KILLED"):
        return "failed"
    if trial.status == "RUNNING" or trial.status == "SCHEDULED":
        return "running"
    stopped = names.tag(trial.tags, names.STOPPED_EARLY_TAG) == "true"
    return "stopped" if stopped else "completed"


def trial_best(trial: RunRecord, objective: Objective) -> tuple[int, float] | None:
    """(epoch, value) of ``trial``'s best value of the objective's metric; None if it has none.

    The value is the trial's last logged ``best_<metric>`` (``objective.best_key``, the
    trainer's running best) and the epoch the first evaluation at which that running best was
    reached; for a trial without ``best_<metric>`` (logged before the trainer wrote it), the
    best over the metric's history (the first such evaluation on ties).
    """
    running = [p for p in trial.series(objective.best_key) if is_number(p[1])]
    if running:
        value = running[-1][1]
        return next(p for p in running if p[1] == value)
    return objective.pick(trial.series(objective.metric), key=lambda p: p[1])


def ordered_metrics(trials: list[RunRecord]) -> list[str]:
    """The metric keys the trials logged, in reading order, without bookkeeping: counts,
    timings, and ``best_<metric>`` (a running best, shown as the trials table's best column)."""
    keys = {k for t in trials for k in t.history if k not in HIDDEN_METRICS}
    keys -= {Objective(k).best_key for k in keys}
    keys = {k for k in keys if not k.startswith(names.SYSTEM_PREFIX)}  # CPU/GPU use, not quality
    return [k for k in METRIC_ORDER if k in keys] + sorted(keys - set(METRIC_ORDER))


def best_trial(sweep: SweepRecord) -> RunRecord | None:
    """The completed or ASHA-stopped trial with the best :func:`trial_best` value; None when no
    such trial has the metric."""
    # Computed rather than read from the parent's best_run_id tag: the tag only exists once the
    # sweep has finished, and is written by the same rule (write_report notes any disagreement).
    goal = sweep.objective
    finished = [t for t in sweep.trials if trial_state(t) in ("completed", "stopped")]
    return goal.pick(finished, key=lambda t: (trial_best(t, goal) or (None, None))[1])
