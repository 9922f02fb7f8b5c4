"""us2mri: unpaired, self-supervised ultrasound -> MR synthesis through a shared anatomical
latent space (after Jiao et al., "Self-supervised ultrasound to MRI fetal brain image
synthesis", 2020).

Networks (``us2mri.width`` = w, latent ``(4w, R/4, R/4)``):

- ``mr_encoder`` + ``mr_decoder``: an MR autoencoder; its latent defines the MR feature space
  (L1 reconstruction, weight ``rec_weight``).
- ``us_encoder``: US (plus, with ``aux3d``, the neighbour slices and a location channel) ->
  a latent the ``mr_decoder`` turns into MR. A ``us_decoder`` reconstructs the US slice from
  the same latent (L1, ``rec_weight``), so the latent keeps the anatomy: the self-supervision.
- ``image_disc``: PatchGAN on MR, real vs translated (``adv_weight``): image-domain adversary.
- ``latent_disc``: on latents, MR encoder vs US encoder (``latent_weight``; switch
  ``latent_adversarial``): the feature-space adversary that pulls the US latent onto the MR one.
- ``structure_disc``: the adversarial structural constraint (``structure_weight``; switch
  ``structural``). It sees pairs of structure maps (:func:`translation.structure_map`, edges
  normalised per image, inside the US fan) and learns to tell (US, US) from (US, translation);
  the translator is rewarded when its edges sit where the US input's do, without asking
  pixel values to match (no pixel loss is possible without pairs).
- cross-modal attention (switch ``attention``): in ``mr_decoder`` at R/4, queries from the
  decoder's features, keys and values from the input modality's encoder features (US when
  translating), so every output position can draw on the whole US image (non-local).

All losses are least squares (LSGAN). Two optimisers: ``generators`` (encoders and decoders,
Adam at ``lr_g``) and ``discriminators`` (Adam at ``lr_d``). The MR batch comes from the loop's
second domain (``ctx.target``); US and MR batches are never pairs.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from fetalgan.models import translation as tr

LOSS_NAMES = ("loss_d", "loss_g", "loss_rec")


class CrossModalAttention(nn.Module):
    """Non-local attention from ``query`` features (B, C, H, W) to ``context`` features of
    another modality (B, C, H', W'): ``query + gamma * softmax(q k^T / sqrt(d)) v``; ``gamma``
    starts at 0, so the block starts as the identity (SAGAN). Keys and values are average-
    pooled 2x2 when the context is 32 px or more (4x fewer keys)."""

    def __init__(self, width: int):
        super().__init__()
        self.dim = max(width // 8, 4)
        self.q = nn.Conv2d(width, self.dim, 1)
        self.k = nn.Conv2d(width, self.dim, 1)
        self.v = nn.Conv2d(width, width, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, query, context):
        if context.shape[-1] >= 32:
            context = F.avg_pool2d(context, 2)
        b, c, h, w = query.shape
        q = self.q(query).flatten(2).transpose(1, 2)  # (B, HW, d)
        k = self.k(context).flatten(2).transpose(1, 2)  # (B, H'W', d)
        v = self.v(context).flatten(2).transpose(1, 2)  # (B, H'W', C)
        out = F.scaled_dot_product_attention(q, k, v)
        return query + self.gamma * out.transpose(1, 2).reshape(b, c, h, w)


class Encoder(nn.Module):
    """``(B, C, R, R)`` -> (latent ``(B, 4w, R/4, R/4)``, features before the residual blocks)."""

    def __init__(self, channels: int, width: int, blocks: int):
        super().__init__()
        self.down = nn.Sequential(
            tr.stem(channels, width), tr.down(width, 2 * width), tr.down(2 * width, 4 * width)
        )
        self.blocks = nn.Sequential(*[tr.ResidualBlock(4 * width) for _ in range(blocks)])

    def forward(self, x):
        features = self.down(x)
        return self.blocks(features), features


class Decoder(nn.Module):
    """latent ``(B, 4w, R/4, R/4)`` (+ encoder features for attention) -> ``(B, 1, R, R)``."""

    def __init__(self, width: int, attention: bool):
        super().__init__()
        self.block = tr.ResidualBlock(4 * width)
        self.attention = CrossModalAttention(4 * width) if attention else None
        self.up = nn.Sequential(
            tr.up(4 * width, 2 * width), tr.up(2 * width, width), tr.head(width)
        )

    def forward(self, latent, context=None):
        h = self.block(latent)
        if self.attention is not None:
            h = self.attention(h, latent if context is None else context)
        return self.up(h)


class LatentDiscriminator(nn.Module):
    """latent ``(B, 4w, r, r)`` -> per-position scores ``(B, 1, r, r)`` (1x1-ish convolutions:
    it judges feature statistics, not layout)."""

    def __init__(self, width: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(width, width, 3, 1, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, width // 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, 1, 1),
        )

    def forward(self, x):
        return self.main(x)


GENERATORS = ("us_encoder", "mr_encoder", "mr_decoder", "us_decoder")


def build(cfg) -> dict[str, nn.Module]:
    um = cfg.us2mri
    w = um.width
    nets: dict[str, nn.Module] = {
        "us_encoder": Encoder(tr.source_channels(cfg), w, um.latent_blocks),
        "mr_encoder": Encoder(1, w, um.latent_blocks),
        "mr_decoder": Decoder(w, um.attention),
        "us_decoder": Decoder(w, attention=False),
        "image_disc": tr.PatchDiscriminator(1, cfg.ndf),
    }
    if um.latent_adversarial:
        nets["latent_disc"] = LatentDiscriminator(4 * w)
    if um.structural:
        nets["structure_disc"] = tr.PatchDiscriminator(2, cfg.ndf)
    for net in nets.values():
        net.apply(tr.init_weights)
    return nets


def make_optimizers(cfg, networks: dict[str, nn.Module]) -> dict:
    """``generators``: every encoder and decoder (Adam, ``lr_g``); ``discriminators``: the
    rest (Adam, ``lr_d``)."""
    betas = tuple(cfg.betas)
    gen = [p for n in GENERATORS for p in networks[n].parameters()]
    disc = [p for n, net in networks.items() if n not in GENERATORS for p in net.parameters()]
    return {
        "generators": torch.optim.Adam(gen, lr=cfg.lr_g, betas=betas),
        "discriminators": torch.optim.Adam(disc, lr=cfg.lr_d, betas=betas),
    }


def _structure_pair(us_slice, other, mask):
    return torch.cat([tr.structure_map(us_slice) * mask, tr.structure_map(other) * mask], dim=1)


def train_step(networks, optimizers, real, cfg, ctx):
    """One step on a US batch ``real`` (B, C, R, R) and an unpaired MR batch ``ctx.target``
    (B, 1, R, R): discriminators first, then encoders and decoders. Returns
    ``[loss_d, loss_g (adversarial terms), loss_rec (L1 reconstructions)]``."""
    um = cfg.us2mri
    mr = ctx.target
    us_slice = real[:, :1]
    opt_g, opt_d = optimizers["generators"], optimizers["discriminators"]
    d_img = networks["image_disc"]
    d_lat = networks.get("latent_disc")
    d_struct = networks.get("structure_disc")
    with ctx.autocast():
        lat_us, feat_us = networks["us_encoder"](real)
        lat_mr, feat_mr = networks["mr_encoder"](mr)
        fake_mr = networks["mr_decoder"](lat_us, feat_us)
        rec_mr = networks["mr_decoder"](lat_mr, feat_mr)
        rec_us = networks["us_decoder"](lat_us)
    mask = tr.fan_mask(us_slice) if d_struct is not None else None

    with ctx.autocast():
        loss_d = tr.lsgan(d_img(mr), 1.0) + tr.lsgan(d_img(fake_mr.detach()), 0.0)
        if d_lat is not None:
            loss_d = loss_d + tr.lsgan(d_lat(lat_mr.detach()), 1.0)
            loss_d = loss_d + tr.lsgan(d_lat(lat_us.detach()), 0.0)
        if d_struct is not None:
            same = _structure_pair(us_slice, us_slice, mask)
            translated = _structure_pair(us_slice, fake_mr.detach(), mask)
            loss_d = loss_d + tr.lsgan(d_struct(same), 1.0) + tr.lsgan(d_struct(translated), 0.0)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()

    with contextlib.ExitStack() as stack:  # the discriminators' gradients here are discarded
        for name in networks:
            if name not in GENERATORS:
                stack.enter_context(ctx.no_sync(name))
        stack.enter_context(ctx.autocast())
        adversarial = um.adv_weight * tr.lsgan(d_img(fake_mr), 1.0)
        if d_lat is not None:
            adversarial = adversarial + um.latent_weight * tr.lsgan(d_lat(lat_us), 1.0)
        if d_struct is not None:
            pair = _structure_pair(us_slice, fake_mr, mask)
            adversarial = adversarial + um.structure_weight * tr.lsgan(d_struct(pair), 1.0)
    reconstruction = F.l1_loss(rec_mr.float(), mr.float()) + F.l1_loss(
        rec_us.float(), us_slice.float()
    )
    loss_g = adversarial + um.rec_weight * reconstruction
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return torch.stack((loss_d.detach(), adversarial.detach(), reconstruction.detach()))


def translate(networks, us, cfg):
    """US ``(n, C, R, R)`` in [-1, 1] -> MR-like ``(n, 1, R, R)`` in [-1, 1]."""
    latent, features = networks["us_encoder"](us)
    return networks["mr_decoder"](latent, features)


decode = translate  # the sampling path: its latents are US inputs (fetalgan.sampling.latents)
