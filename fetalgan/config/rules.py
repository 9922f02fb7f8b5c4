"""The rules of one training run that types cannot express: value ranges, datasets and
references, EMA, the second domain of translators, and each family's section (its spec's
``validate``, from :mod:`fetalgan.models.registry`)."""

from __future__ import annotations

import math

from fetalgan.checks import ConfigError
from fetalgan.checks import choice as _choice
from fetalgan.checks import positive as _positive
from fetalgan.config.schema import (
    DATA_KINDS,
    DEVICES,
    FID_DIMS,
    FITS,
    MODALITIES,
    PRECISIONS,
    SUBSET_ORDERS,
    AugmentConfig,
    DataConfig,
    ReferenceConfig,
    TrainConfig,
)
from fetalgan.metric_names import EVAL_METRICS
from fetalgan.models import registry


def validate_train(cfg: TrainConfig, prefix: str = "") -> TrainConfig:
    """Check values that types cannot express; return ``cfg`` unchanged."""
    p = prefix
    _choice(f"{p}model", cfg.model, registry.names())
    r = cfg.resolution
    if r < 32 or r > 256 or r & (r - 1):
        raise ConfigError(
            f"{p}resolution: must be a power of two in 32..256 (32, 64, 128, 256), got {r}"
        )
    _choice(f"{p}data.kind", cfg.data.kind, DATA_KINDS)
    if cfg.data.kind != "phantom" and not cfg.data.root:
        raise ConfigError(
            f"{p}data.root: required for data.kind {cfg.data.kind!r} (the dataset directory)"
        )
    _positive(f"{p}data.size", cfg.data.size)
    _positive(f"{p}data.phantom_n", cfg.data.phantom_n)
    _check_selection(cfg.data, f"{p}data", "data")
    _check_reference(cfg, cfg.eval_reference, f"{p}eval_reference", "eval_reference")
    if cfg.fid_dims not in FID_DIMS:
        raise ConfigError(
            f"{p}fid_dims: expected one of {', '.join(map(str, FID_DIMS))}, got {cfg.fid_dims}"
        )
    rot = cfg.data.augment.rotate_deg
    if not 0 <= rot <= 180:
        raise ConfigError(f"{p}data.augment.rotate_deg: must be in 0..180, got {rot}")
    for key in ("epochs", "eval_every", "eval_n", "batch_size", "nz", "ngf", "ndf"):
        _positive(f"{p}{key}", getattr(cfg, key))
    if cfg.batch_size < 2:  # the loop skips one-image batches: nothing would train
        raise ConfigError(
            f"{p}batch_size: must be >= 2 (a training step needs two images for batch-norm), "
            f"got {cfg.batch_size}"
        )
    _positive(f"{p}eval_batch_size", cfg.eval_batch_size)
    for key in ("lr_g", "lr_d"):
        _positive(f"{p}{key}", getattr(cfg, key))
    _positive(f"{p}weight_decay", cfg.weight_decay, allow_zero=True)
    _check_ema(cfg, p)
    _positive(f"{p}seed", cfg.seed, allow_zero=True)
    if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
        raise ConfigError(f"{p}betas: expected two numbers in [0, 1), got {cfg.betas}")
    if not 0 < cfg.real_label <= 1:
        raise ConfigError(f"{p}real_label: must be in (0, 1], got {cfg.real_label}")
    for i, name in enumerate(cfg.eval_metrics):
        _choice(f"{p}eval_metrics[{i}]", name, EVAL_METRICS)
    _validate_families(cfg, p)
    _choice(f"{p}precision", cfg.precision, PRECISIONS)
    _choice(f"{p}device", cfg.device, DEVICES)
    return cfg


def _check_ema(cfg: TrainConfig, p: str) -> None:
    """``ema_decay``: in [0, 1), and only for a model whose generator can be averaged."""
    generators = generator_families()
    decay = cfg.ema_decay
    if decay is None:
        return
    if not 0 <= decay < 1 or not math.isfinite(decay):
        raise ConfigError(f"{p}ema_decay: must be in [0, 1) (0 = off, e.g. 0.999), got {decay}")
    if decay > 0 and cfg.model not in generators:
        raise ConfigError(
            f"{p}ema_decay: model {cfg.model} has no generator to average; EMA is for "
            f"{', '.join(generators)} (set 0 or null)"
        )


def _check_reference(cfg: TrainConfig, ref: ReferenceConfig, path: str, name: str) -> None:
    """A reference section (``eval_reference``, ``select.reference``, ...): counts, kind, a
    root where its dataset needs one, and its selection within the dataset."""
    _positive(f"{path}.size", ref.size)
    _positive(f"{path}.phantom_n", ref.phantom_n)
    _positive(f"{path}.seed", ref.seed, allow_zero=True)
    if ref.kind is not None:
        _choice(f"{path}.kind", ref.kind, DATA_KINDS)
    data = reference_data(cfg, ref)
    if data.kind != "phantom" and not data.root:
        raise ConfigError(f"{path}.root: required for kind {data.kind!r} (the dataset directory)")
    _check_selection(data, path, name)


