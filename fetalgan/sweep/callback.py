"""The driver's Tune callback: forwards every trial to tracking through the sweep's write queue
(:mod:`fetalgan.tracking.write_queue`), so Tune's event loop never waits on MLflow. Params at
trial start, each evaluation's record and system metrics once its checkpoint is stored, its
sample grid and best weights, the last weights and the end status at completion or error; on
experiment end, trials cut short by an interruption are KILLED. The queue replays the writes
in order in background threads, waiting out a store that does not answer."""

from __future__ import annotations

import functools
import json
import shutil
import time
from pathlib import Path

from ray import tune

from fetalgan.checkpoint import CHECKPOINT_NAME
from fetalgan.config import TrainConfig, to_dict
from fetalgan.evaluation import Evaluation
from fetalgan.files import atomic_write_text
from fetalgan.sweep.space import describe, trial_config
from fetalgan.sweep.trainable import STAGE_DIR, TrialSpec, sample_grid_name
from fetalgan.tracking.names import BEST_CHECKPOINT, WORKER_HOST_TAG, WORKER_IP_TAG, WORKERS_TAG
from fetalgan.tracking.writes import (
    EndTrial,
    LogEvaluation,
    LogEvaluationFiles,
    LogLastWeights,
    SetRestarts,
    StartTrial,
    Write,
)

QUEUE_DIR = "fetalgan_tracking"  # in the experiment dir: the queued tracking writes


