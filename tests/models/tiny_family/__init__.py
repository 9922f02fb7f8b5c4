"""A test-only model family, ``tiny``: the torch-free spec. Adding a family is this folder
(a spec here, the networks in ``model.py``) and registering the spec before
``fetalgan.config`` is imported (the built-ins are in ``fetalgan.models.registry.BUILTIN``)."""

from __future__ import annotations

from dataclasses import dataclass

from fetalgan.checks import ConfigError, positive
from fetalgan.models.registry import FamilySpec


@dataclass
class TinyConfig:
    """``model: tiny``: a one-layer generator and a one-layer discriminator."""

    hidden: int = 4  # unused width, a key to set and check
    gain: float = 1.0  # scale of the generator's output before tanh


def validate(cfg, p: str) -> None:
    positive(f"{p}tiny.hidden", cfg.tiny.hidden)
    if cfg.model == "tiny" and cfg.tiny.gain > 10:
        raise ConfigError(f"{p}tiny.gain: at most 10 for model tiny, got {cfg.tiny.gain}")


SPEC = FamilySpec(
    name="tiny",
    module="tiny_family.model",
    section=TinyConfig,
    validate=validate,
    generators=("generator",),
)
