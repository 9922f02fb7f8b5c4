"""CycleGAN (Zhu et al. 2017), the unpaired baseline us2mri is compared with.

Two ResNet generators (``cyclegan.width`` = w at full resolution, two stride-2 downsamplings to
4w, ``cyclegan.blocks`` residual blocks, two upsamplings; instance norm, reflection padding):
``us_to_mr`` and ``mr_to_us``; two PatchGAN discriminators ``mr_disc`` and ``us_disc``
(width ``ndf``). Least-squares GAN loss, L1 cycle consistency in both directions
(``cycle_weight``) and an optional L1 identity loss (``identity_weight``). Optimisers
``generators`` (Adam at ``lr_g``) and ``discriminators`` (``lr_d``). US from the loop's batch,
MR from ``ctx.target`` (unpaired).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from fetalgan.models import translation as tr

LOSS_NAMES = ("loss_d", "loss_g", "loss_cycle")
GENERATORS = ("us_to_mr", "mr_to_us")


class ResnetGenerator(nn.Module):
    """``(B, 1, R, R)`` -> ``(B, 1, R, R)`` in [-1, 1]."""

    def __init__(self, width: int, blocks: int):
        super().__init__()
        self.main = nn.Sequential(
            tr.stem(1, width),
            tr.down(width, 2 * width),
            tr.down(2 * width, 4 * width),
            *[tr.ResidualBlock(4 * width) for _ in range(blocks)],
            tr.up(4 * width, 2 * width),
            tr.up(2 * width, width),
            tr.head(width),
        )

    def forward(self, x):
        return self.main(x)


def build(cfg) -> dict[str, nn.Module]:
    cg = cfg.cyclegan
    nets: dict[str, nn.Module] = {
        "us_to_mr": ResnetGenerator(cg.width, cg.blocks),
        "mr_to_us": ResnetGenerator(cg.width, cg.blocks),
        "mr_disc": tr.PatchDiscriminator(1, cfg.ndf),
        "us_disc": tr.PatchDiscriminator(1, cfg.ndf),
    }
    for net in nets.values():
        net.apply(tr.init_weights)
    return nets


def make_optimizers(cfg, networks: dict[str, nn.Module]) -> dict:
    betas = tuple(cfg.betas)
    gen = [p for n in GENERATORS for p in networks[n].parameters()]
    disc = [p for n in ("mr_disc", "us_disc") for p in networks[n].parameters()]
    return {
        "generators": torch.optim.Adam(gen, lr=cfg.lr_g, betas=betas),
        "discriminators": torch.optim.Adam(disc, lr=cfg.lr_d, betas=betas),
    }


def train_step(networks, optimizers, real, cfg, ctx):
    """One CycleGAN step on a US batch ``real`` and an unpaired MR batch ``ctx.target``:
    discriminators, then both generators. Returns ``[loss_d, loss_g, loss_cycle]``."""
    cg = cfg.cyclegan
    us, mr = real[:, :1], ctx.target
    g_um, g_mu = networks["us_to_mr"], networks["mr_to_us"]
    d_mr, d_us = networks["mr_disc"], networks["us_disc"]
    opt_g, opt_d = optimizers["generators"], optimizers["discriminators"]
    with ctx.autocast():
        fake_mr, fake_us = g_um(us), g_mu(mr)
        loss_d = 0.5 * (
            tr.lsgan(d_mr(mr), 1.0)
            + tr.lsgan(d_mr(fake_mr.detach()), 0.0)
            + tr.lsgan(d_us(us), 1.0)
            + tr.lsgan(d_us(fake_us.detach()), 0.0)
        )
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()

    with contextlib.ExitStack() as stack:  # the discriminators' gradients here are discarded
        stack.enter_context(ctx.no_sync("mr_disc"))
        stack.enter_context(ctx.no_sync("us_disc"))
        stack.enter_context(ctx.autocast())
        adversarial = tr.lsgan(d_mr(fake_mr), 1.0) + tr.lsgan(d_us(fake_us), 1.0)
        cycle = F.l1_loss(g_mu(fake_mr).float(), us.float()) + F.l1_loss(
            g_um(fake_us).float(), mr.float()
        )
        loss_g = adversarial + cg.cycle_weight * cycle
        if cg.identity_weight > 0:
            identity = F.l1_loss(g_um(mr).float(), mr.float()) + F.l1_loss(
                g_mu(us).float(), us.float()
            )
            loss_g = loss_g + cg.identity_weight * identity
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return torch.stack((loss_d.detach(), adversarial.detach(), cycle.detach()))


def translate(networks, us, cfg):
    """US ``(n, C, R, R)`` in [-1, 1] (channel 0 is used) -> MR-like ``(n, 1, R, R)``."""
    return networks["us_to_mr"](us[:, :1])


decode = translate  # the sampling path: its latents are US inputs (fetalgan.sampling.latents)
