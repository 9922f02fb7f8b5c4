"""Generator/discriminator families, looked up by the config's ``model`` name.

The registry maps a name to ``"module:builder"`` so that listing names imports no torch.
A builder takes a TrainConfig and returns ``(generator, discriminator)``.
"""

from __future__ import annotations

import importlib

REGISTRY = {
    "dcgan": "fetalgan.models.dcgan:build",
}
MODEL_NAMES = tuple(REGISTRY)


def build(cfg):
    """``(generator, discriminator)`` for ``cfg.model``, initialised, on the CPU."""
    if cfg.model not in REGISTRY:
        raise ValueError(f"model: unknown model {cfg.model!r}; expected one of {', '.join(MODEL_NAMES)}")
    module, func = REGISTRY[cfg.model].split(":")
    return getattr(importlib.import_module(module), func)(cfg)
