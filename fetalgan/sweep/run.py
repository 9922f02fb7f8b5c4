"""Running and resuming a sweep: ``run_sweep(path)`` loads and checks the sweep file (the one
loader, ``config.load_sweep``), opens tracking before Ray starts (an unreachable store fails
first), warms the real-image statistics, builds the Tuner and fits it; SIGTERM is turned into
Tune's SIGUSR1 (save and stop), and ``resume=True`` continues a saved experiment with
``Tuner.restore``.

The experiment lives in ``<storage>/<name>`` (storage: ``storage=``, else the file's
``storage``, else ``$FETALGAN_STORAGE``, else ``./ray_results``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import yaml

from fetalgan.config import (
    SweepConfig,
    TrainConfig,
    expected_trials,
    flatten,
    load_sweep,
    read_yaml,
    space_values,
    sweep_overrides,
    to_dict,
)
from fetalgan.evaluation import Objective
from fetalgan.sweep import space
from fetalgan.sweep.summary import print_summary, summarise
from fetalgan.sweep.trainable import TrialSpec, sweep_trial, trial_dirname
from fetalgan.tracking.names import EXPERIMENT_PATH_TAG

STATE_FILE = "fetalgan_sweep.json"  # in the experiment dir: parent run id, tracking URI
SAVED_SWEEP = "fetalgan_sweep.yaml"  # in the experiment dir: the sweep as started (for resume)
SAVED_FILE = "fetalgan_sweep_file.yaml"  # in the experiment dir: the sweep file as first read
OUTCOME_FILE = "fetalgan_outcome.json"  # in the experiment dir: the tracking callback's outcome


def storage_root(cfg: SweepConfig, storage: str | Path | None = None) -> Path:
    """``storage``, else the file's ``storage``, else ``$FETALGAN_STORAGE``, else
    ``./ray_results`` — as an absolute path."""
    return Path(
        storage or cfg.storage or os.environ.get("FETALGAN_STORAGE") or "ray_results"
    ).resolve()


def absolute_paths(base: TrainConfig, cwd: Path) -> TrainConfig:
    """Relative dataset/cache/weights paths made absolute (trials run in other directories);
    a copy with the paths replaced, nothing rebuilt or re-validated."""

    def absolute(path: str | None) -> str | None:
        return str(cwd / path) if path and not Path(path).is_absolute() else path

    data = dataclasses.replace(
        base.data, root=absolute(base.data.root), cache_dir=absolute(base.data.cache_dir)
    )
    return dataclasses.replace(base, data=data, fid_weights=absolute(base.fid_weights))


def absolute_select_paths(cfg: SweepConfig, cwd: Path) -> SweepConfig:
    """``select.reference``/``select.test_reference`` roots and caches made absolute."""
    if cfg.select is None:
        return cfg

    def absolute(ref):
        def path(value: str | None) -> str | None:
            return str(cwd / value) if value and not Path(value).is_absolute() else value

        return dataclasses.replace(ref, root=path(ref.root), cache_dir=path(ref.cache_dir))

    select = dataclasses.replace(
        cfg.select,
        reference=absolute(cfg.select.reference),
        test_reference=absolute(cfg.select.test_reference),
    )
    return dataclasses.replace(cfg, select=select)


def warm_real_statistics(cfg: SweepConfig) -> None:
    """Compute the cached statistics of the evaluation reference (``eval_reference``) once in
    the driver, so trials read them instead of each computing them. Covers the base config and
    every listed value of the keys that can change the reference (``data.*``,
    ``eval_reference.*``, ``resolution``, ``model``, ``fid_dims``, ``fid_weights``); trials
    that differ only in ``data.size`` or ``seed`` share one reference and one cache entry."""
    from fetalgan.config import reference_data
    from fetalgan.data import load_reference_images
    from fetalgan.metrics.stats import real_statistics, reference_key
    from fetalgan.models import family

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
        resolution = getattr(family(tc.model), "real_resolution", lambda c: c.resolution)(tc)
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
            cache_dir=ref.cache_dir,
        )
    seconds = time.perf_counter() - t0
    print(f"fetalgan sweep: reference statistics ready ({len(seen)} set(s), {seconds:.1f} s)")


def _prepare_experiment_dir(exp_dir: Path, resume: bool) -> None:
    from ray.tune import Tuner

    if resume:
        if not Tuner.can_restore(str(exp_dir)):
            raise FileNotFoundError(
                f"{exp_dir}: no sweep to resume there (run it without --resume first, or pass "
                "the --storage it used)"
            )
        return
    if exp_dir.exists():
        moved = exp_dir.with_name(f"{exp_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        exp_dir.rename(moved)
        print(
            f"fetalgan sweep: moved the earlier experiment {exp_dir} to {moved} "
            "(use --resume to continue one)"
        )
    exp_dir.mkdir(parents=True)


def check_unedited(path: Path, exp_dir: Path, overrides: list[str], saved: SweepConfig) -> None:
    """On ``--resume``: ``ValueError`` listing every key of the sweep file ``path`` that differs
    from the file the sweep started with (a resumed sweep keeps its starting settings, so an
    edit would be silently ignored); ``--set`` items are allowed, and each that differs from
    the starting value is printed. Experiments started before the file was kept: not checked."""
    started = exp_dir / SAVED_FILE
    if not started.is_file():
        return
    then, now = flatten(read_yaml(started)), flatten(read_yaml(path))
    absent = "<absent>"
    edited = [k for k in sorted(set(then) | set(now)) if then.get(k, absent) != now.get(k, absent)]
    if edited:
        shown = "; ".join(f"{k}: {then.get(k, absent)!r} -> {now.get(k, absent)!r}" for k in edited)
        raise ValueError(
            f"{path}: edited since the sweep started (kept in {started}): {shown}. A resumed "
            f"sweep keeps its starting settings: undo the edit, or move {exp_dir} away to start "
            "a new sweep"
        )
    kept = flatten(to_dict(saved))
    for item in sweep_overrides(overrides):
        key, _, text = item.partition("=")
        key = key.strip()
        if key in kept and yaml.safe_load(text) != kept[key]:
            print(
                f"fetalgan sweep: --set {item.removeprefix('base.')}: the resumed sweep keeps "
                f"{key} = {kept[key]!r}"
            )


def ray_address() -> str | None:
    """``$RAY_ADDRESS``; empty or blank counts as unset (a local Ray)."""
    return (os.environ.get("RAY_ADDRESS") or "").strip() or None


def _local_ray_token() -> None:
    """Token authentication for a Ray this sweep starts itself: ``RAY_AUTH_MODE=token`` and a
    fresh random ``RAY_AUTH_TOKEN`` in this process's environment, which every Ray process
    started from it inherits, so nobody else reaching its ports can run code as this user (a
    token left in ``~/.ray/auth_token`` or the caller's ``RAY_AUTH_*`` are not used)."""
    import secrets

    from ray._raylet import AuthenticationTokenLoader, Config

    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    # Ray read both when it was imported; re-read them, as its own `_enable_token_auth` does.
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def ray_output(verbose: int) -> None:
    """Ray's own output for ``run_sweep``'s ``verbose``, set before Ray starts. Ray's loggers
    (and Optuna's, see ``space.searcher``) follow the level fetalgan's logging is set to
    (``fetalgan sweep`` default WARNING, ``-v`` INFO, ``-vv`` DEBUG). Below 2 (fetalgan's own
    lines only), Tune's documented switches: no traceback of a failed trial (the progress line
    gives its reason and its ``error.txt``), no warning that experiment snapshots come often
    (every trial checkpoint forces one with ``num_to_keep=1``, by design here), and Tune's
    legacy output engine, which at verbosity 0 prints nothing (the new one prints its
    experiment header and TensorBoard hint whatever the verbosity)."""
    import logging

    if verbose < 2:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    logging.getLogger("ray").setLevel(logging.getLogger().getEffectiveLevel())


def _ensure_ray(verbose: int = 1) -> bool:
    """Connect to ``$RAY_ADDRESS`` (with the ``RAY_AUTH_*`` the caller gives, e.g.
    slurm/ray_cluster.sh's per-job token) or start a local Ray with a fresh token (see
    :func:`_local_ray_token`); True if this call started it. The trials' own output (Ray's
    checkpoint lines, their warnings and tracebacks, which also land in each trial's
    ``error.txt`` and Ray's worker logs) reaches this console only with ``verbose`` >= 2."""
    import logging

    import ray

    if ray.is_initialized():
        return False
    address = ray_address()
    if address is None:
        os.environ.pop("RAY_ADDRESS", None)  # Ray itself reads it too
        _local_ray_token()
    else:  # a cluster without a token of its own: do not pick up a stale ~/.ray/auth_token
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        address=address,
        include_dashboard=False,
        log_to_driver=verbose >= 2,
        logging_level=logging.getLogger().getEffectiveLevel(),  # the driver's "ray" logger
    )
    return True


