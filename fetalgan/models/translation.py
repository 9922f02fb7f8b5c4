"""What the translation families (``us2mri``, ``cyclegan``) share: their inputs (fetched by the
data layer, :mod:`fetalgan.data.translation_inputs`), structure maps, a PatchGAN discriminator
and the LSGAN loss.

A translator's "latents" are US images ``(n, C, R, R)`` in [-1, 1] and ``decode`` translates
them to MR ``(n, 1, R, R)``, so the one sampling path (training evaluation, ``generate``, the
MLflow model) yields MR-like images that FID/KID compare with the MR reference. The family
declares what inputs it needs (its spec's ``target_domain`` and ``neighbour_step``: 3D
auxiliary input) and the data layer provides them (:mod:`fetalgan.data.translation_inputs`,
called by the training loop and the sampler): no model module imports the data layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fetalgan.models import registry


def source_channels(cfg) -> int:
    """Channels of a translator's input: 1, or 4 with neighbour slices (3D auxiliary input)."""
    return 1 if registry.spec(cfg.model).source_step(cfg) is None else 4


def structure_map(images):
    """Edges of ``(B, 1, H, W)`` images in [-1, 1]: the gradient magnitude of a 3x3-blurred
    copy (Sobel), divided by its per-image mean -> ``(B, 1, H, W)``, about 1 on average.
    Dividing by the mean makes the map independent of the modality's contrast scale."""
    x = F.avg_pool2d(images.float(), 3, stride=1, padding=1, count_include_pad=False)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=x.device)
    kernels = torch.stack([kx, kx.t()])[:, None]
    grad = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels)
    magnitude = grad.pow(2).sum(1, keepdim=True).add(1e-12).sqrt()  # finite gradient at 0
    return magnitude / magnitude.mean(dim=(2, 3), keepdim=True)


def fan_mask(us_images):
    """1 inside the US field of view, 0 outside and on its border (the fan's edge is
    acquisition, not anatomy): ``(B, 1, H, W)``."""
    inside = (us_images.float() > -0.97).float()
    return -F.max_pool2d(-inside, 7, stride=1, padding=3)  # erosion by a 7x7 square


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017): ``(B, C, S, S)`` -> ``(B, 1, S/8, S/8)`` real/fake scores
    of overlapping patches; strided 4x4 convolutions, instance norm, leaky ReLU."""

    def __init__(self, channels: int, width: int, layers: int = 3):
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        w = width
        for _ in range(1, layers):
            seq += [
                nn.Conv2d(w, min(w * 2, 512), 4, 2, 1),
                nn.InstanceNorm2d(min(w * 2, 512), affine=True),
                nn.LeakyReLU(0.2),
            ]
            w = min(w * 2, 512)
        seq += [nn.Conv2d(w, 1, 3, 1, 1)]
        self.main = nn.Sequential(*seq)

    def forward(self, x):
        return self.main(x)


class ResidualBlock(nn.Module):
    """``x + conv(norm(relu(conv(norm(x)))))`` with instance norm (CycleGAN's block)."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, 1, 1, padding_mode="reflect"),
            nn.InstanceNorm2d(width, affine=True),
            nn.ReLU(True),
            nn.Conv2d(width, width, 3, 1, 1, padding_mode="reflect"),
            nn.InstanceNorm2d(width, affine=True),
        )

    def forward(self, x):
        return x + self.body(x)


def down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, 2, 1), nn.InstanceNorm2d(c_out, affine=True), nn.ReLU(True)
    )


def up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(c_in, c_out, 3, 1, 1),
        nn.InstanceNorm2d(c_out, affine=True),
        nn.ReLU(True),
    )


def stem(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 7, 1, 3, padding_mode="reflect"),
        nn.InstanceNorm2d(c_out, affine=True),
        nn.ReLU(True),
    )


def head(c_in: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, 1, 7, 1, 3, padding_mode="reflect"), nn.Tanh())


def init_weights(module: nn.Module) -> None:
    """Convolutions N(0, 0.02), biases 0 (CycleGAN's ``normal`` init)."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def lsgan(scores, target: float):
    """Least-squares GAN loss (Mao et al. 2017): mean of (score - target)^2, in fp32."""
    scores = scores.float()
    return (scores - target).pow(2).mean()
