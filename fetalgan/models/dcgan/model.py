"""DCGAN (Radford et al. 2016) for grey images, as used by the HC18 study (DCGAN64/128).

Depth grows with log2(resolution): the generator starts from a 4×4 map of
``ngf * 2**(L-1)`` channels and doubles the side L = log2(resolution) - 2 times; the
discriminator mirrors it. At 64 px this is exactly the PyTorch DCGAN example's network.
Weights are initialised N(0, 0.02) (convolutions) and N(1, 0.02) (batch-norm scale).
"""

from __future__ import annotations

import math

from torch import nn


def _n_up(resolution: int) -> int:
    n = int(math.log2(resolution)) - 2
    if 2 ** (n + 2) != resolution or not 3 <= n <= 6:
        raise ValueError(f"resolution: must be a power of two in 32..256, got {resolution}")
    return n


class Generator(nn.Module):
    """z (B, nz, 1, 1) -> image (B, 1, R, R) in [-1, 1]."""

    def __init__(self, resolution: int = 64, nz: int = 100, ngf: int = 64, channels: int = 1):
        super().__init__()
        n = _n_up(resolution)
        width = ngf * 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz, width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(n - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.nz = nz
        self.resolution = resolution

    def forward(self, z):
        return self.main(z)


class Discriminator(nn.Module):
    """image (B, 1, R, R) -> logit (B,). The sigmoid lives in the loss (BCEWithLogits)."""

    def __init__(self, resolution: int = 64, ndf: int = 64, channels: int = 1):
        super().__init__()
        n = _n_up(resolution)
        layers: list[nn.Module] = [
            nn.Conv2d(channels, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        width = ndf
        for _ in range(n - 1):
            layers += [
                nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            width *= 2
        layers += [nn.Conv2d(width, 1, 4, 1, 0, bias=False)]
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x).flatten()


def init_weights(module: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02); batch-norm weight N(1, 0.02), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


LOSS_NAMES = ("loss_d", "loss_g")


def build(cfg) -> dict[str, nn.Module]:
    generator = Generator(cfg.resolution, cfg.nz, cfg.ngf)
    discriminator = Discriminator(cfg.resolution, cfg.ndf)
    generator.apply(init_weights)
    discriminator.apply(init_weights)
    return {"generator": generator, "discriminator": discriminator}


def make_optimizers(cfg, networks: dict[str, nn.Module]) -> dict:
    """Adam with separate learning rates for G and D, the study's betas and weight decay."""
    import torch

    lrs = {"generator": cfg.lr_g, "discriminator": cfg.lr_d}
    return {
        name: torch.optim.Adam(
            net.parameters(), lr=lrs[name], betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
        )
        for name, net in networks.items()
    }


def _bce(logits, target: float):
    import torch
    import torch.nn.functional as F

    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def train_step(networks, optimizers, real, cfg, ctx):
    """One DCGAN step: D on separate real and fake batches (BCE, real target ``real_label``
    for one-sided label smoothing), then G with the non-saturating loss."""
    import torch

    net_g, net_d = networks["generator"], networks["discriminator"]
    opt_g, opt_d = optimizers["generator"], optimizers["discriminator"]
    z = torch.randn(real.shape[0], cfg.nz, 1, 1, device=real.device)
    with ctx.autocast():
        fake = net_g(z)
        loss_d = _bce(net_d(real), cfg.real_label) + _bce(net_d(fake.detach()), 0.0)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()

    with ctx.no_sync("discriminator"), ctx.autocast():  # D's gradients here are discarded
        loss_g = _bce(net_d(fake), 1.0)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return torch.stack((loss_d.detach(), loss_g.detach()))


def latents(n: int, cfg, generator):
    import torch

    return torch.randn(n, cfg.nz, 1, 1, generator=generator)


def decode(networks, latents, cfg):
    return networks["generator"](latents)
