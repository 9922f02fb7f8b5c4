"""ddpm: a diffusers UNet2DModel trained as a DDPM and sampled with DDIM (also DSR-GAN's stage
A). This module is the torch-free spec (config section, validation); :mod:`.model` is the
implementation."""

from __future__ import annotations

from dataclasses import dataclass, field

from fetalgan.checks import ConfigError, positive
from fetalgan.models.registry import FamilySpec


@dataclass
class DdpmConfig:
    """``model: ddpm`` (and DSR-GAN's stage A): a diffusers UNet2DModel trained with AdamW at
    ``lr_g`` (with ``betas`` and ``weight_decay``)."""

    # UNet widths, one per level (each level but the last halves the side)
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 256, 256])
    layers_per_block: int = 2  # ResNet blocks per UNet level
    attention: bool = True  # self-attention blocks at the lowest UNet level
    num_train_timesteps: int = 1000  # length of the DDPM noise chain
    beta_start: float = 1.0e-4  # linear beta schedule: first beta
    beta_end: float = 0.02  # linear beta schedule: last beta
    sample_steps: int = 100  # DDIM steps (eta 0) when sampling; the study used 40 or 100
    pretrained: str | None = None  # local diffusers UNet2DModel directory to start from


def validate(cfg, p: str) -> None:
    """``ddpm``: widths, schedule and sampling steps; its depth fits ``resolution`` when
    it is the model's UNet (ddpm, dsrgan)."""
    dd = cfg.ddpm
    if not dd.block_out_channels:
        raise ConfigError(f"{p}ddpm.block_out_channels: expected widths, e.g. [64, 128]")
    for i, width in enumerate(dd.block_out_channels):
        positive(f"{p}ddpm.block_out_channels[{i}]", width)
    levels = len(dd.block_out_channels)
    if cfg.model in ("ddpm", "dsrgan") and cfg.resolution % 2 ** (levels - 1):
        raise ConfigError(
            f"{p}ddpm.block_out_channels: {levels} levels halve {levels - 1} times, "
            f"too many for resolution {cfg.resolution}"
        )
    for key in ("layers_per_block", "num_train_timesteps", "sample_steps"):
        positive(f"{p}ddpm.{key}", getattr(dd, key))
    if not 0 < dd.beta_start < dd.beta_end < 1:
        raise ConfigError(
            f"{p}ddpm.beta_start/beta_end: need 0 < beta_start < beta_end < 1, "
            f"got {dd.beta_start}, {dd.beta_end}"
        )
    if dd.sample_steps > dd.num_train_timesteps:
        raise ConfigError(
            f"{p}ddpm.sample_steps: must be <= ddpm.num_train_timesteps "
            f"({dd.num_train_timesteps}), got {dd.sample_steps}"
        )


SPEC = FamilySpec(
    name="ddpm",
    module="fetalgan.models.ddpm.model",
    section=DdpmConfig,
    validate=validate,
    generators=("unet",),
    default_ema_decay=0.999,
    read_once=("beta_start", "beta_end"),  # the noise schedule is built once
)