def _check_patients(data: DataConfig, path: str) -> None:
    """``patients: [lo, hi]``: two fractions, 0 <= lo < hi <= 1, on a dataset with patients."""
    if data.patients is None:
        return
    value = data.patients
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or not 0 <= value[0] < value[1] <= 1
    ):
        raise ConfigError(
            f"{path}: must be [lo, hi], fractions of the dataset's patients with "
            f"0 <= lo < hi <= 1 (e.g. [0.0, 0.8] for training, [0.9, 1.0] for a test set), "
            f"got {value!r}"
        )
    if data.kind == "phantom":
        raise ConfigError(
            f"{path}: the phantom has no patients; choose its images with size, skip and "
            "order, or another phantom_seed"
        )


def _check_selection(data: DataConfig, path: str, phantom_path: str) -> None:
    """``order``, ``skip``, ``fit`` and, for the phantom, that ``skip + size`` fits the pool."""
    _choice(f"{path}.order", data.order, SUBSET_ORDERS)
    _choice(f"{path}.fit", data.fit, FITS)
    _positive(f"{path}.skip", data.skip, allow_zero=True)
    _check_patients(data, f"{path}.patients")
    if data.kind == "phantom" and (data.size or 0) + data.skip > data.phantom_n:
        after = f" after skip {data.skip}" if data.skip else ""
        raise ConfigError(
            f"{path}.size: {data.size}{after} is larger than the dataset "
            f"({phantom_path}.phantom_n = {data.phantom_n} images)"
        )


def reference_data(cfg: TrainConfig, ref: ReferenceConfig | None = None) -> DataConfig:
    """The dataset of ``ref`` (default ``cfg.eval_reference``; also a sweep's
    ``select.reference`` and ``select.test_reference``) as a DataConfig (null fields taken
    from ``cfg.data``, no augmentation). Its images are drawn with the reference's ``seed``.
    Translators (``target_data`` set) compare their translations with the target domain (MR):
    null fields come from ``cfg.target_data`` instead, and so does the phantom's modality."""
    ref, data = ref or cfg.eval_reference, cfg.target_data or cfg.data
    inherited = {
        name: getattr(data, name) if getattr(ref, name) is None else getattr(ref, name)
        for name in (
            "kind", "root", "phantom_n", "phantom_seed", "plane", "brain_plane", "machine",
            "train_split", "skip_corrupt", "cache_dir", "fit", "patients",
        )
    }  # fmt: skip
    return DataConfig(
        **inherited,
        size=ref.size,
        order=ref.order,
        skip=ref.skip,
        augment=AugmentConfig(hflip=False, rotate_deg=0.0),
        modality=data.modality,
        phantom_slices=data.phantom_slices,
    )


def generator_families() -> tuple[str, ...]:
    """The models whose samples can be averaged (EMA) and re-scored (selection): those with
    generators."""
    return tuple(s.name for s in registry.specs() if s.generators)


def _validate_families(cfg: TrainConfig, p: str) -> None:
    """The per-model sections (checked whatever the model, so a sweep's base is all valid),
    after the second domain of translators."""
    _validate_domains(cfg, p)
    for spec in registry.specs():
        if spec.validate is not None:
            spec.validate(cfg, p)


def _validate_domains(cfg: TrainConfig, p: str) -> None:
    """``data``'s and ``target_data``'s phantom rendering; translators (a family with a target
    domain) need a second domain and nothing else uses one."""
    for name, data in (("data", cfg.data), ("target_data", cfg.target_data)):
        if data is not None:
            _choice(f"{p}{name}.modality", data.modality, MODALITIES)
            if not 0 <= data.phantom_slices <= 0.9:
                raise ConfigError(
                    f"{p}{name}.phantom_slices: must be in 0..0.9, got {data.phantom_slices}"
                )
    translators = tuple(s.name for s in registry.specs() if s.target_domain)
    translates = cfg.model in translators
    target = cfg.target_data
    if translates and target is None:
        raise ConfigError(
            f"{p}target_data: model {cfg.model} translates data (US) to a second domain (MR); "
            "set target_data (same keys as data), e.g. {kind: phantom, modality: mri, skip: 500}"
        )
    if target is not None:
        if not translates:
            raise ConfigError(
                f"{p}target_data: only {', '.join(translators)} use a second domain, "
                f"not model {cfg.model}"
            )
        _choice(f"{p}target_data.kind", target.kind, DATA_KINDS)
        if target.kind != "phantom" and not target.root:
            raise ConfigError(f"{p}target_data.root: required for kind {target.kind!r}")
        _positive(f"{p}target_data.size", target.size)
        _positive(f"{p}target_data.phantom_n", target.phantom_n)
        _check_selection(target, f"{p}target_data", "target_data")
    if translates and cfg.resolution < 32:
        raise ConfigError(f"{p}resolution: translation needs >= 32 px, got {cfg.resolution}")
