"""The rules of a sweep: its search space, the search and the schedulers' semantics (ASHA,
PBT/PB2), the final selection stage, and the checks that need the whole sweep (every listed
value and range bound gives a valid trial config)."""

from __future__ import annotations

import math
from typing import Any

from fetalgan.checks import ConfigError
from fetalgan.checks import choice as _choice
from fetalgan.checks import positive as _positive
from fetalgan.config.overrides import with_overrides
from fetalgan.config.rules import _check_reference, generator_families, validate_train
from fetalgan.config.schema import (
    DISTRIBUTIONS,
    FID_DIMS,
    PBT_FIXED,
    RANK_BY,
    SAMPLERS,
    SCHEDULER_KEYS,
    SCHEDULER_KINDS,
    SEARCH_KINDS,
    TRAIN_KEYS,
    SchedulerConfig,
    SearchConfig,
    SelectConfig,
    SweepConfig,
)
from fetalgan.config.strict import _convert
from fetalgan.evaluation import Objective
from fetalgan.metric_names import metric_source


def validate_space(space: dict[str, dict[str, list[Any]]], prefix: str = "space") -> None:
    """Check a search space: key paths exist, distributions are known, ranges are non-empty."""
    for key, dist in space.items():
        path = f"{prefix}.{key}"
        if key not in TRAIN_KEYS:
            raise ConfigError(
                f"{path}: unknown training key; expected one of {', '.join(sorted(TRAIN_KEYS))}"
            )
        if len(dist) != 1:
            raise ConfigError(
                f"{path}: expected exactly one distribution, e.g. {{loguniform: [1.0e-5, 1.0e-2]}}; "
                f"one of {', '.join(DISTRIBUTIONS)}"
            )
        ((kind, args),) = dist.items()
        if kind not in DISTRIBUTIONS:
            raise ConfigError(
                f"{path}: unknown distribution {kind!r}; expected one of {', '.join(DISTRIBUTIONS)}"
            )
        if kind in ("choice", "grid"):
            if not args:
                raise ConfigError(f"{path}.{kind}: empty list of values")
            for i, value in enumerate(args):  # each value must be valid for the key
                _convert(value, TRAIN_KEYS[key], f"{path}.{kind}[{i}]")
            continue
        if len(args) != 2 or not all(
            isinstance(a, (int, float)) and not isinstance(a, bool) for a in args
        ):
            raise ConfigError(f"{path}.{kind}: expected [low, high] numbers, got {args!r}")
        low, high = args
        if not low < high:
            raise ConfigError(f"{path}.{kind}: empty range [{low}, {high}]; need low < high")
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"{path}.loguniform: low must be > 0, got {low}")
        if kind == "randint" and not (isinstance(low, int) and isinstance(high, int)):
            raise ConfigError(f"{path}.randint: expected integer bounds, got {args!r}")


def validate_sweep(cfg: SweepConfig) -> SweepConfig:
    if not cfg.name or "/" in cfg.name:
        raise ConfigError(f"name: must be a non-empty name without '/', got {cfg.name!r}")
    _choice("mode", cfg.mode, ("min", "max"))
    _choice("rank_by", cfg.rank_by, RANK_BY)
    _choice("search.kind", cfg.search.kind, SEARCH_KINDS)
    _choice("scheduler.kind", cfg.scheduler.kind, SCHEDULER_KINDS)
    for key in ("num_samples", "workers_per_trial"):
        _positive(key, getattr(cfg, key))
    if isinstance(cfg.max_concurrent, str):
        if cfg.max_concurrent != "auto":
            raise ConfigError(
                f"max_concurrent: expected a positive integer or auto, got {cfg.max_concurrent!r}"
            )
    else:
        _positive("max_concurrent", cfg.max_concurrent)
    _positive("max_failures", cfg.max_failures, allow_zero=True)
    _positive("resources.cpu", cfg.resources.cpu)
    _positive("resources.gpu", cfg.resources.gpu, allow_zero=True)
    if cfg.workers_per_trial > 1 and 0 < cfg.resources.gpu < 1:
        raise ConfigError(
            f"resources.gpu: {cfg.resources.gpu:g} per worker with workers_per_trial "
            f"{cfg.workers_per_trial}: data-parallel workers need a whole GPU each (NCCL cannot "
            "run two ranks on one GPU); use resources.gpu: 1, or workers_per_trial: 1 to pack "
            "trials"
        )
    _positive("search.startup_trials", cfg.search.startup_trials)
    _choice("search.sampler", cfg.search.sampler, SAMPLERS)
    if cfg.search.sampler != SearchConfig.sampler and cfg.search.kind != "optuna":
        raise ConfigError(
            f"search.sampler: {cfg.search.sampler} is one of Optuna's samplers; search.kind is "
            f"{cfg.search.kind}"
        )
    if cfg.search.startup_trials is not None and cfg.search.kind != "optuna":
        raise ConfigError(
            f"search.startup_trials: only Optuna's search has startup trials; search.kind is "
            f"{cfg.search.kind}"
        )
    _positive("scheduler.max_t", cfg.scheduler.max_t)
    _positive("scheduler.grace_period", cfg.scheduler.grace_period)
    if not (1 < cfg.scheduler.reduction_factor < math.inf):  # NaN fails this too
        raise ConfigError(
            f"scheduler.reduction_factor: must be a finite number > 1, got "
            f"{cfg.scheduler.reduction_factor}"
        )
    _positive("rank_window", cfg.rank_window)
    validate_train(cfg.base, prefix="base.")
    validate_space(cfg.space)
    _check_whole_sweep(cfg)
    if cfg.select is not None:
        _validate_select(cfg)
    return cfg