def disk_use(exp_dir: Path, tracker) -> dict[str, dict]:
    """Bytes on disk under the sweep's Tune storage and (when on this machine) its MLflow
    artefacts: ``{"storage": {"path", "bytes"}, "artifacts": {"path", "bytes"} | None}``."""
    from fetalgan.files import disk_usage

    out = {"storage": {"path": str(exp_dir), "bytes": disk_usage(exp_dir)}, "artifacts": None}
    artifacts = tracker.artifact_dir() if tracker is not None else None
    if artifacts is not None:
        out["artifacts"] = {"path": str(artifacts), "bytes": disk_usage(artifacts)}
    return out


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


SELECTION_DIR = "selection"  # in the experiment dir: score cache, fetched candidates, result


def final_selection(
    cfg: SweepConfig, tracker, selection_dir: Path, *, progress: bool = True
) -> dict | None:
    """The final selection stage of a finished sweep (``cfg.select``; see
    :mod:`fetalgan.selection`): candidates from the sweep's MLflow runs, every score cached in
    ``selection_dir`` (a rerun after an interruption continues), the result logged on the
    parent run and the candidates' runs; None when the sweep has no ``select``."""
    if cfg.select is None:
        return None
    from fetalgan.selection import (
        CACHE_FILE,
        SELECTION_FILE,
        Candidate,
        run_selection,
        write_result,
    )
    from fetalgan.tracking.queries import download_checkpoint, selection_candidates

    rows = selection_candidates(
        cfg.name,
        parent_run_id=tracker.parent_run_id,
        top_k=cfg.select.top_k,
        per_trial=cfg.select.per_trial,
        tracking_uri=tracker.tracking_uri,
    )
    candidates = [Candidate(**row) for row in rows]

    def fetch(candidate: Candidate) -> Path:
        folder = selection_dir / "candidates" / candidate.run_id / Path(candidate.artifact).parent
        local = folder / Path(candidate.artifact).name
        if local.is_file():  # kept: a resumed selection does not download it again
            return local
        return download_checkpoint(
            f"runs:/{candidate.run_id}/{candidate.artifact}",
            folder,
            tracking_uri=tracker.tracking_uri,
        )

    result = run_selection(
        cfg, candidates, fetch, cache_path=selection_dir / CACHE_FILE, progress=progress
    )
    result["parent_run_id"] = tracker.parent_run_id
    write_result(selection_dir / SELECTION_FILE, result)
    tracker.log_selection(result)
    # The fetched weights were kept for a resumed selection; done, MLflow has them.
    shutil.rmtree(selection_dir / "candidates", ignore_errors=True)
    return result


