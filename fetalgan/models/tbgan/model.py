"""TB-GAN: a compact StyleSwin-style transformer GAN (Zhang et al. 2022) for grey images.

Generator: a mapping MLP turns ``z (B, nz)`` into a style ``w``; a learned constant
``(start_resolution)²`` token map goes through stages of two windowed self-attention blocks
(the second with windows shifted by half a window), each block's two layer norms modulated by
``w`` (AdaIN-style scale and shift); sinusoidal position encodings are added at each stage;
bilinear ×2 upsampling between stages; a linear to-grey layer at the end. Channels: ``ngf`` at
the output resolution, doubling towards low resolution up to ``tbgan.max_width``.

Simplification against StyleSwin: shifted windows wrap around (cyclic shift) without the
attention mask, and there is no noise injection or skip to-RGB; the discriminator is a plain
residual conv net (width ``ndf`` at full resolution) rather than a wavelet one.

Training: DiffAugment (translation + cutout) on real and fake alike, non-saturating logistic
loss, R1 penalty ``tbgan.r1_gamma / 2 · E‖∇D(real)‖²`` every step; Adam at ``lr_g``/``lr_d``
with ``betas`` (StyleSwin: [0.0, 0.99]).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fetalgan.models import diffaugment
from fetalgan.models.dcgan import model as dcgan

LOSS_NAMES = ("loss_d", "r1", "loss_g")


def _stage_resolutions(cfg) -> list[int]:
    r, out = cfg.tbgan.start_resolution, []
    while r <= cfg.resolution:
        out.append(r)
        r *= 2
    return out


def _width(cfg, r: int, base: int) -> int:
    """Channels at side ``r``: ``base`` at full resolution, doubling per halving, capped."""
    return min(base * cfg.resolution // r, cfg.tbgan.max_width)


def sinusoidal_positions(h: int, w: int, dim: int):
    """2-D sine/cosine position encoding ``(h, w, dim)`` (half the channels for y, half x)."""
    quarter = max(dim // 4, 1)
    freq = torch.exp(-math.log(10000.0) * torch.arange(quarter) / quarter)
    y = torch.arange(h, dtype=torch.float32)[:, None] * freq
    x = torch.arange(w, dtype=torch.float32)[:, None] * freq
    ey = torch.cat([y.sin(), y.cos()], dim=1)[:, None, :].expand(h, w, -1)
    ex = torch.cat([x.sin(), x.cos()], dim=1)[None, :, :].expand(h, w, -1)
    pos = torch.cat([ey, ex], dim=2)
    return F.pad(pos, (0, dim - pos.shape[-1]))[..., :dim]


class MappingNetwork(nn.Module):
    """z ``(B, nz)`` -> style w ``(B, w_dim)``: pixel-norm then an MLP with LeakyReLU."""

    def __init__(self, nz: int, w_dim: int, layers: int):
        super().__init__()
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [nn.Linear(nz if i == 0 else w_dim, w_dim), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*mods)

    def forward(self, z):
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        return self.net(z)


class ModulatedLayerNorm(nn.Module):
    """LayerNorm without affine, then ``(1 + γ(w)) · x + β(w)`` (AdaIN over tokens)."""

    def __init__(self, dim: int, w_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.style = nn.Linear(w_dim, 2 * dim)
        nn.init.zeros_(self.style.weight)
        nn.init.zeros_(self.style.bias)

    def forward(self, x, w):  # x (B, H, W, C), w (B, w_dim)
        gamma, beta = self.style(w)[:, None, None, :].chunk(2, dim=-1)
        return self.norm(x) * (1 + gamma) + beta


class StyleSwinBlock(nn.Module):
    """Windowed multi-head self-attention + MLP, both pre-normed by style-modulated LN."""

    def __init__(self, dim: int, w_dim: int, window: int, head_dim: int, shift: bool):
        super().__init__()
        self.window, self.shift = window, (window // 2 if shift else 0)
        self.heads = max(dim // head_dim, 1)
        self.norm1 = ModulatedLayerNorm(dim, w_dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = ModulatedLayerNorm(dim, w_dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def _attention(self, x):  # x (B, H, W, C) -> same
        b, h, w, c = x.shape
        win, heads = self.window, self.heads
        if self.shift:
            x = torch.roll(x, (-self.shift, -self.shift), dims=(1, 2))
        windows = (
            x.reshape(b, h // win, win, w // win, win, c)
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(-1, win * win, c)
        )
        q, k, v = (
            self.qkv(windows).reshape(-1, win * win, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        )
        out = F.scaled_dot_product_attention(q, k, v)  # (B·nW, heads, win², c/heads)
        out = self.proj(out.transpose(1, 2).reshape(-1, win * win, c))
        out = (
            out.reshape(b, h // win, w // win, win, win, c)
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(b, h, w, c)
        )
        if self.shift:
            out = torch.roll(out, (self.shift, self.shift), dims=(1, 2))
        return out

    def forward(self, x, w):
        x = x + self._attention(self.norm1(x, w))
        return x + self.mlp(self.norm2(x, w))


class Generator(nn.Module):
    """z ``(B, nz)`` -> image ``(B, 1, R, R)`` (unbounded; ``decode`` clamps to [-1, 1])."""

    def __init__(self, cfg):
        super().__init__()
        tb = cfg.tbgan
        self.nz = cfg.nz
        self.mapping = MappingNetwork(cfg.nz, tb.w_dim, tb.mapping_layers)
        sides = _stage_resolutions(cfg)
        widths = [_width(cfg, r, cfg.ngf) for r in sides]
        self.const = nn.Parameter(torch.randn(1, sides[0], sides[0], widths[0]))
        self.stages = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i, (r, c) in enumerate(zip(sides, widths, strict=True)):
            win = min(tb.window_size, r)
            self.stages.append(
                nn.ModuleList(
                    [StyleSwinBlock(c, tb.w_dim, win, tb.head_dim, shift=s) for s in (False, True)]
                )
            )
            self.register_buffer(f"pos{i}", sinusoidal_positions(r, r, c), persistent=False)
            if i + 1 < len(sides):
                self.ups.append(nn.Linear(c, widths[i + 1]))
        self.to_grey = nn.Linear(widths[-1], 1)

    def forward(self, z):
        w = self.mapping(z)
        x = self.const.expand(z.shape[0], -1, -1, -1)
        for i, blocks in enumerate(self.stages):
            x = x + getattr(self, f"pos{i}")
            for block in blocks:
                x = block(x, w)
            if i < len(self.ups):
                x = F.interpolate(
                    x.permute(0, 3, 1, 2), scale_factor=2, mode="bilinear", align_corners=False
                ).permute(0, 2, 3, 1)
                x = self.ups[i](x)
        return self.to_grey(x).permute(0, 3, 1, 2).contiguous()


class _ResDown(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, padding=1)
        self.conv2 = nn.Conv2d(cin, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        y = F.leaky_relu(self.conv1(x), 0.2)
        y = F.avg_pool2d(F.leaky_relu(self.conv2(y), 0.2), 2)
        return (y + self.skip(F.avg_pool2d(x, 2))) / math.sqrt(2)


class Discriminator(nn.Module):
    """image ``(B, 1, R, R)`` -> logit ``(B,)``: residual conv blocks down to 4×4, then MLP."""

    def __init__(self, cfg):
        super().__init__()
        r = cfg.resolution
        self.from_grey = nn.Conv2d(1, _width(cfg, r, cfg.ndf), 1)
        blocks = []
        while r > 4:
            blocks.append(_ResDown(_width(cfg, r, cfg.ndf), _width(cfg, r // 2, cfg.ndf)))
            r //= 2
        self.blocks = nn.Sequential(*blocks)
        c = _width(cfg, 4, cfg.ndf)
        self.head = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(c * 16, c),
            nn.LeakyReLU(0.2),
            nn.Linear(c, 1),
        )

    def forward(self, x):
        return self.head(self.blocks(F.leaky_relu(self.from_grey(x), 0.2))).flatten()


def build(cfg) -> dict[str, nn.Module]:
    return {"generator": Generator(cfg), "discriminator": Discriminator(cfg)}


# Adam at lr_g/lr_d with betas and weight_decay: the same as DCGAN's.
make_optimizers = dcgan.make_optimizers


def train_step(networks, optimizers, real, cfg, ctx):
    """D: logistic loss on augmented real and fake + R1 on augmented real; G: non-saturating
    loss on augmented fake. Returns ``[loss_d, r1, loss_g]``."""
    net_g, net_d = networks["generator"], networks["discriminator"]
    opt_g, opt_d = optimizers["generator"], optimizers["discriminator"]
    policies, gamma = cfg.tbgan.diffaugment, cfg.tbgan.r1_gamma
    z = torch.randn(real.shape[0], cfg.nz, device=real.device)

    real_aug = diffaugment.diff_augment(real, policies).detach().requires_grad_(gamma > 0)
    with ctx.autocast():
        fake = net_g(z)
        logits_real = net_d(real_aug).float()
        logits_fake = net_d(diffaugment.diff_augment(fake.detach(), policies)).float()
    loss_d = F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()
    if gamma > 0:
        (grad,) = torch.autograd.grad(logits_real.sum(), real_aug, create_graph=True)
        r1 = grad.float().square().sum(dim=(1, 2, 3)).mean()
    else:
        r1 = torch.zeros((), device=real.device)
    opt_d.zero_grad(set_to_none=True)
    (loss_d + 0.5 * gamma * r1).backward()
    opt_d.step()

    with ctx.no_sync("discriminator"), ctx.autocast():  # D's gradients here are discarded
        loss_g = F.softplus(-net_d(diffaugment.diff_augment(fake, policies)).float()).mean()
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return torch.stack((loss_d.detach(), r1.detach(), loss_g.detach()))


def latents(n: int, cfg, generator):
    return torch.randn(n, cfg.nz, generator=generator)


def decode(networks, latents, cfg):
    return networks["generator"](latents).clamp(-1, 1)
