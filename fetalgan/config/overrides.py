"""Dotted-key overrides: the one setter (:func:`set_key`) that ``--set`` (:func:`apply_overrides`),
:func:`with_overrides` and a sweep trial's config (``sweep.space.trial_config``) put values in
with, and the build of a validated ``TrainConfig`` from plain data."""

from __future__ import annotations

from typing import Any

import yaml

from fetalgan.checks import ConfigError
from fetalgan.config.params import to_dict
from fetalgan.config.rules import validate_train
from fetalgan.config.schema import TRAIN_KEYS, TrainConfig
from fetalgan.config.strict import _build


def set_key(data: dict, key: str, value: Any) -> None:
    """Put ``value`` at the dotted ``key`` (``lr_g``, ``data.size``) of the nested dict
    ``data`` (a config as YAML or :func:`to_dict` gives it), in place. A section on the way
    that is missing or null (``target_data`` when it is not set) becomes a mapping, which the
    build fills with its defaults; a value on the way that is not a section is a
    ConfigError. Whether ``key`` exists is the build's (or the caller's) check."""
    node = data
    *parents, last = key.split(".")
    for part in parents:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {part} is not a section")
    node[last] = value


def apply_overrides(data: dict, overrides: list[str], *, prefix: str = "") -> dict:
    """Apply ``key.path=value`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"--set {item!r}: expected KEY=VALUE, e.g. lr_g=1e-3 or data.size=300"
            )
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw else None
        try:
            set_key(data, prefix + key.strip(), value)
        except ConfigError as err:
            raise ConfigError(f"--set {err}") from None
    return data


def train_config_from_dict(data: dict, prefix: str = "") -> TrainConfig:
    return validate_train(_build(TrainConfig, data, prefix.rstrip(".")), prefix)


def with_overrides(cfg: TrainConfig, flat: dict[str, Any]) -> TrainConfig:
    """A copy of ``cfg`` with dotted-key values applied (as a sweep trial does), validated."""
    data = to_dict(cfg)
    for key, value in flat.items():
        if key not in TRAIN_KEYS:
            raise ConfigError(f"{key}: unknown training key")
        set_key(data, key, value)
    return train_config_from_dict(data)
