"""Model families, looked up by the config's ``model`` name.

Each family is one folder ``fetalgan/models/<name>/``: a torch-free spec in its
``__init__.py`` (:class:`~fetalgan.models.registry.FamilySpec`: config section, validation,
generators, default EMA, target domain, real resolution, declared inputs) and the torch
implementation in ``model.py``. The registry (:mod:`.registry`) lists them, so listing names
and loading configs import no torch. ``MODEL_NAMES``, ``REGISTRY`` (name -> implementation
module) and ``GENERATORS`` are read from it when asked for.

The implementation is a module with module-level functions that the one training loop calls:

- ``LOSS_NAMES``: names of the losses ``train_step`` returns, e.g. ``("loss_d", "loss_g")``;
- ``build(cfg) -> dict[str, nn.Module]``: the networks, initialised, on the CPU;
- ``make_optimizers(cfg, networks) -> dict[str, Optimizer]``;
- ``train_step(networks, optimizers, real, cfg, ctx) -> Tensor``: one optimisation step on a
  batch of real images ``(B, C, R, R)`` in [-1, 1]; returns the detached losses as one tensor
  on the device (no host sync); ``ctx`` gives ``autocast()`` and ``no_sync(name)``;
- ``latents(n, cfg, generator) -> Tensor``: the random inputs of ``n`` samples, on the CPU
  (not for translators: see below);
- ``decode(networks, latents, cfg) -> Tensor``: images ``(n, 1, R', R')`` in [-1, 1].

Translation families (``us2mri``, ``cyclegan``: spec ``target_domain``) train on a second,
unpaired domain: the loop loads ``cfg.target_data`` and gives ``train_step`` an unpaired batch
of it as ``ctx.target``. Their inputs are US images from the data layer
(:mod:`fetalgan.data.translation_inputs`, asked by :func:`fetalgan.sampling.latents` and the
loop), with the neighbour slices the spec declares (``neighbour_step``: 3D auxiliary input) as
extra channels; ``decode`` = ``translate(networks, us, cfg)``.

Adding a family: a folder ``models/<name>/`` (spec + ``model.py``), its name in
``registry.BUILTIN``, a sweep file and tests (``tests/models/test_family_registry.py`` adds a
test-only one).
"""

from __future__ import annotations

from types import ModuleType

from fetalgan.models import registry


def family(name: str) -> ModuleType:
    """The family module (the torch implementation) for a ``model`` name."""
    return registry.spec(name).implementation()


def build(cfg) -> dict:
    """The networks of ``cfg.model``, initialised, on the CPU, by name."""
    return family(cfg.model).build(cfg)


def ema_decay(cfg) -> float:
    """The EMA decay of ``cfg``: ``cfg.ema_decay``, else the family's default; 0.0 = off."""
    if cfg.ema_decay is not None:
        return float(cfg.ema_decay)
    return registry.spec(cfg.model).default_ema_decay


def __getattr__(name: str):
    # Derived from the registry when read, so a family registered later is in them.
    if name == "MODEL_NAMES":
        return registry.names()
    if name == "REGISTRY":  # name -> implementation module path
        return {s.name: s.module for s in registry.specs()}
    if name == "GENERATORS":  # the networks decode samples from (what ema_decay averages)
        return {s.name: s.generators for s in registry.specs() if s.generators}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
