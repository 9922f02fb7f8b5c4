"""A checked sweep (``config.load_sweep``) turned into Tune's pieces: the search space, the
searcher (Optuna in a ConcurrencyLimiter, or Tune's variant generator), the scheduler (ASHA on
the sweep's metric, ``time_attr = epoch``, or FIFO), the concurrency, and each trial's
TrainConfig from its sampled values. What a running sweep prints is :mod:`.progress`'s."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from typing import Any

from fetalgan.config import (
    TRAIN_KEYS,
    SweepConfig,
    TrainConfig,
    max_epochs,
    set_key,
    space_values,
    train_config_from_dict,
)


def encoded_keys(cfg: SweepConfig) -> list[str]:
    """Space keys whose listed values are lists (e.g. betas): passed to Tune as JSON strings,
    since search libraries accept only scalar categories."""
    return [
        key
        for key, dist in cfg.space.items()
        if any(isinstance(v, (list, dict)) for v in space_values(dist) or [])
    ]


def build_param_space(cfg: SweepConfig) -> dict[str, Any]:
    """Tune's ``param_space``: one entry per ``space`` key (dotted names kept)."""
    from ray import tune

    encoded = set(encoded_keys(cfg))
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
    base: dict[str, Any], sampled: dict[str, Any], encoded: Iterable[str] = ()
) -> TrainConfig:
    """The TrainConfig of one trial, built and validated once: the base config (as a dict, the
    sweep's ``to_dict(base)``) with the sampled dotted-key values put in by the config's one
    setter (:func:`fetalgan.config.set_key`). Keys of Tune's config that are not training keys
    are not the trial's."""
    import copy

    encoded = set(encoded)
    data = copy.deepcopy(base)
    for key, value in sampled.items():
        if key in TRAIN_KEYS:
            set_key(data, key, json.loads(value) if key in encoded else value)
    return train_config_from_dict(data)


def describe(sampled: dict[str, Any]) -> str:
    """``lr_g=0.000316 data.size=300``: a trial's sampled values, short."""
    parts = []
    for key, value in sampled.items():
        if key not in TRAIN_KEYS:
            continue
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={shown}")
    return " ".join(parts)


def concurrency(cfg: SweepConfig, cluster: dict[str, float] | None = None) -> int:
    """Trials running at once: ``max_concurrent``, or for ``auto`` as many as the cluster's
    CPUs and GPUs hold at the sweep's per-trial resources (at least 1). ``cluster``: Ray's
    ``cluster_resources()`` (``{"CPU": 16.0, "GPU": 4.0, ...}``)."""
    if cfg.max_concurrent != "auto":
        return int(cfg.max_concurrent)
    if cluster is None:
        import ray

        cluster = ray.cluster_resources()
    per_cpu = cfg.resources.cpu * cfg.workers_per_trial
    fits = [math.floor(cluster.get("CPU", 0.0) / per_cpu + 1e-9)]
    if cfg.resources.gpu > 0:
        per_gpu = cfg.resources.gpu * cfg.workers_per_trial
        fits.append(math.floor(cluster.get("GPU", 0.0) / per_gpu + 1e-9))
    return max(1, min(fits))


