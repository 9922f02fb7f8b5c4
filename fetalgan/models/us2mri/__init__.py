"""us2mri: unpaired ultrasound -> MR translation through a shared latent space (after Jiao et
al. 2020). This module is the torch-free spec (config section, validation, its declared input
need: neighbour slices with ``aux3d``); :mod:`.model` is the implementation."""

from __future__ import annotations

from dataclasses import dataclass

from fetalgan.checks import ConfigError, positive
from fetalgan.models.registry import FamilySpec


@dataclass
class Us2mriConfig:
    """``model: us2mri``: US encoder -> latent shared with an MR autoencoder -> MR decoder;
    adversarial losses on images (lr ``lr_d``) and latents, an adversarial structural
    constraint, cross-modal attention, optional 3D auxiliary input. Generators at ``lr_g``."""

    width: int = 32  # channels of the first encoder layer (x2, x4 at the latent, side R/4)
    latent_blocks: int = 2  # residual blocks on the shared latent
    attention: bool = True  # cross-modal attention block (decoder queries, US encoder keys)
    structural: bool = True  # adversarial structural constraint on (input, output) edge maps
    latent_adversarial: bool = True  # discriminator on latents (US vs MR feature space)
    aux3d: bool = False  # 3D auxiliary input: neighbour slices as channels + a location index
    slice_step: float = 0.1  # aux3d: neighbour slice spacing, fraction of the head half-height
    rec_weight: float = 10.0  # L1 reconstruction of the MR and US autoencoders
    adv_weight: float = 1.0  # image-domain adversarial loss (translated vs real MR)
    latent_weight: float = 1.0  # feature-space adversarial loss
    structure_weight: float = 1.0  # adversarial structural constraint
    eval_source: str | None = None  # folder of held-out US to translate at evaluation
    # (null: phantom data uses held-out pool images; other data its own training images)


def validate(cfg, p: str) -> None:
    """``us2mri``: sizes and weights; 3D auxiliary input needs slices of phantom volumes."""
    um = cfg.us2mri
    for key in ("width", "latent_blocks", "slice_step"):
        positive(f"{p}us2mri.{key}", getattr(um, key))
    for key in ("rec_weight", "adv_weight", "latent_weight", "structure_weight"):
        positive(f"{p}us2mri.{key}", getattr(um, key), allow_zero=True)
    if cfg.model == "us2mri" and um.aux3d and cfg.data.kind != "phantom":
        raise ConfigError(
            f"{p}us2mri.aux3d: needs neighbouring slices and their 3D position, which only the "
            f"phantom's volumes give here (data.kind phantom), got data.kind {cfg.data.kind!r}"
        )


def neighbour_step(cfg) -> float | None:
    """3D auxiliary input: the slices ``slice_step`` below and above each US slice."""
    return cfg.us2mri.slice_step if cfg.us2mri.aux3d else None


SPEC = FamilySpec(
    name="us2mri",
    module="fetalgan.models.us2mri.model",
    section=Us2mriConfig,
    validate=validate,
    target_domain=True,
    read_once=("slice_step",),  # the training set's aux channels are built once
    neighbour_step=neighbour_step,
)
