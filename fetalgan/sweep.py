"""Sweeps: many copies of ``train()`` under Ray Tune, each trial tracked in MLflow. The ONLY
module that imports ray.

``run_sweep("sweeps/demo.yaml")`` builds a ``Tuner`` over a function trainable that calls
``fetalgan.train.train`` with a ``report`` wired to ``tune.report`` (metrics + a checkpoint
directory holding ``checkpoint.pt`` and the evaluation's sample grid) and ``resume`` from
``tune.get_checkpoint()``:

- search: ``optuna`` (OptunaSearch in a ConcurrencyLimiter, seeded), ``random`` or ``grid``
  (Tune's variant generator; ``grid`` values expand to every combination and combine with
  sampled ones; with ``search.kind: grid`` a ``choice`` is expanded too);
- scheduler: ``asha`` (ASHAScheduler on the sweep's metric, ``time_attr = epoch``) or ``fifo``;
- resources per trial (fractional ``gpu`` packs trials on a GPU); ``workers_per_trial > 1``
  runs one trial data-parallel: the trainable launches a Ray Train ``TorchTrainer`` (DDP; gloo
  on CPU, nccl on GPU) whose rank 0 reports through ``TuneReportCallback``;
- faults: ``FailureConfig(max_failures)`` restarts a crashed trial from its last checkpoint
  (into the same MLflow run); a NaN trial fails alone;
- interruption: SIGUSR1 or SIGINT (Tune's own handlers) or SIGTERM (converted to SIGUSR1 here)
  saves the experiment; ``run_sweep(..., resume=True)`` continues it with ``Tuner.restore``.

The experiment lives in ``<storage>/<name>`` (storage: ``storage=``, else the file's
``storage``, else ``$FETALGAN_STORAGE``, else ``./ray_results``). MLflow logging happens in
the driver (a Tune callback), so the store has one writer however many trials run.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from fetalgan.config import (
    TRAIN_KEYS,
    ConfigError,
    SweepConfig,
    TrainConfig,
    apply_overrides,
    flatten,
    load_sweep,
    to_dict,
    train_config_from_dict,
    with_overrides,
)

# Tune's own result keys, not logged as metrics (ray's lists are added when ray is imported).
_TUNE_KEYS = {"done", "checkpoint_dir_name", "checkpoint_path", "should_checkpoint", "trial_id"}
STATE_FILE = "fetalgan_sweep.json"  # in the experiment dir: parent run id, tracking URI
SAVED_SWEEP = "fetalgan_sweep.yaml"  # in the experiment dir: the sweep as started (for resume)
CHECKPOINT_FILE = "checkpoint.pt"
# Columns of the progress table (those a trial reports).
PROGRESS_METRICS = {
    "epoch": "epoch",
    "fid": "FID",
    "kid_mean": "KID",
    "loss_d": "loss_D",
    "loss_g": "loss_G",
}


# --------------------------------------------------------------------------------------------
# Sweep file -> checked config and Tune search space (no ray import here)
# --------------------------------------------------------------------------------------------


def _metric_source(metric: str) -> str | None:
    """The ``eval_metrics`` entry that produces ``metric`` (None: always reported)."""
    if metric in ("loss_g", "loss_d", "epoch"):
        return None
    for source in ("fid", "kid", "lbpv"):
        if metric == source or metric.startswith(source + "_"):
            return source
    return "?"


def _space_values(dist: dict[str, list[Any]]) -> list[Any] | None:
    """The explicit values of a ``choice``/``grid`` distribution, else None."""
    ((kind, args),) = dist.items()
    return list(args) if kind in ("choice", "grid") else None


def check_sweep(cfg: SweepConfig) -> SweepConfig:
    """Checks that need the whole sweep (beyond ``config.validate_sweep``): the metric is one a
    trial reports, the search can express the space, integer keys get integer distributions,
    every listed value gives a valid trial config, ASHA's grace period fits its max_t, and
    ``checkpoint_epochs`` are evaluation epochs. Returns ``cfg``; raises ConfigError."""
    source = _metric_source(cfg.metric)
    if source == "?":
        raise ConfigError(
            f"metric: unknown {cfg.metric!r}; expected fid, kid_mean, lbpv_l1, loss_g, loss_d "
            "or another key a trial reports (fid*, kid*, lbpv*)"
        )
    if source is not None and source not in cfg.base.eval_metrics:
        raise ConfigError(
            f"metric: {cfg.metric!r} needs {source!r} in base.eval_metrics "
            f"(now {cfg.base.eval_metrics})"
        )
    for key, dist in cfg.space.items():
        ((kind, args),) = dist.items()
        path = f"space.{key}.{kind}"
        if kind == "grid" and cfg.search.kind == "optuna":
            raise ConfigError(
                f"{path}: grid values need search.kind grid or random; with optuna use choice"
            )
        key_type = TRAIN_KEYS[key]
        if kind in ("uniform", "loguniform") and key_type in (int, int | None):
            raise ConfigError(f"{path}: {key} is an integer key; use randint, choice or grid")
        if kind in ("uniform", "loguniform", "randint") and key_type not in (
            int,
            float,
            int | None,
            float | None,
        ):
            raise ConfigError(f"{path}: {key} is not numeric; use choice or grid")
        for i, value in enumerate(_space_values(dist) or []):
            try:
                with_overrides(cfg.base, {key: value})
            except ConfigError as err:
                raise ConfigError(f"{path}[{i}]: {err}") from None
    if cfg.scheduler.kind == "asha":
        max_t = _max_epochs(cfg) if cfg.scheduler.max_t is None else cfg.scheduler.max_t
        if cfg.scheduler.grace_period > max_t:
            raise ConfigError(
                f"scheduler.grace_period: {cfg.scheduler.grace_period} is beyond max_t {max_t}"
            )
    if cfg.checkpoint_epochs and not {"epochs", "eval_every"} & set(cfg.space):
        base = cfg.base
        for i, epoch in enumerate(cfg.checkpoint_epochs):
            if not (
                0 < epoch <= base.epochs and (epoch % base.eval_every == 0 or epoch == base.epochs)
            ):
                raise ConfigError(
                    f"checkpoint_epochs[{i}]: {epoch} is not an evaluation epoch "
                    f"(multiples of eval_every={base.eval_every} up to epochs={base.epochs})"
                )
    return cfg


def _max_epochs(cfg: SweepConfig) -> int:
    dist = cfg.space.get("epochs")
    if dist is None:
        return cfg.base.epochs
    values = _space_values(dist)
    return int(max(values)) if values else int(next(iter(dist.values()))[1])


def load(path_or_cfg: str | Path | SweepConfig, overrides: Iterable[str] = ()) -> SweepConfig:
    """A checked SweepConfig from a sweep file or an object; ``overrides`` are ``base`` key
    paths (``lr_g=1e-3``, ``data.size=300``)."""
    overrides = list(overrides)
    if isinstance(path_or_cfg, SweepConfig):
        cfg = path_or_cfg
        if overrides:
            flat = flatten(apply_overrides({}, overrides))
            cfg = SweepConfig(**{**vars(cfg), "base": with_overrides(cfg.base, flat)})
        return check_sweep(cfg)
    cfg = load_sweep(path_or_cfg, overrides)
    try:
        return check_sweep(cfg)
    except ConfigError as err:
        raise ConfigError(f"{path_or_cfg}: {err}") from None


def _absolute_paths(base: TrainConfig, cwd: Path) -> TrainConfig:
    """Relative dataset/cache/weights paths made absolute: trials run in other directories."""
    data = to_dict(base)
    for holder, key in ((data["data"], "root"), (data["data"], "cache_dir"), (data, "fid_weights")):
        if holder[key] and not Path(holder[key]).is_absolute():
            holder[key] = str(cwd / holder[key])
    return train_config_from_dict(data)


def _encoded_keys(cfg: SweepConfig) -> list[str]:
    """Space keys whose listed values are lists (e.g. betas): passed to Tune as JSON strings,
    since search libraries accept only scalar categories."""
    return [
        key
        for key, dist in cfg.space.items()
        if any(isinstance(v, (list, dict)) for v in _space_values(dist) or [])
    ]


def build_param_space(cfg: SweepConfig) -> dict[str, Any]:
    """Tune's ``param_space``: one entry per ``space`` key (dotted names kept)."""
    from ray import tune

    encoded = set(_encoded_keys(cfg))
    space: dict[str, Any] = {}
    for key, dist in cfg.space.items():
        ((kind, args),) = dist.items()
        if kind in ("choice", "grid"):
            values = [json.dumps(v) for v in args] if key in encoded else list(args)
            expand = kind == "grid" or cfg.search.kind == "grid"
            space[key] = tune.grid_search(values) if expand else tune.choice(values)
        elif kind == "uniform":
            space[key] = tune.uniform(*args)
        elif kind == "loguniform":
            space[key] = tune.loguniform(*args)
        elif kind == "randint":  # [low, high] inclusive here; Tune's high is exclusive
            space[key] = tune.randint(int(args[0]), int(args[1]) + 1)
    return space


