"""tbgan: a StyleSwin-style transformer generator with a conv discriminator, DiffAugment and
R1. This module is the torch-free spec (config section, validation); :mod:`.model` is the
implementation."""

from __future__ import annotations

from dataclasses import dataclass, field

from fetalgan.checks import ConfigError, choice, positive
from fetalgan.models.registry import FamilySpec

DIFFAUGMENT_POLICIES = ("translation", "cutout")


@dataclass
class TbganConfig:
    """``model: tbgan``: StyleSwin-style transformer generator (widths from ``ngf``, latent
    ``nz``), conv discriminator (width ``ndf``), DiffAugment, non-saturating loss + R1."""

    w_dim: int = 256  # style vector size (mapping network output)
    mapping_layers: int = 4  # MLP layers of the mapping network
    max_width: int = 256  # generator channel cap at the low-resolution stages
    start_resolution: int = 8  # side of the learned constant input
    window_size: int = 8  # attention window side (tokens per window = window_size**2)
    head_dim: int = 32  # channels per attention head
    r1_gamma: float = 10.0  # R1 penalty weight on real images; 0 = off
    # DiffAugment policies, colour-free for grey: translation, cutout; [] = off
    diffaugment: list[str] = field(default_factory=lambda: ["translation", "cutout"])


def validate(cfg, p: str) -> None:
    """``tbgan``: sizes, the start resolution (<= resolution for model tbgan), DiffAugment
    policies; R1's double backward refuses torch.compile."""
    tb = cfg.tbgan
    for key in ("w_dim", "mapping_layers", "max_width", "window_size", "head_dim"):
        positive(f"{p}tbgan.{key}", getattr(tb, key))
    positive(f"{p}tbgan.r1_gamma", tb.r1_gamma, allow_zero=True)
    s0 = tb.start_resolution
    if s0 < 4 or s0 & (s0 - 1) or (cfg.model == "tbgan" and s0 > cfg.resolution):
        raise ConfigError(
            f"{p}tbgan.start_resolution: must be a power of two >= 4 and <= resolution, got {s0}"
        )
    for i, name in enumerate(tb.diffaugment):
        choice(f"{p}tbgan.diffaugment[{i}]", name, DIFFAUGMENT_POLICIES)
    if cfg.compile and cfg.model == "tbgan" and tb.r1_gamma > 0:
        raise ConfigError(
            f"{p}compile: tbgan's R1 penalty differentiates the discriminator's gradient "
            "(double backward), which torch.compile'd modules refuse; set compile: false, "
            f"or tbgan.r1_gamma: 0 (now {tb.r1_gamma:g})"
        )


SPEC = FamilySpec(
    name="tbgan",
    module="fetalgan.models.tbgan.model",
    section=TbganConfig,
    validate=validate,
    generators=("generator",),
    default_ema_decay=0.999,
)
