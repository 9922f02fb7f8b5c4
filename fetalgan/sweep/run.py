"""Running and resuming a sweep: ``run_sweep(path)`` is the driver, one named step after
another, each taking and filling the :class:`SweepRun` the steps share:

1. :func:`load_run`: the sweep file loaded and checked (the one loader, ``config.load_sweep``);
   on ``resume`` the settings it started with and its saved tracking state;
2. :func:`connect_tracker`: MLflow before Ray starts (an unreachable store fails first);
3. inside :func:`~fetalgan.sweep.cluster.ray_session` (Ray connected or started, the cluster
   checked):
   :func:`open_experiment` (the experiment folder and the files kept in it),
   :func:`open_tracking` (the parent run, the write queue), the real-image statistics warmed
   (:func:`warm_real_statistics`), :func:`build_tuner` (a new ``Tuner``, or
   ``Tuner.restore`` on ``resume``) and its fit, during which SIGTERM is turned into Tune's
   SIGUSR1, save and stop (:func:`~fetalgan.sweep.cluster.term_saves`);
4. :func:`finish`: the tracking writes drained, the final selection, the summary, the parent
   run ended and the best model registered.

The experiment lives in ``<storage>/<name>`` (:mod:`fetalgan.sweep.experiment`). Benchmarks and
tests change the driver through one :class:`RunOptions`.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fetalgan.config import (
    SweepConfig,
    expected_trials,
    load_sweep,
    space_values,
    to_dict,
)
from fetalgan.evaluation import Objective
from fetalgan.sweep import space
from fetalgan.sweep.cluster import (
    ray_session,
    term_saves,
)
from fetalgan.sweep.experiment import (
    OUTCOME_FILE,
    SAVED_SWEEP,
    SELECTION_DIR,
    absolute_paths,
    absolute_select_paths,
    check_unedited,
    disk_use,
    prepare_experiment_dir,
    read_state,
    save_sweep,
    storage_root,
    write_state,
)
from fetalgan.sweep.select import final_selection
from fetalgan.sweep.summary import print_summary, summarise
from fetalgan.sweep.trainable import TrialSpec, sweep_trial, trial_dirname
from fetalgan.tracking.names import EXPERIMENT_PATH_TAG


@dataclass(frozen=True)
class RunOptions:
    """What benchmarks and tests change in the driver (a user never needs to)."""

    tracking: bool = True  # False: no MLflow at all (bench/sweep_overhead.py's untracked side)
    warm_statistics: bool = True  # False: the driver does not warm the reference statistics
    # In place of ``sweep_trial``: a function trainable ``(config, spec)`` (e.g. the light
    # trials of bench/tracking_load.py).
    trial_fn: Callable[[dict, TrialSpec], None] | None = None


@dataclass
class Stopwatch:
    """Seconds spent inside ``with stopwatch:`` blocks, summed."""

    seconds: float = 0.0
    _since: float = field(default=0.0, repr=False)

    def __enter__(self) -> Stopwatch:
        self._since = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds += time.perf_counter() - self._since


@dataclass
class SweepRun:
    """One invocation of the driver: what :func:`run_sweep`'s steps pass from one to the next."""

    source: str | Path | SweepConfig  # the sweep file, or a config given directly
    cfg: SweepConfig  # as it runs: the saved one on resume, with absolute paths
    root: Path  # Tune's storage; the experiment is root / cfg.name
    resume: bool
    verbose: int
    options: RunOptions
    saved_state: dict  # what the resumed sweep left in STATE_FILE: parent run, tracking URI
    started: float  # time.perf_counter() when the driver started
    tracking_time: Stopwatch = field(default_factory=Stopwatch)  # driver time on MLflow
    tracker: Any = None  # SweepTracker when tracking
    tracker_args: dict | None = None  # SweepTracker's arguments + parent_run_id (queue, callback)
    queue: Any = None  # the tracking write queue (tracking.write_queue.WriteQueue)

    @property
    def exp_dir(self) -> Path:
        return self.root / self.cfg.name

    @property
    def outcome_file(self) -> Path:
        return self.exp_dir / OUTCOME_FILE

    @property
    def objective(self) -> Objective:
        return Objective(self.cfg.metric, self.cfg.mode)

    @property
    def population_based(self) -> bool:
        """PBT/PB2: trials exploit each other's checkpoints."""
        return self.cfg.scheduler.kind in ("pbt", "pb2")