def trial_config(
    base: TrainConfig, sampled: dict[str, Any], encoded: Iterable[str] = ()
) -> TrainConfig:
    """The TrainConfig of one trial: ``base`` with the sampled dotted-key values."""
    encoded = set(encoded)
    flat = {k: json.loads(v) if k in encoded else v for k, v in sampled.items() if k in TRAIN_KEYS}
    return with_overrides(base, flat)


def _describe(sampled: dict[str, Any]) -> str:
    parts = []
    for key, value in sampled.items():
        if key not in TRAIN_KEYS:
            continue
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={shown}")
    return " ".join(parts)


# --------------------------------------------------------------------------------------------
# The trainable (runs in Ray workers)
# --------------------------------------------------------------------------------------------


def _set_threads(cpus: float) -> None:
    import torch

    torch.set_num_threads(max(1, int(cpus)))


def _stage_checkpoint(stage_root: Path, checkpoint_file: Path, metrics: dict) -> Path:
    """A fresh directory holding ``checkpoint.pt`` and ``samples/epoch_NNNN.png`` (hard links
    when possible) to hand to Tune/Train, which copy it into the experiment's storage."""
    epoch = int(metrics["epoch"])
    stage = stage_root / f"report_{epoch:06d}"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "samples").mkdir(parents=True)
    files = [(Path(checkpoint_file), stage / CHECKPOINT_FILE)]
    if metrics.get("sample_grid"):
        files.append((Path(metrics["sample_grid"]), stage / "samples" / f"epoch_{epoch:04d}.png"))
    for src, dst in files:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return stage