def _timed(hook):
    """Adds the hook's wall time to ``self.seconds`` (the driver time spent on tracking)."""

    @functools.wraps(hook)
    def wrapper(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return hook(self, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    return wrapper


class TrackingCallback(tune.Callback):
    """``tracker_args``: SweepTracker's keyword arguments plus ``parent_run_id``; ``spec``: the
    sweep's TrialSpec (each trial's config is built from it once, at its start);
    ``outcome_file``: where :meth:`on_experiment_end` writes what the driver's summary needs
    (:func:`read_outcome`); the write queue lives in ``QUEUE_DIR`` beside it. A resumed sweep
    runs the copy Tune unpickles from the experiment, so the driver reads the outcome from
    that file rather than from this object, and both open the queue by its directory."""

    def __init__(self, tracker_args: dict, spec: TrialSpec, outcome_file: str):
        self.tracker_args = tracker_args
        self.spec = spec
        self.outcome_file = outcome_file
        self._init_runtime()

    def _init_runtime(self):
        self.queue = None
        self.started: set[str] = set()  # trials this driver started (their runs)
        self.configs: dict[str, TrainConfig] = {}  # trial id -> its TrainConfig (built once)
        self.pending: dict[str, dict] = {}  # trial id -> result awaiting its checkpoint
        self.ended: set[str] = set()
        self.stopped_early: set[str] = set()
        self.interrupted = False
        self.seconds = 0.0  # driver time spent in these hooks

    def __getstate__(self):  # Tune pickles its RunConfig: keep only the arguments
        return {
            "tracker_args": self.tracker_args,
            "spec": self.spec,
            "outcome_file": self.outcome_file,
        }

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_runtime()

    @property
    def queue_dir(self) -> Path:
        return Path(self.outcome_file).parent / QUEUE_DIR

    def _put(self, trial, write: Write) -> None:
        if self.queue is None:
            from fetalgan.tracking.write_queue import open_write_queue

            self.queue = open_write_queue(self.queue_dir, self.tracker_args)
        self.queue.put(trial.trial_id, write)

    def config_of(self, trial) -> TrainConfig:
        if trial.trial_id not in self.configs:
            self.configs[trial.trial_id] = trial_config(
                self.spec.base, trial.config, self.spec.encoded
            )
        return self.configs[trial.trial_id]

    @_timed
    def on_trial_start(self, iteration, trials, trial, **info):
        name = f"{trial.trial_id} {describe(trial.config)}".strip()
        self._put(trial, StartTrial(name=name, config=to_dict(self.config_of(trial))))
        self.started.add(trial.trial_id)
        self.ended.discard(trial.trial_id)

    @_timed
    def on_trial_result(self, iteration, trials, trial, result, **info):
        """An evaluation is logged once its checkpoint is stored: an interruption between
        the two makes the trial redo that evaluation, which must not log it twice."""
        if "evaluation" not in result:
            return
        stale = self.pending.pop(trial.trial_id, None)
        if stale is not None and stale.get("epoch", 0) < result.get("epoch", 0):
            self._log_dropped(trial, stale)
        if result.get("checkpoint_path"):  # data-parallel trial: Train stored it already
            self._log_evaluation(trial, result, Path(result["checkpoint_path"]))
        elif result.get("should_checkpoint"):
            self.pending[trial.trial_id] = result
        else:  # an evaluation without checkpoint (none today): numbers only
            self._log_numbers(trial, result)

    @_timed
    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if trial.trial_id not in self.pending:
            return
        self._log_evaluation(trial, self.pending.pop(trial.trial_id), Path(checkpoint.path))

    def _log_dropped(self, trial, result: dict) -> None:
        """An evaluation whose checkpoint Tune never registered, and the trial has moved on
        (PBT paused it to copy another trial's state): it happened, so it is logged, with
        its files from the checkpoint folder the trial had already written to storage (a best
        evaluation's ``best.pt`` must not be lost). A trial that restarted from an earlier
        checkpoint reports that epoch again instead, and is not logged twice."""
        directory = Path(trial.path or "") / str(result.get("checkpoint_dir_name") or "")
        if result.get("checkpoint_dir_name") and (directory / CHECKPOINT_NAME).is_file():
            self._log_evaluation(trial, result, directory)
        else:
            self._log_numbers(trial, result)

    def _log_numbers(self, trial, result: dict) -> Evaluation:
        evaluation = Evaluation.from_dict(json.loads(result["evaluation"]))
        where = {
            tag: str(result[key])
            for key, tag in (
                ("worker_host", WORKER_HOST_TAG),
                ("worker_ip", WORKER_IP_TAG),
                ("workers", WORKERS_TAG),
            )
            if key in result
        }
        self._put(
            trial,
            LogEvaluation(
                evaluation=evaluation,
                system=json.loads(result.get("system") or "{}"),
                tags=where,
                timestamp_ms=int(time.time() * 1000),  # when reported, not when replayed
            ),
        )
        return evaluation

    def _log_evaluation(self, trial, result: dict, directory: Path) -> None:
        evaluation = self._log_numbers(trial, result)
        self._log_files(trial, evaluation, directory)

    def _log_files(self, trial, evaluation: Evaluation, directory: Path) -> None:
        """Sample grid and weights: the queue hard-links the files now (Tune keeps one
        checkpoint per trial and drops it once the next is stored) and uploads them later."""
        files = LogEvaluationFiles(
            evaluation=evaluation,
            best_weights=directory / BEST_CHECKPOINT if evaluation.is_best else None,
            sample_grid=directory / sample_grid_name(evaluation.epoch),
            # the full state only where weights of this epoch are kept (checkpoint_epochs)
            checkpoint_file=directory / CHECKPOINT_NAME
            if evaluation.epoch in self.tracker_args.get("checkpoint_epochs", ())
            else None,
        )
        self._put(trial, files)

    @_timed
    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.trial_id not in self.started:  # e.g. finished before a driver restart
            return
        stale = self.pending.pop(trial.trial_id, None)
        if stale is not None:  # Tune dropped its last result's checkpoint (PBT paused it)
            self._log_dropped(trial, stale)
        # The last weights, from the latest checkpoint: Tune's, or for a data-parallel trial
        # the one Ray Train stored (named in its last result).
        latest = trial.checkpoint.path if trial.checkpoint is not None else None
        latest = latest or (trial.last_result or {}).get("checkpoint_path")
        if latest:
            self._put(trial, LogLastWeights(checkpoint_file=Path(latest) / CHECKPOINT_NAME))
        last_epoch = int((trial.last_result or {}).get("epoch", 0))
        stopped = last_epoch < self.config_of(trial).epochs
        if stopped:
            self.stopped_early.add(trial.trial_id)
        self._put(trial, EndTrial(status="FINISHED", stopped_early=stopped))
        self.ended.add(trial.trial_id)
        _remove_stage(trial)

    @_timed
    def on_trial_error(self, iteration, trials, trial, **info):
        if trial.trial_id not in self.started:
            return
        self._put(trial, EndTrial(status="FAILED", error=trial_error(trial)))
        self.ended.add(trial.trial_id)
        _remove_stage(trial)

    @_timed
    def on_trial_recover(self, iteration, trials, trial, **info):
        # it restarts from its last checkpoint into this run
        self._put(trial, SetRestarts(restarts=trial.num_failures))

    @_timed
    def on_experiment_end(self, trials, **info):
        killed = [t for t in trials if t.trial_id in self.started and t.trial_id not in self.ended]
        unfinished = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
        self.interrupted = bool(killed or unfinished)
        for trial in killed:
            self._put(trial, EndTrial(status="KILLED"))
        outcome = {
            "interrupted": self.interrupted,
            "runs": dict(self.queue.runs) if self.queue is not None else {},
            "stopped_early": sorted(self.stopped_early),
            "seconds": self.seconds,
            "queue_dir": str(self.queue_dir),
        }
        atomic_write_text(self.outcome_file, json.dumps(outcome, indent=2) + "\n")


def read_outcome(path: str | Path) -> dict | None:
    """What the callback wrote at the end of the experiment (None if it never got there):
    ``{interrupted, runs: {trial id: MLflow run id (those replayed by then)}, stopped_early:
    [trial ids], seconds, queue_dir}``."""
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _remove_stage(trial) -> None:
    """The trial's last staged checkpoint: the trainable could not remove it (``report`` does
    not return after a trial's last result), and Tune has its copy. The stage is in the
    trial's working directory (named in each result); on the driver's node Tune would sync
    that directory into the experiment's storage at the end, so it goes before that."""
    stage = (trial.last_result or {}).get("stage_dir")
    for path in (stage, trial.path and str(Path(trial.path) / STAGE_DIR)):
        if path:
            shutil.rmtree(path, ignore_errors=True)


def trial_error(trial) -> str:
    """The telling line of a failed trial's error (the full traceback is in its error.txt).
    Read from the driver's copy first: the storage copy is synced later."""
    text = ""
    if trial.error_file and Path(trial.error_file).is_file():
        text = Path(trial.error_file).read_text(errors="replace")
    if not text:
        text = str(trial.get_error() or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    telling = [ln for ln in lines if "Error" in ln or "error" in ln]
    return (telling[-1] if telling else lines[-1]) if lines else "trial failed"
