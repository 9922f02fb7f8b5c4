"""DSR-GAN: diffusion at ``resolution``, histogram matching, then an SRGAN-style ×2 generator.

Two stages from one config, switched by epoch:

- Stage A (epochs ``0 .. dsrgan.epochs_a - 1``): the ``ddpm`` family's UNet (``cfg.ddpm``)
  learns to denoise real images at ``resolution`` (AdamW at ``lr_g``). Every real batch also
  adds to the real set's grey-level histogram (256 uint8 levels), kept in a buffer.
- Stage B (the rest of ``epochs``): an SR generator (Ledig et al. 2017, without batch norm:
  ``sr_blocks`` residual blocks of ``sr_width`` channels whose skip adds the block's input,
  a long skip over the body, pixel-shuffle ×2, plus a bilinear ×2 of the input) and a conv
  discriminator are trained on (downsampled real -> real) pairs with ``pixel_weight`` · L1 +
  ``adv_weight`` · non-saturating BCE (no perceptual loss: it would need downloaded VGG
  weights). Adam at ``dsrgan.lr_sr`` (G) and ``lr_d`` (D).

Sampling (``decode``): DDIM from the noise latents at ``resolution``, each sample's histogram
matched to the stored real histogram (``skimage.exposure.match_histograms``' CDF mapping),
then the SR generator -> ``(n, 1, 2R, 2R)``; before stage B has run a step, bilinear ×2.

Real images at 2R: the trainer gives batches at ``resolution``. A loop that honours
its spec's ``real_resolution(cfg)`` (``upscale`` 2: 2 × ``resolution``) gives true (R -> 2R) pairs; at ``resolution``
the SR stage learns ×2 on (R/2 -> R) pairs of the same images (it is fully convolutional) and
is applied at R -> 2R. Stage: ``ctx.epoch`` when the loop provides it; otherwise inferred from
a step counter buffer and the per-epoch step count of ``data.size`` images (or
``data.phantom_n`` for phantoms). All state (counters, histogram) lives in buffers of the SR
generator, so checkpoints and resume across the stage boundary need nothing else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fetalgan.models.ddpm import model as ddpm

LOSS_NAMES = ("loss_diffusion", "loss_sr_d", "loss_sr_g")


class ResidualBlock(nn.Module):
    """``x + conv(PReLU(conv(x)))``: the skip adds the block's input unchanged."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.act = nn.PReLU(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(self.act(self.conv1(x)))


