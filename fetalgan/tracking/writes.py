"""The tracking writes a sweep queues (:mod:`fetalgan.tracking.write_queue`): one small frozen
dataclass per kind, each knowing how it is kept on disk and how it applies itself to a
:class:`~fetalgan.tracking.writer.SweepTracker`. Adding a write is one class here (and its
tracker method); the callback puts it, the queue keeps and replays it without knowing it.

On disk a write is ``op`` (its kind's :attr:`Write.op`), ``args`` (its JSON-able fields: an
:class:`~fetalgan.evaluation.Evaluation` as its ``to_dict``) and ``files`` (its file fields:
``{field: path or null}``), the journal's format since the queue was written; a journal line
of an unknown kind, or whose arguments do not fit its kind, reads as :class:`Unreadable`, which
the queue refuses (and so sets aside) when it comes to it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from fetalgan.evaluation import Evaluation


@dataclass(frozen=True)
class Write:
    """A write of one trial's run (its id is the queue's: a write does not carry it)."""

    op: ClassVar[str]  # the kind's name on disk (the SweepTracker method it calls)
    FILES: ClassVar[tuple[str, ...]] = ()  # fields that are files (spooled when put)
    REPLACED: ClassVar[tuple[str, ...]] = ()  # files the trial's next such write replaces

    def apply(self, tracker, run_id: str) -> None:
        """Do the write on the trial's run ``run_id``."""
        raise NotImplementedError

    def args(self) -> dict[str, Any]:
        """The fields that are not files, JSON-able (the journal's ``args``)."""
        return {
            f.name: _to_json(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name not in self.FILES
        }

    def files(self) -> dict[str, Path | None]:
        """The file fields (the journal's ``files``)."""
        return {name: getattr(self, name) for name in self.FILES}

    @classmethod
    def from_json(cls, args: dict, files: dict) -> Write:
        """The write of a journal line (its ``args`` and ``files``)."""
        values = dict(args)
        if "evaluation" in values:
            values["evaluation"] = Evaluation.from_dict(values["evaluation"])
        values.update({k: Path(v) if v else None for k, v in files.items()})
        return cls(**values)


@dataclass(frozen=True)
class StartTrial(Write):
    """The trial's run: created (params, config, environment) or set running again. Not a
    write on a run: it makes the run, whose id the queue keeps for the trial's other writes."""

    op: ClassVar[str] = "start_trial"
    name: str
    config: dict  # to_dict of the trial's TrainConfig

    def start(self, tracker, trial: str) -> str:
        """The run id of trial ``trial``."""
        return tracker.start_trial(trial, self.name, self.config)


@dataclass(frozen=True)
class LogEvaluation(Write):
    """An evaluation's numbers, the trial's system metrics and where it ran (tags)."""

    op: ClassVar[str] = "log_evaluation"
    evaluation: Evaluation
    system: dict[str, float] | None = None
    tags: dict[str, str] | None = None
    timestamp_ms: int | None = None  # when reported: a replayed duplicate is dropped by MLflow

    def keywords(self) -> dict[str, Any]:
        return {
            "evaluation": self.evaluation,
            "system": self.system,
            "tags": self.tags,
            "timestamp_ms": self.timestamp_ms,
        }

    def apply(self, tracker, run_id: str) -> None:
        tracker.log_evaluation(run_id, **self.keywords())

    @staticmethod
    def apply_together(tracker, run_id: str, writes: list[LogEvaluation]) -> None:
        """Several evaluations' numbers of one run in one request."""
        tracker.log_evaluations(run_id, [w.keywords() for w in writes])


@dataclass(frozen=True)
class LogEvaluationFiles(Write):
    """An evaluation's sample grid, its ``best.pt`` when it became the best, and the full
    state's weights for the sweep's ``checkpoint_epochs``."""

    op: ClassVar[str] = "log_evaluation_files"
    FILES: ClassVar[tuple[str, ...]] = ("best_weights", "sample_grid", "checkpoint_file")
    REPLACED: ClassVar[tuple[str, ...]] = ("best_weights",)  # checkpoint/best.pt
    evaluation: Evaluation
    best_weights: Path | None = None
    sample_grid: Path | None = None
    checkpoint_file: Path | None = None

    def apply(self, tracker, run_id: str) -> None:
        tracker.log_evaluation_files(run_id, self.evaluation, **self.files())


@dataclass(frozen=True)
class LogLastWeights(Write):
    """The weights of the trial's last state (and the selection candidates it kept)."""

    op: ClassVar[str] = "log_last_weights"
    FILES: ClassVar[tuple[str, ...]] = ("checkpoint_file",)
    checkpoint_file: Path | None = None

    def apply(self, tracker, run_id: str) -> None:
        tracker.log_last_weights(run_id, **self.files())


@dataclass(frozen=True)
class SetRestarts(Write):
    """How often the trial restarted from its last checkpoint."""

    op: ClassVar[str] = "set_restarts"
    restarts: int

    def apply(self, tracker, run_id: str) -> None:
        tracker.set_restarts(run_id, restarts=self.restarts)


@dataclass(frozen=True)
class EndTrial(Write):
    """The end of the trial's run: FINISHED (``stopped_early``), FAILED (``error``) or
    KILLED."""

    op: ClassVar[str] = "end_trial"
    status: str
    error: str | None = None
    stopped_early: bool = False

    def apply(self, tracker, run_id: str) -> None:
        tracker.end_trial(
            run_id, status=self.status, error=self.error, stopped_early=self.stopped_early
        )


@dataclass(frozen=True)
class Unreadable(Write):
    """A journal line this version cannot read as a write (unknown kind, arguments that do
    not fit): kept as read, refused when replayed (so set aside in ``failed.jsonl``)."""

    kind: str  # the line's ``op``
    raw_args: dict = field(default_factory=dict)
    raw_files: dict = field(default_factory=dict)
    reason: str = ""

    @property
    def op(self) -> str:  # type: ignore[override]
        return self.kind

    def args(self) -> dict[str, Any]:
        return dict(self.raw_args)

    def files(self) -> dict[str, Path | None]:
        return {k: Path(v) if v else None for k, v in self.raw_files.items()}

    def apply(self, tracker, run_id: str) -> None:
        raise ValueError(self.reason)


KINDS: dict[str, type[Write]] = {
    kind.op: kind
    for kind in (
        StartTrial,
        LogEvaluation,
        LogEvaluationFiles,
        LogLastWeights,
        SetRestarts,
        EndTrial,
    )
}


def read_write(op: str, args: dict, files: dict, *, where: str = "") -> Write:
    """The write of a journal line (``op``, ``args``, ``files``); :class:`Unreadable` when
    this version has no such kind or its arguments do not fit (``where``: the journal, for
    the reason)."""
    kind = KINDS.get(op)
    if kind is None:
        return Unreadable(op, args, files, f"{where}: unknown write {op!r}")
    try:
        return kind.from_json(args, files)
    except Exception as err:  # whatever the line holds: refused when replayed, not now
        return Unreadable(op, args, files, f"{where}: write {op!r}: {err}")


def _to_json(value: Any) -> Any:
    if isinstance(value, Evaluation):
        return value.to_dict()
    if isinstance(value, Path):
        return str(value)
    return value