def _result(metrics: dict) -> dict:
    """What a trial reports to Tune: the evaluation's metrics plus where it ran."""
    import ray

    out = {k: v for k, v in metrics.items() if k != "sample_grid"}
    out["worker_host"] = socket.gethostname()
    out["worker_ip"] = ray.util.get_node_ip_address()
    return out


def _restore_to(checkpoint, local_dir: Path) -> Path | None:
    """Copy a Tune/Train checkpoint into ``local_dir``; the ``checkpoint.pt`` to resume from."""
    if checkpoint is None:
        return None
    shutil.rmtree(local_dir, ignore_errors=True)
    checkpoint.to_directory(str(local_dir))
    return local_dir / CHECKPOINT_FILE


def sweep_trial(config: dict, spec: dict) -> None:
    """Tune function trainable: one trial = one ``train()`` call (or a data-parallel Ray Train
    run of it when ``workers_per_trial > 1``)."""
    from ray import tune

    from fetalgan.train import train

    context = tune.get_context()
    trial_id = context.get_trial_id()
    trial_dir = Path(context.get_trial_dir())
    cfg = trial_config(train_config_from_dict(spec["base"]), config, spec["encoded"])
    # Stored in every checkpoint: which sweep, trial and MLflow parent run it belongs to.
    extra = {
        "trial_id": trial_id,
        "sweep": spec["name"],
        "mlflow_parent_run_id": spec.get("parent"),
    }
    if spec["workers_per_trial"] > 1:
        _data_parallel_trial(cfg, spec, trial_id, trial_dir, extra)
        return
    if spec["gpu"] == 0:
        _set_threads(spec["cpu"])
    resume = _restore_to(tune.get_checkpoint(), trial_dir / "restored")

    def report(metrics: dict, checkpoint_file: Path | None) -> None:
        if checkpoint_file is None:
            tune.report(_result(metrics))
            return
        stage = _stage_checkpoint(trial_dir / "staging", checkpoint_file, metrics)
        tune.report(_result(metrics), checkpoint=tune.Checkpoint.from_directory(str(stage)))
        shutil.rmtree(stage, ignore_errors=True)  # Tune has copied it into storage

    train(cfg, report=report, resume=resume, run_dir=trial_dir / "run", progress=False, extra=extra)


