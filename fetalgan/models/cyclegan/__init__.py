"""cyclegan: the unpaired translation baseline (Zhu et al. 2017). This module is the torch-free
spec (config section, validation); :mod:`.model` is the implementation."""

from __future__ import annotations

from dataclasses import dataclass

from fetalgan.checks import positive
from fetalgan.models.registry import FamilySpec


@dataclass
class CycleganConfig:
    """``model: cyclegan``: the unpaired baseline (Zhu et al. 2017): two ResNet generators
    (lr ``lr_g``), two PatchGAN discriminators (lr ``lr_d``), least-squares GAN loss."""

    width: int = 32  # generator channels at full resolution (x2, x4 after two downsamplings)
    blocks: int = 4  # residual blocks of each generator (CycleGAN: 6 at 128 px, 9 at 256)
    cycle_weight: float = 10.0  # L1 cycle consistency, both directions
    identity_weight: float = 0.0  # L1 identity loss (x5 in CycleGAN; off: the domains differ)


def validate(cfg, p: str) -> None:
    """``cyclegan``: sizes and weights."""
    cg = cfg.cyclegan
    for key in ("width", "blocks"):
        positive(f"{p}cyclegan.{key}", getattr(cg, key))
    for key in ("cycle_weight", "identity_weight"):
        positive(f"{p}cyclegan.{key}", getattr(cg, key), allow_zero=True)


SPEC = FamilySpec(
    name="cyclegan",
    module="fetalgan.models.cyclegan.model",
    section=CycleganConfig,
    validate=validate,
    target_domain=True,
)