def select_sweep(
    name: str,
    *,
    overrides: Iterable[str] = (),
    parent_run_id: str | None = None,
    tracking_uri: str | None = None,
    selection_dir: str | Path | None = None,
) -> dict:
    """``fetalgan select NAME``: run the final selection again on a finished sweep (its latest
    sweep run, or ``parent_run_id``), with the sweep file it ran with and ``overrides``
    (``select.top_k=5``, ``select.n_fake=2048``, ``select.metric=kid_mean``; a sweep that ran
    without ``select`` needs at least its two references). Scores are cached in
    ``selection_dir`` (default: the sweep's experiment folder when it is on this machine, else
    ``$FETALGAN_CACHE/selection/<run id>``); the result is logged on the sweep run, the best
    tag and the registry alias ``best`` move to the winner. Returns the selection record with
    ``registered_version``."""
    import tempfile

    from fetalgan.data.cache import cache_root
    from fetalgan.data.splits import check_real_sets
    from fetalgan.tracking import SweepTracker
    from fetalgan.tracking.queries import sweep_parent_run

    parent = sweep_parent_run(name, parent_run_id=parent_run_id, tracking_uri=tracking_uri)
    with tempfile.TemporaryDirectory(prefix="fetalgan-select-") as tmp:
        from fetalgan.tracking.names import SWEEP_ARTIFACT
        from fetalgan.tracking.queries import download_run_artifact

        saved = download_run_artifact(
            parent["run_id"], SWEEP_ARTIFACT, tmp, tracking_uri=tracking_uri
        )
        if saved is None:
            raise ValueError(f"sweep run {parent['run_id']} of {name} has no {SWEEP_ARTIFACT}")
        cfg = load_sweep(saved, list(overrides))
    if cfg.select is None:
        raise ValueError(
            f"sweep {name} (run {parent['run_id']}) ran without a select section: give its "
            "references, e.g. --set select.reference.skip=512 --set select.reference.size=1024 "
            "--set select.test_reference.skip=1536 --set select.test_reference.size=1024"
        )
    cfg = absolute_select_paths(cfg, Path.cwd())
    check_real_sets(cfg)
    tracker = SweepTracker(
        cfg.name, objective=Objective(cfg.metric, cfg.mode), tracking_uri=tracking_uri
    )
    tracker.parent_run_id = parent["run_id"]
    if selection_dir is None:
        experiment_path = Path(parent.get("experiment_path") or "/nonexistent")
        selection_dir = (
            experiment_path / SELECTION_DIR
            if experiment_path.is_dir()
            else cache_root() / "selection" / parent["run_id"]
        )
    result = final_selection(cfg, tracker, Path(selection_dir))
    best = tracker.finish_parent(None, register=True)
    result["registered_version"] = best.get("model_version") if best else None
    return result


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