def _data_parallel_trial(
    cfg: TrainConfig, spec: dict, trial_id: str, trial_dir: Path, extra: dict
) -> None:
    """One trial on ``workers_per_trial`` DDP workers (Ray Train V2 inside a Tune trial). The
    Train run is named after the trial, so a restarted trial resumes its last checkpoint."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = spec["gpu"] > 0
    per_worker = {"CPU": spec["cpu"], **({"GPU": spec["gpu"]} if use_gpu else {})}
    trainer = TorchTrainer(
        _data_parallel_worker,
        train_loop_config={
            "cfg": to_dict(cfg),
            "extra": extra,
            "run_dir": str(trial_dir / "run"),
            "cpu": spec["cpu"],
            "use_gpu": use_gpu,
        },
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec["workers_per_trial"], use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            name=f"ddp_{trial_id}",
            storage_path=spec["ddp_storage"],
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=0),  # Tune restarts the trial
        ),
    )
    trainer.fit()


def _data_parallel_worker(loop_config: dict) -> None:
    """One DDP rank: the same ``train()``; every rank reports (Ray Train V2 needs it), rank 0
    with the checkpoint, which Train persists and TuneReportCallback forwards to the driver."""
    import ray.train

    from fetalgan.train import train

    cfg = train_config_from_dict(loop_config["cfg"])
    rank = ray.train.get_context().get_world_rank()
    run_dir = Path(loop_config["run_dir"])
    if not loop_config["use_gpu"]:
        _set_threads(loop_config["cpu"])
    resume = _restore_to(ray.train.get_checkpoint(), run_dir.parent / f"restored_rank{rank}")

    world_size = ray.train.get_context().get_world_size()

    def report(metrics: dict, checkpoint_file: Path | None) -> None:
        result = {**_result(metrics), "workers": world_size}
        if checkpoint_file is None:
            ray.train.report(result)
            return
        stage = _stage_checkpoint(run_dir.parent / "staging", checkpoint_file, metrics)
        ray.train.report(result, checkpoint=ray.train.Checkpoint.from_directory(str(stage)))
        shutil.rmtree(stage, ignore_errors=True)

    train(
        cfg,
        report=report,
        resume=resume,
        run_dir=run_dir,
        progress=False,
        extra=loop_config["extra"],
    )


def trial_dirname(trial) -> str:
    """Short trial directory names (Tune's default embeds the whole config)."""
    return f"trial_{trial.trial_id}"


# --------------------------------------------------------------------------------------------
# The driver-side MLflow callback
# --------------------------------------------------------------------------------------------


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


def _tracking_callback_class():
    from ray import tune
    from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS

    _TUNE_KEYS.update(AUTO_RESULT_KEYS, DEBUG_METRICS)

    class TrackingCallback(tune.Callback):
        """Logs every trial to MLflow from the driver: params at start, metrics at each result,
        sample grid / curves / checkpoints at each checkpoint, the end status at completion
        or error; on experiment end, trials cut short by an interruption are KILLED."""

        def __init__(self, tracker_args: dict, spec: dict):
            self.tracker_args = tracker_args
            self.spec = spec
            self._init_runtime()

        def _init_runtime(self):
            self.tracker = None
            self.runs: dict[str, str] = {}  # trial id -> MLflow run id
            self.pending: dict[str, dict] = {}  # trial id -> evaluation awaiting its checkpoint
            self.files = None  # one background thread copying artefacts (see _log_files)
            self.in_flight = None  # its current job
            self.ended: set[str] = set()
            self.stopped_early: set[str] = set()
            self.interrupted = False
            self.seconds = 0.0  # driver time spent in these hooks

        def __getstate__(self):  # Tune pickles its RunConfig: keep only the arguments
            return {"tracker_args": self.tracker_args, "spec": self.spec}

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

        def _cfg(self, trial) -> TrainConfig:
            return trial_config(
                train_config_from_dict(self.spec["base"]), trial.config, self.spec["encoded"]
            )

        @_timed
        def on_trial_start(self, iteration, trials, trial, **info):
            cfg = self._cfg(trial)
            name = f"{trial.trial_id} {_describe(trial.config)}".strip()
            self.runs[trial.trial_id] = self._tracker().start_trial(
                trial.trial_id, name, to_dict(cfg), yaml.safe_dump(to_dict(cfg), sort_keys=False)
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
            if run_id is None or "epoch" not in result:
                return
            logged = {k: v for k, v in result.items() if k not in _TUNE_KEYS}
            if result.get("checkpoint_path"):  # data-parallel trial: Train stored it already
                self._log_evaluation(run_id, logged, Path(result["checkpoint_path"]))
            elif result.get("should_checkpoint"):
                self.pending[trial.trial_id] = logged
            else:  # an evaluation without checkpoint (none today): metrics only
                self._tracker().log_result(run_id, logged)

        @_timed
        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            run_id = self._run(trial)
            if run_id is None or trial.trial_id not in self.pending:
                return
            self._log_evaluation(run_id, self.pending.pop(trial.trial_id), Path(checkpoint.path))

        def _log_evaluation(self, run_id: str, logged: dict, directory: Path) -> None:
            epoch = int(logged["epoch"])
            is_best = self._tracker().log_result(run_id, logged)
            self._log_files(run_id, directory, epoch, is_best)

        def _log_files(self, run_id: str, directory: Path, epoch: int, is_best: bool) -> None:
            """Sample grid, curves and checkpoints go to MLflow in a background thread, so the
            trial (which waits for the driver between evaluations) does not wait for the
            copies. One job at a time: the checkpoint being copied is never one Tune has
            already replaced (it keeps the last two)."""
            from concurrent.futures import ThreadPoolExecutor

            self._flush()
            if self.files is None:
                self.files = ThreadPoolExecutor(1, thread_name_prefix="fetalgan-mlflow")
            self.in_flight = self.files.submit(
                self._tracker().log_evaluation_files,
                run_id,
                epoch,
                checkpoint_file=directory / CHECKPOINT_FILE,
                sample_grid=directory / "samples" / f"epoch_{epoch:04d}.png",
                is_best=is_best,
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
            last_epoch = int(trial.last_result.get("epoch", 0))
            stopped = last_epoch < self._cfg(trial).epochs
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
            self._tracker().end_trial(run_id, "FAILED", error=_trial_error(trial))
            self.ended.add(trial.trial_id)

        @_timed
        def on_trial_recover(self, iteration, trials, trial, **info):
            run_id = self._run(trial)
            if run_id is not None:  # it restarts from its last checkpoint into this run
                self._tracker().client.set_tag(run_id, "restarts", str(trial.num_failures))

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

    return TrackingCallback


def _trial_error(trial) -> str:
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


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def storage_root(cfg: SweepConfig, storage: str | Path | None = None) -> Path:
    """``storage``, else the file's ``storage``, else ``$FETALGAN_STORAGE``, else
    ``./ray_results`` — as an absolute path."""
    return Path(
        storage or cfg.storage or os.environ.get("FETALGAN_STORAGE") or "ray_results"
    ).resolve()


def warm_real_statistics(cfg: SweepConfig) -> None:
    """Compute the cached real-image statistics once in the driver, so trials read them
    instead of each computing them. Covers the base data and every listed value of data keys
    (``data.*``, ``resolution``, ``seed``)."""
    import itertools

    try:
        from fetalgan.data import load_training_images
        from fetalgan.metrics.stats import real_statistics
    except ImportError as err:  # metrics package without cached statistics
        print(f"fetalgan sweep: real statistics not pre-computed ({err})")
        return
    if not {"fid", "kid"} & set(cfg.base.eval_metrics):
        return  # LBPv alone is computed by each trial without the FID network
    keys = [k for k in cfg.space if k.startswith("data.") or k in ("resolution", "seed")]
    options = [[(k, v) for v in (_space_values(cfg.space[k]) or [])] for k in keys]
    options = [o for o in options if o]
    combos = [dict(c) for c in itertools.product(*options)] if options else [{}]
    encoded = _encoded_keys(cfg)
    t0 = time.perf_counter()
    for combo in combos[:32]:
        sampled = {k: json.dumps(v) if k in encoded else v for k, v in combo.items()}
        tc = trial_config(cfg.base, sampled, encoded)
        dataset = load_training_images(tc.data, tc.resolution, seed=tc.seed, progress=False)
        real_statistics(
            dataset.images, key=dataset.key, weights=tc.fid_weights, cache_dir=tc.data.cache_dir
        )
    seconds = time.perf_counter() - t0
    print(
        f"fetalgan sweep: real-image statistics ready ({len(combos[:32])} set(s), {seconds:.1f} s)"
    )


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
            f"fetalgan sweep: moved the earlier experiment {exp_dir} to {moved} (use --resume to continue one)"
        )
    exp_dir.mkdir(parents=True)


def _ensure_ray() -> bool:
    """Connect to ``$RAY_ADDRESS`` or start a local Ray; True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=True)
    return True


def _progress_reporter(cfg: SweepConfig):
    from ray import tune

    reporter = tune.CLIReporter(
        metric_columns={
            **PROGRESS_METRICS,
            **({cfg.metric: cfg.metric} if cfg.metric not in PROGRESS_METRICS else {}),
        },
        parameter_columns=list(cfg.space),
        max_report_frequency=30,
        sort_by_metric=True,
    )
    return reporter


def _searcher(cfg: SweepConfig):
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    if cfg.search.kind == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        sampler = optuna.samplers.TPESampler(seed=cfg.search.seed)
        return ConcurrencyLimiter(OptunaSearch(sampler=sampler), max_concurrent=cfg.max_concurrent)
    return BasicVariantGenerator(random_state=cfg.search.seed, max_concurrent=cfg.max_concurrent)


def _scheduler(cfg: SweepConfig):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if cfg.scheduler.kind == "asha":
        return ASHAScheduler(
            time_attr="epoch",
            max_t=cfg.scheduler.max_t or _max_epochs(cfg),
            grace_period=cfg.scheduler.grace_period,
            reduction_factor=cfg.scheduler.reduction_factor,
        )
    return FIFOScheduler()


def _trainable(cfg: SweepConfig, spec: dict):
    from ray import tune

    if cfg.workers_per_trial > 1:
        # The trial only drives a Ray Train run whose workers reserve their own resources
        # (Tune refuses an empty request, hence a sliver of a CPU).
        resources = {"cpu": 0.01}
    else:
        resources = {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu}
    return tune.with_resources(tune.with_parameters(sweep_trial, spec=spec), resources)


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
) -> dict:
    """Run (or ``resume``) a sweep; print and return a summary.

    Returns ``{experiment_path, interrupted, num_trials, num_errors, num_stopped_early,
    best: {trial_id, run_id, config, <metric>, fid, kid_mean, epoch, checkpoint,
    checkpoint_uri} or None, tracking_uri, experiment_id, parent_run_id, ui_command,
    runs_url, wall_s}``. ``tracking=False`` skips MLflow (used by the overhead benchmark).
    """
    t_start = time.perf_counter()
    cfg = load(path_or_cfg, overrides)
    root = storage_root(cfg, storage)
    exp_dir = root / cfg.name
    state_file = exp_dir / STATE_FILE
    state = json.loads(state_file.read_text()) if resume and state_file.is_file() else {}
    if resume and (exp_dir / SAVED_SWEEP).is_file():
        # A resumed sweep keeps the settings it started with (the file only names it).
        if overrides:  # e.g. a requeued Slurm job repeating its command line
            print("fetalgan sweep: --set ignored: a resumed sweep keeps its starting settings")
        cfg = load(exp_dir / SAVED_SWEEP)
    cfg = SweepConfig(**{**vars(cfg), "base": _absolute_paths(cfg.base, Path.cwd())})
    base = cfg.base

    # MLflow first: an unreachable server must fail before Ray starts.
    tracker = None
    tracking_setup_s = 0.0  # driver time for MLflow outside the callback (store, parent, end)
    if tracking:
        start = time.perf_counter()
        from fetalgan.tracking import SweepTracker

        tracker = SweepTracker(
            cfg.name,
            metric=cfg.metric,
            mode=cfg.mode,
            tracking_uri=tracking_uri or state.get("tracking_uri"),
            checkpoint_epochs=tuple(cfg.checkpoint_epochs),
        )
        tracking_setup_s += time.perf_counter() - start
    from ray import tune

    _prepare_experiment_dir(exp_dir, resume)
    (exp_dir / SAVED_SWEEP).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    if tracker is not None:
        start = time.perf_counter()
        tracker.start_parent(state.get("parent_run_id"), tags={"experiment_path": str(exp_dir)})
        tracker.log_sweep_config(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        state = {"parent_run_id": tracker.parent_run_id, "tracking_uri": tracker.tracking_uri}
        state_file.write_text(json.dumps(state, indent=2) + "\n")
        tracking_setup_s += time.perf_counter() - start
    if warm_statistics:
        warm_real_statistics(cfg)

    spec = {
        "name": cfg.name,
        "base": to_dict(base),
        "encoded": _encoded_keys(cfg),
        "workers_per_trial": cfg.workers_per_trial,
        "cpu": cfg.resources.cpu,
        "gpu": cfg.resources.gpu,
        "ddp_storage": str(exp_dir / "ddp"),
        "parent": tracker.parent_run_id if tracker is not None else None,
    }
    callbacks = []
    callback = None
    if tracker is not None:
        callback = _tracking_callback_class()(
            {
                "experiment": cfg.name,
                "metric": cfg.metric,
                "mode": cfg.mode,
                "tracking_uri": tracker.tracking_uri,
                "checkpoint_epochs": tuple(cfg.checkpoint_epochs),
                "parent_run_id": tracker.parent_run_id,
            },
            spec,
        )
        callbacks.append(callback)

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the table reporter below, not AIR's
    started_ray = _ensure_ray()
    trainable = _trainable(cfg, spec)
    if resume:
        tuner = tune.Tuner.restore(
            str(exp_dir), trainable, resume_unfinished=True, resume_errored=True
        )
        # The restored RunConfig is the pickled one: give it this invocation's callback.
        run_config = tuner._local_tuner.get_run_config()
        run_config.callbacks = callbacks
        run_config.progress_reporter = _progress_reporter(cfg)
        run_config.verbose = verbose
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=build_param_space(cfg),
            tune_config=tune.TuneConfig(
                metric=cfg.metric,
                mode=cfg.mode,
                search_alg=_searcher(cfg),
                scheduler=_scheduler(cfg),
                num_samples=cfg.num_samples,
                trial_dirname_creator=trial_dirname,
                # A finished trial's process takes the next one: torch and fetalgan stay
                # imported (seconds per trial). Data-parallel trials start their own workers.
                reuse_actors=cfg.workers_per_trial == 1,
                trial_name_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=cfg.name,
                storage_path=str(root),
                callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                progress_reporter=_progress_reporter(cfg),
                verbose=verbose,
            ),
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

    # A stop signal between two trials leaves every started trial finished: also count them.
    interrupted = (callback.interrupted if callback is not None else _grid_unfinished(grid)) or len(
        grid
    ) < expected_trials(cfg)
    summary = _summarise(cfg, grid, exp_dir, callback, tracker, interrupted)
    if tracker is not None:
        start = time.perf_counter()
        best = tracker.finish_parent(
            "KILLED" if interrupted else "FINISHED", register=not interrupted
        )
        if best is not None and summary["best"] is not None:
            summary["best"]["registered_version"] = best.get("model_version")
        tracking_setup_s += time.perf_counter() - start
        summary["tracking_s"] = tracking_setup_s + callback.seconds
    summary["wall_s"] = time.perf_counter() - t_start
    print_summary(summary)
    return summary


def expected_trials(cfg: SweepConfig) -> int:
    """Trials a complete sweep has: ``num_samples`` times the number of grid points."""
    points = 1
    for dist in cfg.space.values():
        if "grid" in dist:
            points *= len(dist["grid"])
    return cfg.num_samples * points


def _grid_unfinished(grid) -> bool:
    return (
        any(r.metrics is None or not r.metrics.get("done", True) for r in grid)
        if len(grid)
        else True
    )


def _summarise(cfg: SweepConfig, grid, exp_dir: Path, callback, tracker, interrupted: bool) -> dict:
    from fetalgan.tracking import runs_table_url, ui_command

    best = None
    results = [r for r in grid if r.metrics and _finite(r.metrics.get(cfg.metric))]
    if results:
        pick = min if cfg.mode == "min" else max
        result = pick(results, key=lambda r: r.metrics[cfg.metric])
        trial_id = result.metrics.get("trial_id")
        best = {
            "trial_id": trial_id,
            "run_id": callback.runs.get(trial_id) if callback is not None else None,
            "config": {k: v for k, v in result.config.items() if k in TRAIN_KEYS},
            cfg.metric: result.metrics[cfg.metric],
            "fid": result.metrics.get("fid"),
            "kid_mean": result.metrics.get("kid_mean"),
            "epoch": result.metrics.get("epoch"),
            "checkpoint": result.checkpoint.path if result.checkpoint else None,
            "checkpoint_uri": None,
        }
        if best["run_id"]:
            best["checkpoint_uri"] = f"runs:/{best['run_id']}/checkpoint/best.pt"
    summary = {
        "name": cfg.name,
        "metric": cfg.metric,
        "mode": cfg.mode,
        "experiment_path": str(exp_dir),
        "interrupted": interrupted,
        "num_trials": len(grid),
        "num_errors": grid.num_errors,
        "num_stopped_early": len(callback.stopped_early) if callback is not None else None,
        "best": best,
    }
    if tracker is not None:
        summary.update(
            tracking_uri=tracker.tracking_uri,
            experiment_id=tracker.experiment_id,
            parent_run_id=tracker.parent_run_id,
            ui_command=ui_command(tracker.tracking_uri),
            runs_url=runs_table_url(
                tracker.experiment_id, tracker.tracking_uri, cfg.metric, cfg.mode
            ),
        )
    return summary


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def print_summary(summary: dict) -> None:
    """The end-of-sweep summary a user reads."""
    lines = [
        "",
        f"== sweep {summary['name']}: {summary['num_trials']} trials, "
        f"{summary['num_errors']} failed"
        + (
            f", {summary['num_stopped_early']} stopped early"
            if summary.get("num_stopped_early") is not None
            else ""
        ),
    ]
    if summary["interrupted"]:
        lines.append(
            f"   interrupted: state saved in {summary['experiment_path']}; continue with "
            f"`fetalgan sweep FILE --resume` (same --storage)"
        )
    best = summary["best"]
    if best is None:
        lines.append("   no trial reported the metric yet")
    else:
        metric = summary["metric"]
        lines.append(
            f"   best trial {best['trial_id']} (epoch {best['epoch']}): {metric} = {best[metric]:.4g}"
            + (f", fid = {best['fid']:.4g}" if metric != "fid" and _finite(best.get("fid")) else "")
            + (f", kid = {best['kid_mean']:.4g}" if _finite(best.get("kid_mean")) else "")
        )
        lines.append("   config: " + (_describe(best["config"]) or "(the base config)"))
        if best.get("run_id"):
            lines.append(f"   MLflow run: {best['run_id']}   checkpoint: {best['checkpoint_uri']}")
        if best.get("checkpoint"):
            lines.append(f"   Tune checkpoint: {best['checkpoint']}")
    if summary.get("ui_command"):
        lines.append(f"   open the runs: {summary['ui_command']}")
        lines.append(f"   runs sorted by {summary['metric']}: {summary['runs_url']}")
        lines.append(
            f"   images from the best: fetalgan generate --best {summary['name']} -n 800 --out synth/"
        )
    print("\n".join(lines), flush=True)