def run_sweep(
    path_or_cfg: str | Path | SweepConfig,
    *,
    resume: bool = False,
    storage: str | Path | None = None,
    tracking_uri: str | None = None,
    overrides: Iterable[str] = (),
    verbose: int = 1,
    options: RunOptions | None = None,
) -> dict:
    """Run (or ``resume``) a sweep; print and return a summary (see ``summary.summarise``),
    with ``wall_s`` and, when tracking, ``tracking_s`` (driver time spent on MLflow).
    ``verbose``: 0 the summary only; 1 also fetalgan's progress (a table of the trials, stops,
    failures: :mod:`fetalgan.sweep.progress`); 2 also Ray's own output (Tune's status, the
    trials' output, Ray's INFO lines when logging is at INFO: ``fetalgan sweep -v``); 3 Tune
    at its most verbose.
    ``overrides``: ``--set`` items, sweep-file keys (``max_concurrent=16``,
    ``scheduler.max_t=50``) or base keys (``lr_g=1e-3``). ``options``: the benchmarks' and
    tests' switches (:class:`RunOptions`: no tracking, no statistics warm-up, another trial
    function).

    Tracking writes go through the experiment's write queue; after the fit the driver waits
    for it to drain (``$FETALGAN_TRACKING_WAIT`` seconds at most, default 600, 60 after an
    interruption) and, if the store still does not answer, ends saying what is queued; the
    next ``--resume`` replays it."""
    run = load_run(
        path_or_cfg,
        resume=resume,
        storage=storage,
        overrides=list(overrides),
        verbose=verbose,
        options=options or RunOptions(),
    )
    connect_tracker(run, tracking_uri)  # MLflow first: an unreachable server fails before Ray
    with ray_session(run.cfg, verbose):  # the cluster checked before anything is written
        open_experiment(run)
        open_tracking(run)
        if run.options.warm_statistics:
            warm_real_statistics(run.cfg)
        tuner = build_tuner(run)
        with term_saves():  # Slurm/scancel's TERM: save and stop like USR1
            grid = tuner.fit()
    return finish(run, grid)


def load_run(
    source: str | Path | SweepConfig,
    *,
    resume: bool,
    storage: str | Path | None,
    overrides: list[str],
    verbose: int,
    options: RunOptions,
) -> SweepRun:
    """The sweep as this invocation runs it, nothing written yet. On ``resume`` the settings
    it started with (the file only names it; an edit since is refused, see
    :func:`check_unedited`) and the tracking state it left; relative paths made absolute; with
    a final selection, its real image sets checked apart before anything starts."""
    started = time.perf_counter()
    cfg = load_sweep(source, overrides)
    root = storage_root(cfg, storage)
    exp_dir = root / cfg.name
    saved_state = read_state(exp_dir) if resume else {}
    if resume and (exp_dir / SAVED_SWEEP).is_file():
        cfg = load_sweep(exp_dir / SAVED_SWEEP)
        if not isinstance(source, SweepConfig):
            check_unedited(Path(source), exp_dir, overrides, cfg)
    cfg = dataclasses.replace(cfg, base=absolute_paths(cfg.base, Path.cwd()))
    cfg = absolute_select_paths(cfg, Path.cwd())
    if cfg.select is not None and options.tracking:
        from fetalgan.data.splits import check_real_sets

        check_real_sets(cfg)  # no set shares an image with another
    return SweepRun(
        source=source,
        cfg=cfg,
        root=root,
        resume=resume,
        verbose=verbose,
        options=options,
        saved_state=saved_state,
        started=started,
    )


def connect_tracker(run: SweepRun, tracking_uri: str | None) -> None:
    """``run.tracker``: the sweep's MLflow experiment on ``tracking_uri``, else the store the
    resumed sweep used, else the default (none with ``RunOptions(tracking=False)``)."""
    if not run.options.tracking:
        return
    with run.tracking_time:
        from fetalgan.tracking import SweepTracker

        run.tracker = SweepTracker(
            run.cfg.name,
            objective=run.objective,
            tracking_uri=tracking_uri or run.saved_state.get("tracking_uri"),
            checkpoint_epochs=tuple(run.cfg.checkpoint_epochs),
        )


def open_experiment(run: SweepRun) -> None:
    """The experiment folder: a new one (an earlier one moved aside) or, on resume, the one
    Tune can restore; the sweep as it runs and the sweep file kept in it; the tracking
    callback's outcome of an earlier run removed."""
    prepare_experiment_dir(run.exp_dir, run.resume)
    save_sweep(run.exp_dir, run.cfg, run.source)
    run.outcome_file.unlink(missing_ok=True)