def check_cluster(cfg: SweepConfig) -> None:
    """``ValueError`` when no trial of ``cfg`` fits the connected Ray cluster (see
    ``space.check_resources``)."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    space.check_resources(cfg, ray.cluster_resources(), nodes)


def _grid_unfinished(grid) -> bool:
    return (
        any(r.metrics is None or not r.metrics.get("done", True) for r in grid)
        if len(grid)
        else True
    )


def run_sweep(
    path_or_cfg: str | Path | SweepConfig,
    *,
    resume: bool = False,
    storage: str | Path | None = None,
    tracking_uri: str | None = None,
    overrides: Iterable[str] = (),
    tracking: bool = True,
    verbose: int = 1,
    warm_statistics: bool = True,
    trial_fn=None,
) -> dict:
    """Run (or ``resume``) a sweep; print and return a summary (see ``summary.summarise``),
    with ``wall_s`` and, when tracking, ``tracking_s`` (driver time spent on MLflow).
    ``verbose``: 0 the summary only; 1 also fetalgan's progress (a table of the trials, stops,
    failures: :mod:`fetalgan.sweep.progress`); 2 also Ray's own output (Tune's status, the
    trials' output, Ray's INFO lines when logging is at INFO: ``fetalgan sweep -v``); 3 Tune
    at its most verbose.
    ``overrides``: ``--set`` items, sweep-file keys (``max_concurrent=16``,
    ``scheduler.max_t=50``) or base keys (``lr_g=1e-3``). ``tracking=False`` skips MLflow
    (used by the overhead benchmark). ``trial_fn``: a function trainable ``(config, spec)`` in
    place of ``sweep_trial`` (the tracking load benchmark's light trials).

    Tracking writes go through the experiment's write queue; after the fit the driver waits
    for it to drain (``$FETALGAN_TRACKING_WAIT`` seconds at most, default 600, 60 after an
    interruption) and, if the store still does not answer, ends saying what is queued; the
    next ``--resume`` replays it."""
    t_start = time.perf_counter()
    overrides = list(overrides)
    cfg = load_sweep(path_or_cfg, overrides)
    root = storage_root(cfg, storage)
    exp_dir = root / cfg.name
    state_file = exp_dir / STATE_FILE
    state = json.loads(state_file.read_text()) if resume and state_file.is_file() else {}
    if resume and (exp_dir / SAVED_SWEEP).is_file():
        # A resumed sweep keeps the settings it started with (the file only names it).
        cfg = load_sweep(exp_dir / SAVED_SWEEP)
        if not isinstance(path_or_cfg, SweepConfig):
            check_unedited(Path(path_or_cfg), exp_dir, overrides, cfg)
    cfg = dataclasses.replace(cfg, base=absolute_paths(cfg.base, Path.cwd()))
    cfg = absolute_select_paths(cfg, Path.cwd())
    objective = Objective(cfg.metric, cfg.mode)
    if cfg.select is not None and tracking:
        from fetalgan.data.splits import check_real_sets

        check_real_sets(cfg)  # before anything starts: no set shares an image with another

    # MLflow first: an unreachable server must fail before Ray starts.
    tracker = None
    tracking_setup_s = 0.0  # driver time for MLflow outside the callback (store, parent, end)
    if tracking:
        start = time.perf_counter()
        from fetalgan.tracking import SweepTracker

        tracker = SweepTracker(
            cfg.name,
            objective=objective,
            tracking_uri=tracking_uri or state.get("tracking_uri"),
            checkpoint_epochs=tuple(cfg.checkpoint_epochs),
        )
        tracking_setup_s += time.perf_counter() - start
    ray_output(verbose)
    from ray import tune

    # Ray next: a sweep no trial of which fits the cluster stops before anything is written.
    started_ray = _ensure_ray(verbose)
    try:
        check_cluster(cfg)
    except ValueError:
        if started_ray:
            import ray

            ray.shutdown()
        raise
    _prepare_experiment_dir(exp_dir, resume)
    sweep_yaml = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    (exp_dir / SAVED_SWEEP).write_text(sweep_yaml)
    if not isinstance(path_or_cfg, SweepConfig) and not (exp_dir / SAVED_FILE).is_file():
        (exp_dir / SAVED_FILE).write_text(yaml.safe_dump(read_yaml(path_or_cfg), sort_keys=False))
    if tracker is not None:
        start = time.perf_counter()
        tracker.start_parent(state.get("parent_run_id"), tags={EXPERIMENT_PATH_TAG: str(exp_dir)})
        tracker.log_sweep_config(sweep_yaml)
        state = {"parent_run_id": tracker.parent_run_id, "tracking_uri": tracker.tracking_uri}
        state_file.write_text(json.dumps(state, indent=2) + "\n")
        tracking_setup_s += time.perf_counter() - start
    if warm_statistics:
        warm_real_statistics(cfg)

    spec = TrialSpec(
        name=cfg.name,
        base=to_dict(cfg.base),
        encoded=space.encoded_keys(cfg),
        objective=objective,
        workers_per_trial=cfg.workers_per_trial,
        cpu=cfg.resources.cpu,
        gpu=cfg.resources.gpu,
        ddp_storage=str(exp_dir / "ddp"),
        experiment_dir=str(exp_dir),
        parent_run_id=tracker.parent_run_id if tracker is not None else None,
        keep_candidates=cfg.select.per_trial if cfg.select is not None else 1,
        rank_window=cfg.rank_window if cfg.rank_by == "window" else None,
        pbt_keys=list(cfg.space) if cfg.scheduler.kind in ("pbt", "pb2") else [],
    )
    from fetalgan.sweep.nonfinite import NoRetryAfterNonFinite

    callbacks = [NoRetryAfterNonFinite(str(exp_dir))]  # a diverged trial: no Tune retries
    scheduler = space.scheduler(cfg)
    if spec.pbt_keys:  # PBT/PB2: the checkpoints exploits still need outlive Tune's rotation
        from fetalgan.sweep.pbt import checkpoint_pruner

        callbacks.append(checkpoint_pruner(scheduler))
    if verbose >= 1:
        from fetalgan.sweep.progress import SweepProgress

        callbacks.append(SweepProgress(cfg, spec))
    outcome_file = exp_dir / OUTCOME_FILE
    outcome_file.unlink(missing_ok=True)
    queue = None
    if tracker is not None:
        from fetalgan.sweep.callback import QUEUE_DIR, TrackingCallback
        from fetalgan.tracking.write_queue import open_write_queue

        tracker_args = {
            "experiment": cfg.name,
            "objective": objective,
            "tracking_uri": tracker.tracking_uri,
            "checkpoint_epochs": tuple(cfg.checkpoint_epochs),
            "parent_run_id": tracker.parent_run_id,
        }
        # Opened here, before Tune: a resumed driver replays what the last one left queued.
        queue = open_write_queue(exp_dir / QUEUE_DIR, tracker_args)
        if queue.replayed_from_disk:
            print(f"fetalgan sweep: replaying {queue.describe()}")
        callbacks.append(TrackingCallback(tracker_args, spec, str(outcome_file)))

    if cfg.workers_per_trial > 1:
        # The trial only drives a Ray Train run whose workers reserve their own resources
        # (Tune refuses an empty request, hence a sliver of a CPU).
        resources = {"cpu": 0.01}
    else:
        resources = {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu}
    trainable = tune.with_resources(
        tune.with_parameters(trial_fn or sweep_trial, spec=spec), resources
    )
    run_config = tune.RunConfig(  # (a resumed sweep keeps the one it was started with)
        name=cfg.name,
        storage_path=str(root),
        callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
        # One full state per trial: the latest (Tune writes the next before dropping it).
        # PBT/PB2: fetalgan's pruner instead (pbt.checkpoint_pruner: a donor's state must
        # outlive Tune's rotation until its recipient has restored from it).
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None if spec.pbt_keys else 1),
        verbose=max(0, verbose - 1),  # Tune's own output: fetalgan sweep -v
    )
    if resume:
        if verbose >= 1:
            print(f"fetalgan sweep: resuming {cfg.name} from {exp_dir}")
        # The restored experiment keeps its search state, trials and RunConfig: its tracking
        # callback is rebuilt from the pickled arguments (same store, parent run and outcome
        # file), so nothing of this invocation's needs to be put into it.
        tuner = tune.Tuner.restore(
            str(exp_dir), trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        max_concurrent = space.concurrency(cfg)
        if verbose >= 1:
            print(f"fetalgan sweep: {describe_sweep(cfg, max_concurrent, exp_dir, tracker)}")
        tuner = tune.Tuner(
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

    previous_term = signal.getsignal(signal.SIGTERM)

    def term_to_usr1(signum, frame):  # Slurm/scancel send TERM: save like USR1 does
        os.kill(os.getpid(), signal.SIGUSR1)

    signal.signal(signal.SIGTERM, term_to_usr1)
    try:
        grid = tuner.fit()
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if started_ray:
            import ray

            ray.shutdown()

    from fetalgan.sweep.callback import read_outcome

    outcome = read_outcome(outcome_file) if tracker is not None else None
    if tracker is not None and outcome is None:
        raise RuntimeError(f"{outcome_file}: the tracking callback did not report its outcome")
    # A stop signal between two trials leaves every started trial finished: also count them.
    interrupted = (outcome["interrupted"] if outcome else _grid_unfinished(grid)) or len(
        grid
    ) < expected_trials(cfg)
    queued = 0
    if queue is not None:
        queued = _drain(queue, interrupted)
        outcome["runs"].update(queue.runs)
    if tracker is not None and spec.pbt_keys:  # also when interrupted: what happened so far
        from fetalgan.sweep import pbt

        tracker.log_lineage(pbt.lineage(exp_dir))
    selection = None
    selection_s = 0.0
    if tracker is not None and cfg.select is not None and not interrupted and not queued:
        start = time.perf_counter()
        selection = final_selection(
            cfg, tracker, exp_dir / SELECTION_DIR, progress=sys.stderr.isatty()
        )
        selection_s = time.perf_counter() - start
    if spec.pbt_keys and not interrupted and not queued:  # no exploit needs them any more
        from fetalgan.sweep.pbt import prune_finished

        prune_finished(exp_dir)
    summary = summarise(cfg, grid, exp_dir, outcome, tracker, interrupted, selection)
    summary["selection"] = selection
    summary["selection_s"] = selection_s
    if tracker is not None:
        summary["tracking_queued"] = queued
        start = time.perf_counter()
        if not queued:  # the parent's best and registry read the trials' runs: all are in
            best = tracker.finish_parent(
                "KILLED" if interrupted else "FINISHED", register=not interrupted
            )
            if best is not None and summary["best"] is not None:
                summary["best"]["registered_version"] = best.get("model_version")
        tracking_setup_s += time.perf_counter() - start
        summary["tracking_s"] = tracking_setup_s + outcome["seconds"]
    summary["disk"] = disk_use(exp_dir, tracker)
    summary["wall_s"] = time.perf_counter() - t_start
    print_summary(summary)
    return summary
