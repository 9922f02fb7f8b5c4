"""``ConfigError`` and the value checks the config schema and the family specs share.

A leaf module (no fetalgan import): a family's torch-free spec (``fetalgan/models/<name>/``)
validates its config section with these without importing :mod:`fetalgan.config`, whose
``TrainConfig`` is built from the family registry.
"""

from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
    """A user-facing configuration error; the message starts with the key path."""


def choice(path: str, value: Any, valid: tuple) -> None:
    """ConfigError unless ``value`` is one of ``valid``."""
    if value not in valid:
        raise ConfigError(f"{path}: unknown value {value!r}; expected one of {', '.join(valid)}")


def positive(path: str, value: float | int | None, *, allow_zero: bool = False) -> None:
    """ConfigError unless ``value`` is None or a finite number > 0 (``>= 0``: ``allow_zero``)."""
    if value is None:
        return
    bad = value < 0 if allow_zero else value <= 0
    if bad or (isinstance(value, float) and not math.isfinite(value)):
        rel = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{path}: must be {rel}, got {value!r}")