def select_objective(cfg: SweepConfig):
    """What the final selection minimises or maximises: ``select.metric`` (default: the
    sweep's metric) with ``select.mode`` (default: the sweep's mode for the sweep's metric,
    else min)."""
    sel = cfg.select or SelectConfig()
    metric = sel.metric or cfg.metric
    mode = sel.mode or (cfg.mode if metric == cfg.metric else "min")
    return Objective(metric, mode)


def _validate_select(cfg: SweepConfig) -> None:
    """``select``: counts, a metric the selection can compute from images, references that
    resolve to datasets, models that generate, and (phantom sets, no files needed) that the
    four real sets share no image; file-based sets are checked when the sweep starts."""
    generators = generator_families()
    sel = cfg.select
    for key in ("top_k", "per_trial", "n_fake", "draws"):
        _positive(f"select.{key}", getattr(sel, key))
    if sel.n_fake < 2:
        raise ConfigError(f"select.n_fake: must be >= 2 (a covariance needs two), got {sel.n_fake}")
    _positive("select.seed", sel.seed, allow_zero=True)
    if sel.mode is not None:
        _choice("select.mode", sel.mode, ("min", "max"))
    objective = select_objective(cfg)
    try:
        source = metric_source(objective.metric)
    except ValueError as err:
        raise ConfigError(f"select.{err}") from None
    if source is None:
        raise ConfigError(
            f"select.metric: {objective.metric!r} is a training loss, not a measure of the "
            "images; expected fid, kid_mean, lbpv_l1, psnr, ssim or mi_normalised"
        )
    if sel.fid_dims is not None and sel.fid_dims not in FID_DIMS:
        raise ConfigError(
            f"select.fid_dims: expected one of {', '.join(map(str, FID_DIMS))}, got {sel.fid_dims}"
        )
    models = {cfg.base.model, *(space_values(cfg.space.get("model", {"choice": []})) or [])}
    for model in sorted(models):
        if model not in generators:
            raise ConfigError(
                f"select: model {model} translates images and has no sampler to re-score; the "
                f"selection stage is for {', '.join(generators)}"
            )
    for name in ("reference", "test_reference"):
        _check_reference(cfg.base, getattr(sel, name), f"select.{name}", name)
    from fetalgan.data.splits import check_real_sets

    check_real_sets(cfg, files=False)


def space_values(dist: dict[str, list[Any]]) -> list[Any] | None:
    """The explicit values of a ``choice``/``grid`` distribution, else None."""
    ((kind, args),) = dist.items()
    return list(args) if kind in ("choice", "grid") else None


def max_epochs(cfg: SweepConfig) -> int:
    """The most epochs any trial of the sweep can run."""
    dist = cfg.space.get("epochs")
    if dist is None:
        return cfg.base.epochs
    values = space_values(dist)
    return int(max(values)) if values else int(next(iter(dist.values()))[1])


def expected_trials(cfg: SweepConfig) -> int:
    """Trials a complete sweep has: ``num_samples`` times the number of grid points (each
    ``grid`` key's values, and each ``choice`` key's under ``search.kind: grid``, which expands
    choices too)."""
    points = 1
    for dist in cfg.space.values():
        if "grid" in dist:
            points *= len(dist["grid"])
        elif "choice" in dist and cfg.search.kind == "grid":
            points *= len(dist["choice"])
    return cfg.num_samples * points


def pbt_mutable(key: str) -> bool:
    """Whether PBT/PB2 may change ``key`` inside a running trial: a continuous (float)
    training hyper-parameter or ``betas``, not a data, reference or target-data key, nor one
    read once when training starts (:data:`PBT_FIXED`)."""
    if key == "betas":
        return True
    if key.startswith(("data.", "eval_reference.", "target_data.")) or key in PBT_FIXED:
        return False
    return TRAIN_KEYS.get(key) in (float, float | None)


def perturbation_interval(cfg: SweepConfig) -> int:
    """PBT/PB2's ``perturbation_interval`` in epochs (null: two evaluations)."""
    return cfg.scheduler.perturbation_interval or 2 * cfg.base.eval_every