def startup_trials(cfg: SweepConfig) -> int:
    """Random trials before Optuna's TPE takes over: ``search.startup_trials``, else a quarter
    of the sweep's trials, at least 2 and at most 10."""
    if cfg.search.startup_trials is not None:
        return cfg.search.startup_trials
    return min(10, max(2, cfg.num_samples // 4))


def searcher(cfg: SweepConfig, max_concurrent: int):
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    if cfg.search.kind == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        # Optuna's INFO lines ("A new study created in memory") only when fetalgan's are shown
        optuna.logging.set_verbosity(logging.getLogger().getEffectiveLevel())

        kind = {"tpe": optuna.samplers.TPESampler, "gp": optuna.samplers.GPSampler}
        sampler = kind[cfg.search.sampler](
            seed=cfg.search.seed, n_startup_trials=startup_trials(cfg)
        )
        return ConcurrencyLimiter(OptunaSearch(sampler=sampler), max_concurrent=max_concurrent)
    return BasicVariantGenerator(random_state=cfg.search.seed, max_concurrent=max_concurrent)


def tune_metric(cfg: SweepConfig) -> str:
    """The result key ASHA and the search compare trials by (``rank_by``): the latest
    evaluation's ``metric``, the trial's best so far, ``best_<metric>``, or the geometric mean
    over its last ``rank_window`` evaluations, ``window_<metric>``."""
    from fetalgan.evaluation import Objective

    objective = Objective(cfg.metric, cfg.mode)
    return {"best": objective.best_key, "window": objective.window_key}.get(cfg.rank_by, cfg.metric)


def scheduler(cfg: SweepConfig):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if cfg.scheduler.kind == "asha":
        return ASHAScheduler(
            time_attr="epoch",
            max_t=cfg.scheduler.max_t or max_epochs(cfg),
            grace_period=cfg.scheduler.grace_period,
            reduction_factor=cfg.scheduler.reduction_factor,
        )
    if cfg.scheduler.kind in ("pbt", "pb2"):
        return population_based(cfg)
    return FIFOScheduler()


def mutations(cfg: SweepConfig) -> dict[str, Any]:
    """What PBT draws a space key from when it resamples (the key's own distribution; listed
    values as their list, which PBT also shifts by one place), and PB2's bounds."""
    space = build_param_space(cfg)
    out: dict[str, Any] = {}
    for key, dist in cfg.space.items():
        ((kind, args),) = dist.items()
        if kind in ("choice", "grid"):
            out[key] = [json.dumps(v) for v in args] if key in encoded_keys(cfg) else list(args)
        elif cfg.scheduler.kind == "pb2":
            out[key] = [float(args[0]), float(args[1])]
        else:
            out[key] = space[key]
    return out


def clip_to_space(cfg: SweepConfig):
    """PBT's explore step multiplies a continuous value by 0.8 or 1.2 without bounds; this
    keeps every value inside its space range, so a trial never trains at a learning rate
    the sweep file excludes."""
    bounds = {
        key: (float(args[0]), float(args[1]))
        for key, dist in cfg.space.items()
        for kind, args in dist.items()
        if kind in ("uniform", "loguniform")
    }

    def explore(config: dict[str, Any]) -> dict[str, Any]:
        for key, (low, high) in bounds.items():
            if isinstance(config.get(key), (int, float)):
                config[key] = min(max(float(config[key]), low), high)
        return config

    return explore


def population_based(cfg: SweepConfig):
    """Ray Tune's PopulationBasedTraining (or PB2) on the sweep's fitness (``tune_metric``),
    ``time_attr = epoch``: every ``perturbation_interval`` epochs a trial in the bottom
    ``quantile_fraction`` copies the state of one in the top fraction and changes its space
    keys (resampled, or x0.8/x1.2 kept inside the space's range; PB2: chosen by a
    Gaussian-process bandit within the bounds)."""
    from ray.tune.schedulers import PopulationBasedTraining

    from fetalgan.config import perturbation_interval

    sch = cfg.scheduler
    common = {
        "time_attr": "epoch",
        "perturbation_interval": perturbation_interval(cfg),
        "quantile_fraction": sch.quantile_fraction,
        "synch": sch.synch,
        "custom_explore_fn": clip_to_space(cfg),
        "log_config": False,  # fetalgan keeps the lineage (trials' exploit records)
    }
    if sch.kind == "pb2":
        try:
            import sklearn  # noqa: F401  (PB2's Gaussian process)
        except ImportError:
            raise ValueError(
                "scheduler.kind: pb2 needs scikit-learn: pip install 'fetalgan[pb2]'"
            ) from None
        from ray.tune.schedulers.pb2 import PB2

        return PB2(hyperparam_bounds=mutations(cfg), **common)
    return PopulationBasedTraining(
        hyperparam_mutations=mutations(cfg),
        resample_probability=sch.resample_probability,
        **common,
    )


def check_resources(
    cfg: SweepConfig,
    cluster: dict[str, float],
    nodes: list[dict[str, float]] | None = None,
) -> None:
    """``ValueError`` when no trial of the sweep could ever start on this Ray cluster (Tune
    would otherwise wait forever, e.g. at "0/0 GPUs"). ``cluster``: Ray's
    ``cluster_resources()``; ``nodes``: each live node's resources, when known (one trial, or
    one data-parallel worker, must fit on one node)."""
    workers = cfg.workers_per_trial
    need = {"CPU": cfg.resources.cpu, "GPU": cfg.resources.gpu}
    who = "a trial" if workers == 1 else f"each of a trial's {workers} data-parallel workers"
    hints = {
        "CPU": "lower resources.cpu, or give the job more CPUs (sbatch --cpus-per-task)",
        "GPU": "on Slurm submit with --gpus-per-node=N (the job log says what each node "
        "offers), or set resources.gpu: 0 to train on CPUs",
    }
    for key, amount in need.items():
        total = cluster.get(key, 0.0)
        if amount > 0 and amount * workers > total + 1e-9:
            raise ValueError(
                f"resources.{key.lower()}: {who} asks for {amount:g} {key}(s), "
                f"{amount * workers:g} a trial, but the Ray cluster has {total:g}; no trial "
                f"could ever start. {hints[key]}"
            )
    if nodes and not any(
        all(node.get(key, 0.0) + 1e-9 >= amount for key, amount in need.items() if amount > 0)
        for node in nodes
    ):
        offered = "; ".join(
            f"{node.get('CPU', 0.0):g} CPUs, {node.get('GPU', 0.0):g} GPUs" for node in nodes
        )
        raise ValueError(
            f"resources: {who} asks for {need['CPU']:g} CPUs and {need['GPU']:g} GPUs on one "
            f"node, but no node has that much (nodes: {offered}); no trial could ever start"
        )