def open_tracking(run: SweepRun) -> None:
    """The sweep's MLflow parent run (the resumed sweep's own on resume), given the sweep as it
    runs, and its id kept in ``STATE_FILE``; the experiment's write queue opened before Tune
    starts, replaying what an earlier driver left queued."""
    if run.tracker is None:
        return
    tracker = run.tracker
    with run.tracking_time:
        tracker.start_parent(
            run.saved_state.get("parent_run_id"), tags={EXPERIMENT_PATH_TAG: str(run.exp_dir)}
        )
        tracker.log_sweep_config((run.exp_dir / SAVED_SWEEP).read_text())
        write_state(run.exp_dir, tracker.parent_run_id, tracker.tracking_uri)
    from fetalgan.sweep.callback import QUEUE_DIR
    from fetalgan.tracking.write_queue import open_write_queue

    tracker_args = {
        "experiment": run.cfg.name,
        "objective": run.objective,
        "tracking_uri": tracker.tracking_uri,
        "checkpoint_epochs": tuple(run.cfg.checkpoint_epochs),
        "parent_run_id": tracker.parent_run_id,
    }
    run.tracker_args = tracker_args
    queue = open_write_queue(run.exp_dir / QUEUE_DIR, tracker_args)
    if queue.replayed_from_disk:
        print(f"fetalgan sweep: replaying {queue.describe()}")
    run.queue = queue


def warm_real_statistics(cfg: SweepConfig) -> None:
    """Compute the cached statistics of the evaluation reference (``eval_reference``) once in
    the driver, so trials read them instead of each computing them. Covers the base config and
    every listed value of the keys that can change the reference (``data.*``,
    ``eval_reference.*``, ``resolution``, ``model``, ``fid_dims``, ``fid_weights``); trials
    that differ only in ``data.size`` or ``seed`` share one reference and one cache entry."""
    from fetalgan.config import reference_data
    from fetalgan.data import load_reference_images
    from fetalgan.data.cache import statistics_dir
    from fetalgan.metrics.stats import real_statistics, reference_key
    from fetalgan.models import registry

    if not {"fid", "kid"} & set(cfg.base.eval_metrics):
        return  # LBPv and the paired metrics are computed by each trial without the network
    changes_reference = ("data.", "eval_reference.")
    keys = [
        k
        for k in cfg.space
        if k.startswith(changes_reference)
        or k in ("resolution", "model", "fid_dims", "fid_weights")
    ]
    options = [[(k, v) for v in (space_values(cfg.space[k]) or [])] for k in keys]
    options = [o for o in options if o]
    combos = [dict(c) for c in itertools.product(*options)] if options else [{}]
    base = to_dict(cfg.base)
    t0 = time.perf_counter()
    seen: set[str] = set()
    for combo in combos[:32]:
        tc = space.trial_config(base, combo)
        resolution = registry.spec(tc.model).real_resolution(tc)
        ref = reference_data(tc)
        which = repr((ref, tc.eval_reference.seed, resolution, tc.fid_dims, tc.fid_weights))
        if which in seen:
            continue
        seen.add(which)
        reference = load_reference_images(tc, resolution)
        real_statistics(
            reference.images,
            key=reference_key(reference.images),
            weights=tc.fid_weights,
            dims=tc.fid_dims,
            stats_dir=statistics_dir(ref.cache_dir),
        )
    seconds = time.perf_counter() - t0
    print(f"fetalgan sweep: reference statistics ready ({len(seen)} set(s), {seconds:.1f} s)")


def describe_sweep(cfg: SweepConfig, max_concurrent: int, exp_dir: Path, tracker) -> str:
    """One line saying what is about to run and where it goes."""
    trials = expected_trials(cfg)
    auto = " (max_concurrent auto)" if cfg.max_concurrent == "auto" else ""
    scheduler = "ASHA" if cfg.scheduler.kind == "asha" else "no early stopping"
    where = f"; MLflow {tracker.tracking_uri}" if tracker is not None else ""
    return (
        f"{cfg.name}: {trials} trial(s), {max_concurrent} at a time{auto}; {cfg.search.kind} "
        f"search, {scheduler}, on {cfg.metric} ({cfg.mode}); Tune storage {exp_dir}{where}"
    )


