"""The loaders: a sweep file (:func:`load_sweep`, the one sweep loader), a training file
(:func:`load_train`, a sweep's ``base`` or a bare TrainConfig file), each with ``--set``
overrides, and what best means for ``fetalgan train FILE`` (:func:`load_objective`)."""

from __future__ import annotations

from pathlib import Path

from fetalgan.checks import ConfigError
from fetalgan.checks import choice as _choice
from fetalgan.config.overrides import apply_overrides, train_config_from_dict
from fetalgan.config.params import to_dict
from fetalgan.config.schema import SWEEP_KEYS, SweepConfig, TrainConfig
from fetalgan.config.strict import _build, read_yaml
from fetalgan.config.sweep_rules import validate_sweep
from fetalgan.evaluation import Objective


def sweep_overrides(overrides: list[str]) -> list[str]:
    """``--set`` items of a sweep: a key whose first part is a sweep-file key
    (``max_concurrent``, ``num_samples``, ``scheduler.max_t``, ``base.lr_g``) stays as it is;
    any other key is a ``base`` key (``lr_g=1e-3``, ``data.size=300``)."""
    routed = []
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        routed.append(item if key.split(".")[0] in SWEEP_KEYS else f"base.{item.strip()}")
    return routed


def load_sweep(path: str | Path | SweepConfig, overrides: list[str] = ()) -> SweepConfig:
    """The one sweep loader: read (or take) a sweep, apply ``--set`` overrides (sweep-file keys
    or ``base`` keys, see :func:`sweep_overrides`) and validate all of it, the checks that need
    the whole sweep included. Errors name the file and the key path."""
    overrides = sweep_overrides(list(overrides))
    if isinstance(path, SweepConfig):
        if not overrides:
            return validate_sweep(path)
        data, where = to_dict(path), "sweep"
    else:
        data, where = read_yaml(path), str(path)
    base = data.get("base")
    if base is not None and not isinstance(base, dict):
        raise ConfigError(f"{where}: base: expected a mapping, got {base!r}")
    data = apply_overrides(data, overrides)
    try:
        return validate_sweep(_build(SweepConfig, data, ""))
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def load_train(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """The ``base`` section of a sweep file (or a bare TrainConfig file), with overrides."""
    data = read_yaml(path)
    prefix = "base." if "base" in data else ""
    if prefix and not isinstance(data["base"], dict):
        raise ConfigError(f"{path}: base: expected a mapping, got {data['base']!r}")
    base = apply_overrides(dict(data["base"] if prefix else data), list(overrides))
    try:
        return train_config_from_dict(base, prefix)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def load_objective(path: str | Path):
    """What best means for ``fetalgan train FILE``: a sweep file's ``metric``/``mode``; None
    for a bare training file or a sweep file without ``metric``, which ``train`` reads as its
    default (the lowest FID, else KID, else LBPv distance, among what ``eval_metrics``
    computes; no ``best.pt`` when nothing is evaluated)."""
    data = read_yaml(path)
    if "base" not in data or "metric" not in data:
        return None  # train's default_objective: FID, else KID, else LBPv, else no best.pt
    metric, mode = data["metric"], data.get("mode", "min")
    if not isinstance(metric, str):
        raise ConfigError(f"{path}: metric: expected a string, got {metric!r}")
    _choice(f"{path}: mode", mode, ("min", "max"))
    return Objective(metric, mode)