class SRGenerator(nn.Module):
    """``(B, 1, H, W)`` in [-1, 1] -> ``(B, 1, 2H, 2W)``: SRGAN body on top of bilinear ×2.

    Buffers (saved in checkpoints): ``real_hist`` (256,) counts of the real images' uint8
    grey levels; ``steps`` optimiser steps of either stage; ``sr_steps`` steps of stage B.
    """

    def __init__(self, blocks: int = 16, width: int = 64):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(1, width, 9, padding=4), nn.PReLU(width))
        self.body = nn.Sequential(
            *[ResidualBlock(width) for _ in range(blocks)], nn.Conv2d(width, width, 3, padding=1)
        )
        self.upsample = nn.Sequential(
            nn.Conv2d(width, 4 * width, 3, padding=1), nn.PixelShuffle(2), nn.PReLU(width)
        )
        self.tail = nn.Conv2d(width, 1, 9, padding=4)
        self.register_buffer("real_hist", torch.zeros(256, dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("sr_steps", torch.zeros((), dtype=torch.int64))
        self.steps_seen: int | None = None  # host copy of ``steps``, read once after load
        self.register_load_state_dict_post_hook(_forget_host_steps)

    def forward(self, x):
        h = self.head(x)
        h = h + self.body(h)
        base = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return base + self.tail(self.upsample(h))


def _forget_host_steps(module, incompatible_keys) -> None:
    module.steps_seen = None


class SRDiscriminator(nn.Module):
    """image ``(B, 1, S, S)`` -> logit ``(B,)``: strided convs (width ``ndf``, doubling to
    512) down to 4×4 for ``S = size``, then global average pooling and a linear layer."""

    def __init__(self, size: int, ndf: int = 64):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, ndf, 3, padding=1), nn.LeakyReLU(0.2)]
        width = ndf
        while size > 4:
            out = min(width * 2, 512)
            layers += [nn.Conv2d(width, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            width, size = out, size // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3))).flatten()


def build(cfg) -> dict[str, nn.Module]:
    ds = cfg.dsrgan
    return {
        "unet": ddpm.make_unet(cfg),
        "sr_generator": SRGenerator(ds.sr_blocks, ds.sr_width),
        "sr_discriminator": SRDiscriminator(2 * cfg.resolution, cfg.ndf),
    }


def make_optimizers(cfg, networks: dict[str, nn.Module]) -> dict:
    """UNet: AdamW at ``lr_g``; SR generator: Adam at ``dsrgan.lr_sr``; D: Adam at ``lr_d``."""
    betas = tuple(cfg.betas)
    return {
        "unet": torch.optim.AdamW(
            networks["unet"].parameters(), lr=cfg.lr_g, betas=betas, weight_decay=cfg.weight_decay
        ),
        "sr_generator": torch.optim.Adam(
            networks["sr_generator"].parameters(), lr=cfg.dsrgan.lr_sr, betas=betas
        ),
        "sr_discriminator": torch.optim.Adam(
            networks["sr_discriminator"].parameters(), lr=cfg.lr_d, betas=betas
        ),
    }


def _unwrap(net):
    """The plain module under DDP (``.module``) and torch.compile (``._orig_mod``)."""
    net = getattr(net, "module", net)
    return getattr(net, "_orig_mod", net)


def steps_per_epoch(cfg) -> int:
    """Optimiser steps per epoch on this rank, as the training loop batches (batches of one
    image are skipped), for ``data.size`` images (``data.phantom_n`` for phantoms)."""
    n = cfg.data.size or (cfg.data.phantom_n if cfg.data.kind == "phantom" else None)
    if not n:
        raise ValueError(
            "dsrgan: set data.size (the number of training images) so that the stage "
            "(dsrgan.epochs_a) can be inferred from the step count"
        )
    dist = torch.distributed
    rank, world = (
        (dist.get_rank(), dist.get_world_size())
        if dist.is_available() and dist.is_initialized()
        else (0, 1)
    )
    shard = len(range(rank, n, world))
    full, rest = divmod(shard, cfg.batch_size)
    return full + (1 if rest >= 2 else 0)


def _current_epoch(sr: SRGenerator, cfg, ctx) -> int:
    if sr.steps_seen is None:  # once per build or load: one host read of the counter
        sr.steps_seen = int(sr.steps)
    step = sr.steps_seen
    sr.steps_seen += 1
    sr.steps += 1
    epoch = getattr(ctx, "epoch", None)
    return epoch if epoch is not None else step // steps_per_epoch(cfg)


def _add_to_histogram(sr: SRGenerator, images) -> None:
    levels = ((images.detach().float() + 1) * 127.5).round_().clamp_(0, 255).long().flatten()
    sr.real_hist.index_add_(0, levels, torch.ones_like(levels, dtype=sr.real_hist.dtype))


def _bce(logits, target: float):
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def train_step(networks, optimizers, real, cfg, ctx):
    """Stage A: a diffusion step on ``real`` at ``resolution``; stage B: an SR-GAN step on
    (downsampled real -> real). Returns ``[loss_diffusion, loss_sr_d, loss_sr_g]`` (the
    inactive stage's entries are 0)."""
    sr = _unwrap(networks["sr_generator"])
    epoch = _current_epoch(sr, cfg, ctx)
    low = F.avg_pool2d(real, 2) if real.shape[-1] == 2 * cfg.resolution else real
    _add_to_histogram(sr, low)
    zero = torch.zeros((), device=real.device)

    if epoch < cfg.dsrgan.epochs_a:
        loss = ddpm.diffusion_loss(networks["unet"], low, cfg, ctx)
        opt = optimizers["unet"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return torch.stack((loss.detach(), zero, zero))

    # Stage B: ×2 pairs; at resolution-sized batches, (R/2 -> R).
    high = real
    small = F.avg_pool2d(high, 2)
    net_g, net_d = networks["sr_generator"], networks["sr_discriminator"]
    opt_g, opt_d = optimizers["sr_generator"], optimizers["sr_discriminator"]
    with ctx.autocast():
        fake = net_g(small)
        loss_d = _bce(net_d(high), 1.0) + _bce(net_d(fake.detach()), 0.0)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()

    with ctx.no_sync("sr_discriminator"), ctx.autocast():  # D's gradients here are discarded
        adversarial = _bce(net_d(fake), 1.0)
    pixel = F.l1_loss(fake.float(), high.float())
    loss_g = cfg.dsrgan.pixel_weight * pixel + cfg.dsrgan.adv_weight * adversarial
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    sr.sr_steps += 1
    return torch.stack((zero, loss_d.detach(), loss_g.detach()))


def match_histogram(images, reference_counts):
    """Map each image's grey levels so its CDF matches ``reference_counts`` (256,) — the CDF
    mapping of ``skimage.exposure.match_histograms`` for uint8 images, against a stored
    histogram instead of a reference image. ``images (n, 1, H, W)`` in [-1, 1] -> same."""
    import numpy as np

    ref = reference_counts.detach().double().cpu().numpy()
    ref_levels = np.nonzero(ref)[0]
    ref_quantiles = np.cumsum(ref[ref_levels]) / ref.sum()
    levels = ((images.detach().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    levels = levels.cpu().numpy()
    out = np.empty(levels.shape, dtype=np.float64)
    for i, image in enumerate(levels):
        src_quantiles = np.cumsum(np.bincount(image.reshape(-1), minlength=256)) / image.size
        lookup = np.interp(src_quantiles, ref_quantiles, ref_levels)
        out[i] = lookup[image]
    return torch.from_numpy(out / 127.5 - 1).to(device=images.device, dtype=images.dtype)


def latents(n: int, cfg, generator):
    """The DDIM starting noise ``(n, 1, R, R)`` on the CPU."""
    return torch.randn(n, 1, cfg.resolution, cfg.resolution, generator=generator)


def decode(networks, latents, cfg):
    """DDIM -> histogram matching -> SR ×2: images ``(n, 1, 2R, 2R)`` in [-1, 1]."""
    sr = networks["sr_generator"]
    low = ddpm.ddim_sample(networks["unet"], latents, cfg)
    if cfg.dsrgan.hist_match and bool(sr.real_hist.sum() > 0):
        low = match_histogram(low, sr.real_hist)
    if int(sr.sr_steps) == 0:  # stage B has not started: plain bilinear ×2
        return F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False).clamp(-1, 1)
    return sr(low).clamp(-1, 1)