def trial_spec(run: SweepRun) -> TrialSpec:
    """What every trial of the sweep is given (see :class:`TrialSpec`)."""
    cfg = run.cfg
    return TrialSpec(
        name=cfg.name,
        base=to_dict(cfg.base),
        encoded=space.encoded_keys(cfg),
        objective=run.objective,
        workers_per_trial=cfg.workers_per_trial,
        cpu=cfg.resources.cpu,
        gpu=cfg.resources.gpu,
        ddp_storage=str(run.exp_dir / "ddp"),
        experiment_dir=str(run.exp_dir),
        parent_run_id=run.tracker.parent_run_id if run.tracker is not None else None,
        keep_candidates=cfg.select.per_trial if cfg.select is not None else 1,
        rank_window=cfg.rank_window if cfg.rank_by == "window" else None,
        pbt_keys=list(cfg.space) if run.population_based else [],
    )


def trial_resources(cfg: SweepConfig) -> dict[str, float]:
    """What Tune reserves for one trial."""
    if cfg.workers_per_trial > 1:
        # The trial only drives a Ray Train run whose workers reserve their own resources
        # (Tune refuses an empty request, hence a sliver of a CPU).
        return {"cpu": 0.01}
    return {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu}


def build_tuner(run: SweepRun):
    """Tune's ``Tuner`` for the sweep: a new one, or on resume the saved experiment restored.
    The restored experiment keeps its search state, trials and RunConfig: its tracking
    callback is rebuilt from the pickled arguments (same store, parent run and outcome file),
    so nothing of this invocation's needs to be put into it."""
    from ray import tune

    cfg, spec = run.cfg, trial_spec(run)
    trainable = tune.with_resources(
        tune.with_parameters(run.options.trial_fn or sweep_trial, spec=spec),
        trial_resources(cfg),
    )
    if run.resume:
        if run.verbose >= 1:
            print(f"fetalgan sweep: resuming {cfg.name} from {run.exp_dir}")
        return tune.Tuner.restore(
            str(run.exp_dir), trainable, resume_unfinished=True, resume_errored=True
        )
    scheduler = space.scheduler(cfg)
    run_config = tune_run_config(run, spec, scheduler)
    max_concurrent = space.concurrency(cfg)
    if run.verbose >= 1:
        print(f"fetalgan sweep: {describe_sweep(cfg, max_concurrent, run.exp_dir, run.tracker)}")
    return tune.Tuner(
        trainable,
        param_space=space.build_param_space(cfg),
        tune_config=tune.TuneConfig(
            metric=space.tune_metric(cfg),  # rank_by: the latest value or the best
            mode=cfg.mode,
            search_alg=space.searcher(cfg, max_concurrent),
            scheduler=scheduler,
            num_samples=cfg.num_samples,
            trial_dirname_creator=trial_dirname,
            # A finished trial's process takes the next one: torch and fetalgan stay
            # imported (seconds per trial). Data-parallel trials start their own workers.
            reuse_actors=cfg.workers_per_trial == 1,
            trial_name_creator=trial_dirname,
        ),
        run_config=run_config,
    )


def tune_run_config(run: SweepRun, spec: TrialSpec, scheduler):
    """A new sweep's ``RunConfig``: storage, failures, checkpoints kept, Tune's own output, and
    the driver's callbacks (no retry after a non-finite loss; PBT/PB2's checkpoint pruner;
    fetalgan's progress; tracking)."""
    from ray import tune

    from fetalgan.sweep.nonfinite import NoRetryAfterNonFinite

    callbacks = [NoRetryAfterNonFinite(str(run.exp_dir))]  # a diverged trial: no Tune retries
    if spec.pbt_keys:  # PBT/PB2: the checkpoints exploits still need outlive Tune's rotation
        from fetalgan.sweep.pbt import checkpoint_pruner

        callbacks.append(checkpoint_pruner(scheduler))
    if run.verbose >= 1:
        from fetalgan.sweep.progress import SweepProgress

        callbacks.append(SweepProgress(run.cfg, spec))
    if run.tracker is not None:
        from fetalgan.sweep.callback import TrackingCallback

        callbacks.append(TrackingCallback(run.tracker_args, spec, str(run.outcome_file)))
    return tune.RunConfig(
        name=run.cfg.name,
        storage_path=str(run.root),
        callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=run.cfg.max_failures),
        # One full state per trial: the latest (Tune writes the next before dropping it).
        # PBT/PB2: fetalgan's pruner instead (pbt.checkpoint_pruner: a donor's state must
        # outlive Tune's rotation until its recipient has restored from it).
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None if spec.pbt_keys else 1),
        # PBT/PB2: a trial's last result ends it before the scheduler sees it, so no trial is
        # made to copy another's state at its last epoch (it would end holding the donor's
        # weights as its last state, with nothing left to train)
        stop={"epoch": run.cfg.base.epochs} if spec.pbt_keys else None,
        verbose=max(0, run.verbose - 1),  # Tune's own output: fetalgan sweep -v
    )


