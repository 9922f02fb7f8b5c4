"""The family registry: one torch-free :class:`FamilySpec` per ``model`` name.

A family is one folder ``fetalgan/models/<name>/``: its ``__init__.py`` holds the spec (the
config section dataclass, its validation, and what the rest of the package needs to know
about the family) and imports no torch; ``model.py`` beside it is the torch implementation
that :func:`fetalgan.models.family` loads (the protocol is in :mod:`fetalgan.models`).

The built-in families are :data:`BUILTIN`, registered in that order (the order of
``MODEL_NAMES``, of ``TrainConfig``'s sections and of the error messages that list them).
Another family is added with :func:`register` before :mod:`fetalgan.config` is first imported:
``TrainConfig`` takes its family sections from the registry once, when it is built (see
``tests/models/test_family_registry.py``).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The built-in families' spec modules, in registry order.
BUILTIN = (
    "fetalgan.models.dcgan",
    "fetalgan.models.ddpm",
    "fetalgan.models.tbgan",
    "fetalgan.models.dsrgan",
    "fetalgan.models.us2mri",
    "fetalgan.models.cyclegan",
)


@dataclass(frozen=True)
class FamilySpec:
    """What the package knows about a family without importing torch."""

    name: str  # the ``model`` value, and the name of its config section
    module: str  # the torch implementation module (LOSS_NAMES, build, train_step, decode, ...)
    section: type | None = None  # the dataclass of ``TrainConfig.<name>``; None: no section
    # Checks of the family's config: called for every config whatever its model (so a sweep's
    # base is all valid), with the prefix of its key paths; model-specific checks test
    # ``cfg.model`` themselves. Raises fetalgan.checks.ConfigError.
    validate: Callable[[Any, str], None] | None = None
    # The networks ``decode`` samples from: what ``ema_decay`` averages and what the final
    # selection re-scores. Empty: the family has neither (the translators).
    generators: tuple[str, ...] = ()
    default_ema_decay: float = 0.0  # ``ema_decay: null`` for this family
    # A translator: the loop loads ``target_data`` (the second domain) and gives train_step an
    # unpaired batch of it as ``ctx.target``; its latents are source images (data layer)
    target_domain: bool = False
    upscale: int = 1  # real images are trained on at upscale x resolution (dsrgan: 2)
    # Keys of the section read once when training starts (PBT/PB2 may not change them)
    read_once: tuple[str, ...] = ()
    # Declared input need: the spacing of the neighbour slices the family takes as extra
    # input channels (3D auxiliary input) for ``cfg``, or None (the slice alone)
    neighbour_step: Callable[[Any], float | None] | None = None

    def real_resolution(self, cfg) -> int:
        """Side of the real images the family trains on."""
        return self.upscale * cfg.resolution

    def source_step(self, cfg) -> float | None:
        """The neighbour-slice spacing ``cfg`` asks of the data layer; None: the slice alone."""
        return self.neighbour_step(cfg) if self.neighbour_step is not None else None

    def implementation(self):
        """The torch implementation module (imports torch)."""
        return importlib.import_module(self.module)


_SPECS: dict[str, FamilySpec] = {}
_state = {"builtins": False, "frozen": False}


def _load_builtins() -> None:
    if _state["builtins"]:
        return
    _state["builtins"] = True
    for path in BUILTIN:
        register(importlib.import_module(path).SPEC)


def register(spec: FamilySpec) -> FamilySpec:
    """Add a family (the built-ins are added this way too). Before ``fetalgan.config`` is
    imported only: ``TrainConfig`` is built once, with a section per registered family."""
    _load_builtins()
    if _state["frozen"]:
        raise RuntimeError(
            f"family {spec.name!r}: register it before fetalgan.config is imported "
            "(TrainConfig takes its family sections from the registry once)"
        )
    if spec.name in _SPECS:
        raise ValueError(f"family {spec.name!r} is already registered")
    if spec.section is not None and not dataclasses.is_dataclass(spec.section):
        raise TypeError(f"family {spec.name!r}: its section must be a dataclass")
    _SPECS[spec.name] = spec
    return spec


def specs() -> tuple[FamilySpec, ...]:
    """Every registered family, in registry order."""
    _load_builtins()
    return tuple(_SPECS.values())


def freeze() -> tuple[FamilySpec, ...]:
    """The families ``TrainConfig`` is built from; no family may be registered after."""
    frozen = specs()
    _state["frozen"] = True
    return frozen


def names() -> tuple[str, ...]:
    return tuple(s.name for s in specs())


def spec(name: str) -> FamilySpec:
    """The spec of a ``model`` name; ValueError for an unknown one."""
    _load_builtins()
    if name not in _SPECS:
        raise ValueError(f"model: unknown model {name!r}; expected one of {', '.join(names())}")
    return _SPECS[name]
