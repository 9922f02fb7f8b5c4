"""The ``tiny`` family's networks: one linear layer each way, non-saturating GAN loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSS_NAMES = ("loss_d", "loss_g")


def build(cfg) -> dict[str, nn.Module]:
    side = cfg.resolution
    return {
        "generator": nn.Linear(cfg.nz, side * side),
        "discriminator": nn.Linear(side * side, 1),
    }


def make_optimizers(cfg, networks) -> dict:
    return {
        name: torch.optim.Adam(networks[net].parameters(), lr=lr, betas=tuple(cfg.betas))
        for name, net, lr in (("g", "generator", cfg.lr_g), ("d", "discriminator", cfg.lr_d))
    }


def train_step(networks, optimizers, real, cfg, ctx):
    d = networks["discriminator"]
    z = torch.randn(real.shape[0], cfg.nz, device=real.device)
    with ctx.autocast():
        fake = decode(networks, z, cfg)
        loss_d = F.softplus(d(fake.detach().flatten(1))).mean()
        loss_d = loss_d + F.softplus(-d(real.flatten(1).float())).mean()
    optimizers["d"].zero_grad(set_to_none=True)
    loss_d.backward()
    optimizers["d"].step()
    with ctx.no_sync("discriminator"), ctx.autocast():
        loss_g = F.softplus(-d(fake.flatten(1))).mean()
    optimizers["g"].zero_grad(set_to_none=True)
    loss_g.backward()
    optimizers["g"].step()
    return torch.stack((loss_d.detach(), loss_g.detach()))


def latents(n: int, cfg, generator):
    return torch.randn(n, cfg.nz, generator=generator)


def decode(networks, latents, cfg):
    side = cfg.resolution
    out = networks["generator"](latents) * cfg.tiny.gain
    return out.tanh().view(-1, 1, side, side)