def _check_population_based(cfg: SweepConfig) -> None:
    """PBT/PB2: keys of the kind only, an interval on evaluation epochs, a searcher that does
    not generate configurations, a space of hyper-parameters a running trial can change,
    a fitness that can get worse, one candidate per trial."""
    sch, kind = cfg.scheduler, cfg.scheduler.kind
    for other, keys in SCHEDULER_KEYS.items():
        for key in keys:
            if key not in SCHEDULER_KEYS[kind] and getattr(sch, key) != getattr(
                SchedulerConfig, key
            ):
                raise ConfigError(f"scheduler.{key}: belongs to scheduler.kind {other}, not {kind}")
    if cfg.search.kind == "optuna":
        raise ConfigError(
            f"search.kind: optuna generates each trial's configuration, which {kind} cannot "
            f"follow (it changes them during training); use search.kind random or grid for "
            "the initial population"
        )
    interval = perturbation_interval(cfg)
    _positive("scheduler.perturbation_interval", interval)
    if interval % cfg.base.eval_every:
        raise ConfigError(
            f"scheduler.perturbation_interval: {interval} is not a multiple of "
            f"base.eval_every ({cfg.base.eval_every}): a trial can only be copied from a "
            "checkpoint, written at each evaluation"
        )
    if not 0 < sch.quantile_fraction <= 0.5:
        raise ConfigError(
            f"scheduler.quantile_fraction: must be in (0, 0.5], got {sch.quantile_fraction}"
        )
    if not 0 <= sch.resample_probability <= 1:
        raise ConfigError(
            f"scheduler.resample_probability: must be in [0, 1], got {sch.resample_probability}"
        )
    if not cfg.space:
        raise ConfigError(f"space: {kind} needs at least one hyper-parameter to change")
    for key, dist in cfg.space.items():
        if not pbt_mutable(key):
            raise ConfigError(
                f"space.{key}: {kind} changes every space key while a trial runs, and {key} "
                "cannot change inside a trial (it fixes the networks, the data or the "
                "schedule); set it in base, or run one sweep per value"
            )
        ((dist_kind, _),) = dist.items()
        if kind == "pb2" and dist_kind not in ("uniform", "loguniform"):
            raise ConfigError(
                f"space.{key}: pb2 models continuous ranges only (uniform, loguniform), got "
                f"{dist_kind}"
            )
    if cfg.workers_per_trial > 1:
        raise ConfigError(
            f"workers_per_trial: {kind} restarts a trial from another trial's checkpoint, "
            "which a data-parallel trial's Ray Train run does not take; use workers_per_trial: "
            "1 (one GPU per trial)"
        )
    if cfg.rank_by == "best":
        raise ConfigError(
            f"rank_by: best never gets worse, so {kind} would keep a diverged trial; use last "
            "or window"
        )
    if cfg.select is not None and cfg.select.per_trial > 1:
        raise ConfigError(
            f"select.per_trial: {cfg.select.per_trial} with {kind}: a trial's earlier weights "
            "are replaced when it copies another trial; use per_trial: 1 (each trial's best.pt)"
        )


def _check_whole_sweep(cfg: SweepConfig) -> None:
    """Checks that need the whole sweep: the metric is one a trial reports, the search can
    express the space, integer keys get integer distributions, every listed value gives a
    valid trial config (a range's two bounds too, through the same checks as base values),
    data-parallel workers each get two images, ASHA's grace period fits its max_t, and
    ``checkpoint_epochs`` are evaluation epochs."""
    try:
        source = metric_source(cfg.metric)
    except ValueError as err:
        raise ConfigError(str(err)) from None
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
        for i, value in enumerate(space_values(dist) or []):
            try:
                with_overrides(cfg.base, {key: value})
            except ConfigError as err:
                raise ConfigError(f"{path}[{i}]: {err}") from None
        if kind in ("uniform", "loguniform", "randint"):  # both ends: the values it can draw
            for i, bound in enumerate(args):
                try:
                    with_overrides(cfg.base, {key: bound})
                except ConfigError as err:
                    raise ConfigError(f"{path}[{i}]: {err}") from None
    size = cfg.base.data.size
    if cfg.workers_per_trial > 1 and "data.size" not in cfg.space and size is not None:
        if size // cfg.workers_per_trial < 2:  # each rank steps on its shard, batch_size each
            raise ConfigError(
                f"workers_per_trial: {cfg.workers_per_trial} data-parallel workers share "
                f"base.data.size {size} images, fewer than 2 per worker (a step needs two)"
            )
    if cfg.scheduler.kind in ("pbt", "pb2"):
        _check_population_based(cfg)
    if cfg.scheduler.kind == "asha":
        max_t = max_epochs(cfg) if cfg.scheduler.max_t is None else cfg.scheduler.max_t
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
