"""The driver's Tune callback: forwards every trial to tracking (the one writer of the MLflow
store). Params at trial start, each evaluation's record and system metrics once its checkpoint
is stored, the sample grid and checkpoints in a background thread, the end status at
completion or error; on experiment end, trials cut short by an interruption are KILLED."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

from ray import tune

from fetalgan.checkpoint import CHECKPOINT_NAME
from fetalgan.config import TrainConfig
from fetalgan.evaluation import Evaluation
from fetalgan.files import atomic_write_text
from fetalgan.sweep.space import describe, trial_config
from fetalgan.sweep.trainable import TrialSpec, sample_grid_name
from fetalgan.tracking.names import WORKER_HOST_TAG, WORKER_IP_TAG, WORKERS_TAG


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
    (:func:`read_outcome`). A resumed sweep runs the copy Tune unpickles from the experiment,
    so the driver reads the outcome from that file rather than from this object."""

    def __init__(self, tracker_args: dict, spec: TrialSpec, outcome_file: str):
        self.tracker_args = tracker_args
        self.spec = spec
        self.outcome_file = outcome_file
        self._init_runtime()

    def _init_runtime(self):
        self.tracker = None
        self.runs: dict[str, str] = {}  # trial id -> MLflow run id
        self.configs: dict[str, TrainConfig] = {}  # trial id -> its TrainConfig (built once)
        self.pending: dict[str, dict] = {}  # trial id -> result awaiting its checkpoint
        self.files = None  # one background thread copying artefacts (see _log_files)
        self.in_flight = None  # its current job
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

    def _tracker(self):
        if self.tracker is None:
            from fetalgan.tracking import SweepTracker

            args = dict(self.tracker_args)
            parent = args.pop("parent_run_id")
            self.tracker = SweepTracker(**args)
            self.tracker.parent_run_id = parent
        return self.tracker

    def config_of(self, trial) -> TrainConfig:
        if trial.trial_id not in self.configs:
            self.configs[trial.trial_id] = trial_config(
                self.spec.base, trial.config, self.spec.encoded
            )
        return self.configs[trial.trial_id]

    @_timed
    def on_trial_start(self, iteration, trials, trial, **info):
        name = f"{trial.trial_id} {describe(trial.config)}".strip()
        self.runs[trial.trial_id] = self._tracker().start_trial(
            trial.trial_id, name, self.config_of(trial)
        )
        self.ended.discard(trial.trial_id)

    def _run(self, trial) -> str | None:
        if trial.trial_id not in self.runs:  # e.g. a result racing a restart
            run_id = self._tracker().find_trial_run(trial.trial_id)
            if run_id is None:
                return None
            self.runs[trial.trial_id] = run_id
        return self.runs[trial.trial_id]

    @_timed
    def on_trial_result(self, iteration, trials, trial, result, **info):
        """An evaluation is logged once its checkpoint is stored: an interruption between
        the two makes the trial redo that evaluation, which must not log it twice."""
        run_id = self._run(trial)
        if run_id is None or "evaluation" not in result:
            return
        if result.get("checkpoint_path"):  # data-parallel trial: Train stored it already
            self._log_evaluation(run_id, result, Path(result["checkpoint_path"]))
        elif result.get("should_checkpoint"):
            self.pending[trial.trial_id] = result
        else:  # an evaluation without checkpoint (none today): numbers only
            self._log_numbers(run_id, result)

    @_timed
    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        run_id = self._run(trial)
        if run_id is None or trial.trial_id not in self.pending:
            return
        self._log_evaluation(run_id, self.pending.pop(trial.trial_id), Path(checkpoint.path))

    def _log_numbers(self, run_id: str, result: dict) -> Evaluation:
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
        self._tracker().log_evaluation(
            run_id, evaluation, system=json.loads(result.get("system") or "{}"), tags=where
        )
        return evaluation

    def _log_evaluation(self, run_id: str, result: dict, directory: Path) -> None:
        evaluation = self._log_numbers(run_id, result)
        self._log_files(run_id, evaluation, directory)

    def _log_files(self, run_id: str, evaluation: Evaluation, directory: Path) -> None:
        """Sample grid and checkpoints go to MLflow in a background thread, so the trial
        (which waits for the driver between evaluations) does not wait for the copies. One
        job at a time: the checkpoint being copied is never one Tune has already replaced
        (it keeps the last two)."""
        from concurrent.futures import ThreadPoolExecutor

        self._flush()
        if self.files is None:
            self.files = ThreadPoolExecutor(1, thread_name_prefix="fetalgan-mlflow")
        self.in_flight = self.files.submit(
            self._tracker().log_evaluation_files,
            run_id,
            evaluation,
            checkpoint_file=directory / CHECKPOINT_NAME,
            sample_grid=directory / sample_grid_name(evaluation.epoch),
        )

    def _flush(self) -> None:
        """Wait for the artefact job; its error, if any, is raised here."""
        if self.in_flight is not None:
            job, self.in_flight = self.in_flight, None
            job.result()

    @_timed
    def on_trial_complete(self, iteration, trials, trial, **info):
        self._flush()  # its artefacts are in before the run ends
        run_id = self._run(trial)
        if run_id is None:
            return
        last_epoch = int((trial.last_result or {}).get("epoch", 0))
        stopped = last_epoch < self.config_of(trial).epochs
        if stopped:
            self.stopped_early.add(trial.trial_id)
        self._tracker().end_trial(run_id, "FINISHED", stopped_early=stopped)
        self.ended.add(trial.trial_id)

    @_timed
    def on_trial_error(self, iteration, trials, trial, **info):
        self._flush()
        run_id = self._run(trial)
        if run_id is None:
            return
        self._tracker().end_trial(run_id, "FAILED", error=trial_error(trial))
        self.ended.add(trial.trial_id)

    @_timed
    def on_trial_recover(self, iteration, trials, trial, **info):
        run_id = self._run(trial)
        if run_id is not None:  # it restarts from its last checkpoint into this run
            self._tracker().set_restarts(run_id, trial.num_failures)

    @_timed
    def on_experiment_end(self, trials, **info):
        self._flush()
        if self.files is not None:
            self.files.shutdown()
        killed = [t for t in trials if t.trial_id in self.runs and t.trial_id not in self.ended]
        unfinished = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
        self.interrupted = bool(killed or unfinished)
        for trial in killed:
            self._tracker().end_trial(self.runs[trial.trial_id], "KILLED")
        outcome = {
            "interrupted": self.interrupted,
            "runs": self.runs,
            "stopped_early": sorted(self.stopped_early),
            "seconds": self.seconds,
        }
        atomic_write_text(self.outcome_file, json.dumps(outcome, indent=2) + "\n")


def read_outcome(path: str | Path) -> dict | None:
    """What the callback wrote at the end of the experiment (None if it never got there):
    ``{interrupted, runs: {trial id: MLflow run id}, stopped_early: [trial ids], seconds}``."""
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


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
