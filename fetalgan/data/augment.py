"""Batched augmentation on the training device: random horizontal flip and rotation.

One random draw per batch for each kind and one ``affine_grid`` + ``grid_sample`` for the
rotations, with the flips folded into the same affine map (a ``torch.where`` on the pixels when
there is no rotation): no per-image Python loop and no host sync, so it runs inside the training
step on whatever device holds the batch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def augment_batch(
    images: torch.Tensor,
    *,
    hflip: bool,
    rotate_deg: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Randomly flip (p = 0.5) and rotate ``(B, C, H, W)`` float images in [-1, 1].

    Each image is mirrored left-right with probability 0.5 (if ``hflip``), then rotated about
    its centre by an angle uniform in [-rotate_deg, +rotate_deg] degrees (if ``rotate_deg`` > 0),
    bilinearly, with -1 (black) filling the corners that come from outside the image. The random
    numbers come from ``generator`` (any device) or, when None, from the global torch RNG of the
    images' device, so ``torch.manual_seed`` makes it repeatable. Returns a new tensor of the same
    shape, dtype and device (``images`` itself when both augmentations are off).
    """
    import torch
    import torch.nn.functional as F

    if images.ndim != 4:
        raise ValueError(
            f"augment_batch expects (B, C, H, W) images, got shape {tuple(images.shape)}"
        )
    if rotate_deg < 0:
        raise ValueError(f"rotate_deg: must be >= 0, got {rotate_deg}")
    b, _, h, w = images.shape
    device = images.device
    rand_device = generator.device if generator is not None else device

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=rand_device).to(
            device, non_blocking=True
        )

    flip = uniform(b) < 0.5 if hflip else None  # drawn first, whether or not we rotate
    if rotate_deg == 0:
        if flip is None:
            return images
        return torch.where(flip.view(b, 1, 1, 1), images.flip(-1), images)
    angle = (uniform(b) * 2 - 1) * math.radians(rotate_deg)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    # Output pixel p samples the input at F R p (R: the rotation written in affine_grid's
    # normalised [-1, 1] coordinates, F: the mirror diag(-1, 1) for flipped images), so one
    # grid_sample does both.
    mirror = torch.where(flip, -1.0, 1.0) if flip is not None else torch.ones_like(angle)
    theta = torch.stack(
        [
            torch.stack([mirror * cos, -mirror * sin * (h / w), zero], dim=1),
            torch.stack([sin * (w / h), cos, zero], dim=1),
        ],
        dim=1,
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False).to(images.dtype)
    # grid_sample pads with 0; shifting by +1 first makes the padding -1 (black).
    out = F.grid_sample(
        images + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return out.sub_(1)
