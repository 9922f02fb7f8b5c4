"""DiffAugment (Zhao et al. 2020) for grey images: differentiable translation and cutout.

The colour policies of the original (brightness, saturation, contrast) are left out: they
change the grey levels that carry the ultrasound signal. The same function is applied to real
and fake images before every discriminator call, so D never sees an un-augmented image and G
receives gradients through the augmentation. Randomness comes from the global torch RNG on
the images' device (one draw per image), so a resumed run repeats it exactly.
"""

from __future__ import annotations

POLICIES = ("translation", "cutout")


def translation(x, ratio: float = 0.125, fill: float = -1.0):
    """Shift each image ``(B, C, H, W)`` by up to ``ratio`` of its side in x and y; pixels
    shifted in take ``fill`` (-1 = black, the ultrasound background)."""
    import torch
    import torch.nn.functional as F

    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    tx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    gb, gy, gx = torch.meshgrid(
        torch.arange(b, device=x.device),
        torch.arange(h, device=x.device),
        torch.arange(w, device=x.device),
        indexing="ij",
    )
    gy = (gy + ty + 1).clamp(0, h + 1)
    gx = (gx + tx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1], value=fill)
    return padded.permute(0, 2, 3, 1)[gb, gy, gx].permute(0, 3, 1, 2)


def cutout(x, ratio: float = 0.5, fill: float = -1.0):
    """Set one square of side ``ratio`` × image side, at a random centre per image, to
    ``fill``."""
    import torch

    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    gb, gy, gx = torch.meshgrid(
        torch.arange(b, device=x.device),
        torch.arange(ch, device=x.device),
        torch.arange(cw, device=x.device),
        indexing="ij",
    )
    gy = (gy + oy - ch // 2).clamp(0, h - 1)
    gx = (gx + ox - cw // 2).clamp(0, w - 1)
    keep = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    keep[gb, gy, gx] = 0
    keep = keep.unsqueeze(1)
    return x * keep + fill * (1 - keep)


_FUNCTIONS = {"translation": translation, "cutout": cutout}


def diff_augment(x, policies=POLICIES, *, fill: float = -1.0):
    """Apply ``policies`` in order to images ``(B, C, H, W)`` in [-1, 1]; same shape out."""
    for name in policies:
        if name not in _FUNCTIONS:
            raise ValueError(f"diffaugment: unknown policy {name!r}; expected one of {POLICIES}")
        x = _FUNCTIONS[name](x, fill=fill)
    return x
