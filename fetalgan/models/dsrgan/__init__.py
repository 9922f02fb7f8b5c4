"""dsrgan: stage A a DDPM (the ``ddpm`` section) at ``resolution``, stage B an SRGAN-style x2
generator; samples come out at 2 x resolution. This module is the torch-free spec (config
section, validation); :mod:`.model` is the implementation."""

from __future__ import annotations

from dataclasses import dataclass

from fetalgan.checks import ConfigError, positive
from fetalgan.models.registry import FamilySpec


@dataclass
class DsrganConfig:
    """``model: dsrgan``: stage A = ``ddpm`` at ``resolution`` for ``epochs_a`` epochs, then
    stage B = SRGAN-style x2 generator (lr ``lr_sr``) and conv discriminator (lr ``lr_d``, width
    ``ndf``); samples are histogram-matched to the real set before super-resolution."""

    epochs_a: int = 50  # epochs of stage A (diffusion); the rest of ``epochs`` train stage B
    sr_blocks: int = 16  # residual blocks of the SR generator (SRGAN: 16)
    sr_width: int = 64  # channels of the SR generator (SRGAN: 64)
    lr_sr: float = 1.0e-4  # SR generator Adam learning rate
    pixel_weight: float = 1.0  # weight of the L1 pixel loss
    adv_weight: float = 1.0e-3  # weight of the adversarial loss (SRGAN: 1e-3)
    hist_match: bool = True  # match each diffusion sample's histogram to the real set


def validate(cfg, p: str) -> None:
    """``dsrgan``: sizes and weights; stage A fits in the run for model dsrgan."""
    ds = cfg.dsrgan
    for key in ("epochs_a", "sr_blocks", "sr_width", "lr_sr"):
        positive(f"{p}dsrgan.{key}", getattr(ds, key))
    for key in ("pixel_weight", "adv_weight"):
        positive(f"{p}dsrgan.{key}", getattr(ds, key), allow_zero=True)
    if cfg.model == "dsrgan" and ds.epochs_a > cfg.epochs:
        raise ConfigError(
            f"{p}dsrgan.epochs_a: stage A cannot be longer than the run; "
            f"got epochs_a {ds.epochs_a} with epochs {cfg.epochs}"
        )


SPEC = FamilySpec(
    name="dsrgan",
    module="fetalgan.models.dsrgan.model",
    section=DsrganConfig,
    validate=validate,
    generators=("unet", "sr_generator"),
    default_ema_decay=0.999,
    upscale=2,  # real images at the output size, 2 x resolution
)