def finish(run: SweepRun, grid) -> dict:
    """After the fit: the tracking writes drained, PBT's lineage logged, and for a sweep that
    finished with nothing left queued its final selection and its checkpoints no exploit
    needs any more removed; the summary, the parent run ended (best tagged and registered
    unless interrupted), printed and returned."""
    cfg, tracker = run.cfg, run.tracker
    outcome = tracking_outcome(run)
    # A stop signal between two trials leaves every started trial finished: also count them.
    interrupted = (outcome["interrupted"] if outcome else _grid_unfinished(grid)) or len(
        grid
    ) < expected_trials(cfg)
    queued = 0
    if run.queue is not None:
        queued = _drain(run.queue, interrupted)
        outcome["runs"].update(run.queue.runs)
    complete = not interrupted and not queued
    if tracker is not None and run.population_based:  # also when interrupted: so far
        from fetalgan.sweep import pbt

        tracker.log_lineage(pbt.lineage(run.exp_dir))
    selection, selection_time = None, Stopwatch()
    if tracker is not None and cfg.select is not None and complete:
        with selection_time:
            selection = final_selection(
                cfg, tracker, run.exp_dir / SELECTION_DIR, progress=sys.stderr.isatty()
            )
    if run.population_based and complete:  # no exploit needs them any more
        from fetalgan.sweep.pbt import prune_finished

        prune_finished(run.exp_dir)
    summary = summarise(cfg, grid, run.exp_dir, outcome, tracker, interrupted, selection)
    summary["selection"] = selection
    summary["selection_s"] = selection_time.seconds
    if tracker is not None:
        summary["tracking_queued"] = queued
        if not queued:  # the parent's best and registry read the trials' runs: all are in
            end_parent(run, summary, interrupted)
        summary["tracking_s"] = run.tracking_time.seconds + outcome["seconds"]
    summary["disk"] = disk_use(run.exp_dir, tracker)
    summary["wall_s"] = time.perf_counter() - run.started
    print_summary(summary)
    return summary


def tracking_outcome(run: SweepRun) -> dict | None:
    """What the tracking callback reported at the experiment's end (``callback.read_outcome``);
    None without tracking."""
    if run.tracker is None:
        return None
    from fetalgan.sweep.callback import read_outcome

    outcome = read_outcome(run.outcome_file)
    if outcome is None:
        raise RuntimeError(f"{run.outcome_file}: the tracking callback did not report its outcome")
    return outcome


def end_parent(run: SweepRun, summary: dict, interrupted: bool) -> None:
    """The parent run ended (KILLED when interrupted); a finished sweep's best run tagged and
    its model registered, the version put into ``summary["best"]``."""
    with run.tracking_time:
        best = run.tracker.finish_parent(
            "KILLED" if interrupted else "FINISHED", register=not interrupted
        )
    if best is not None and summary["best"] is not None:
        summary["best"]["registered_version"] = best.get("model_version")


def _drain(queue, interrupted: bool) -> int:
    """Wait (bounded) for the tracking writes to reach the store; the number still queued,
    said with how they will be replayed."""
    limit = float(os.environ.get("FETALGAN_TRACKING_WAIT") or 600)
    if interrupted:
        limit = min(limit, 60.0)  # e.g. the job's time limit is near
    if queue.pending():
        print(f"fetalgan sweep: waiting up to {limit:.0f} s for {queue.describe()}", flush=True)
    drained = queue.drain(limit, say=lambda text: print(text, flush=True))
    left = 0 if drained else queue.pending()
    if left:
        print(
            f"fetalgan sweep: {queue.describe()}. They stay on disk and are replayed in order "
            "by `fetalgan sweep FILE --resume` (same --storage) once the store answers; until "
            "then their trials' runs may show RUNNING and the sweep run is not finished (no "
            "best run tagged or registered).",
            flush=True,
        )
    queue.close()
    return left


def _grid_unfinished(grid) -> bool:
    return (
        any(r.metrics is None or not r.metrics.get("done", True) for r in grid)
        if len(grid)
        else True
    )
