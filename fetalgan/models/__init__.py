"""Model families, looked up by the config's ``model`` name.

A family is a module with module-level functions that the one training loop calls:

- ``LOSS_NAMES``: names of the losses ``train_step`` returns, e.g. ``("loss_d", "loss_g")``;
- ``build(cfg) -> dict[str, nn.Module]``: the networks, initialised, on the CPU;
- ``make_optimizers(cfg, networks) -> dict[str, Optimizer]``;
- ``train_step(networks, optimizers, real, cfg, ctx) -> Tensor``: one optimisation step on a
  batch of real images ``(B, 1, R, R)`` in [-1, 1]; returns the detached losses as one tensor
  on the device (no host sync); ``ctx`` gives ``autocast()`` and ``no_sync(name)``;
- ``latents(n, cfg, generator) -> Tensor``: the random inputs of ``n`` samples, on the CPU;
- ``decode(networks, latents, cfg) -> Tensor``: images ``(n, 1, R', R')`` in [-1, 1].

Translation families (``us2mri``, ``cyclegan``) also set ``TARGET_DOMAIN = True``: the loop
loads ``cfg.target_data`` and gives ``train_step`` an unpaired batch of it as ``ctx.target``;
their ``latents`` are US inputs, ``decode`` = ``translate(networks, us, cfg)``, and an optional
``source_images(cfg, dataset)`` adds input channels (3D auxiliary input) to the training set.

The registry maps a name to a module path so that listing names imports no torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType

REGISTRY = {
    "dcgan": "fetalgan.models.dcgan",
    "ddpm": "fetalgan.models.ddpm",
    "tbgan": "fetalgan.models.tbgan",
    "dsrgan": "fetalgan.models.dsrgan",
    "us2mri": "fetalgan.models.us2mri",
    "cyclegan": "fetalgan.models.cyclegan",
}
MODEL_NAMES = tuple(REGISTRY)


def family(name: str) -> ModuleType:
    """The family module for a ``model`` name."""
    if name not in REGISTRY:
        raise ValueError(f"model: unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    return importlib.import_module(REGISTRY[name])


def build(cfg) -> dict:
    """The networks of ``cfg.model``, initialised, on the CPU, by name."""
    return family(cfg.model).build(cfg)


# The networks ``decode`` samples from, by family: what ``ema_decay`` averages.
GENERATORS = {
    "dcgan": ("generator",),
    "ddpm": ("unet",),
    "tbgan": ("generator",),
    "dsrgan": ("unet", "sr_generator"),
}
# ``ema_decay: null`` by family: off for the paper's DCGAN (its study sampled raw weights), on
# for the diffusion and transformer families, which are trained and sampled with an average.
DEFAULT_EMA_DECAY = {"ddpm": 0.999, "tbgan": 0.999, "dsrgan": 0.999}


def ema_decay(cfg) -> float:
    """The EMA decay of ``cfg``: ``cfg.ema_decay``, else the family's default; 0.0 = off."""
    if cfg.ema_decay is not None:
        return float(cfg.ema_decay)
    return DEFAULT_EMA_DECAY.get(cfg.model, 0.0)
