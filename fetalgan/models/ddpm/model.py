"""Denoising diffusion (Ho et al. 2020) for grey images, sampled with DDIM (Song et al. 2021).

The network is a diffusers ``UNet2DModel`` built from ``cfg.ddpm`` (never downloaded; a user
may start from a local ``ddpm.pretrained`` directory). Training: the DDPM forward process with
a linear beta schedule (``num_train_timesteps``, ``beta_start``..``beta_end``), epsilon
prediction, MSE loss, AdamW at ``lr_g`` with ``betas`` and ``weight_decay``. Sampling: DDIM
with ``ddpm.sample_steps`` steps and eta 0, so the initial noise ``(n, 1, R, R)`` is all the
randomness a sample needs (``latents``). ``ddpm_sample`` runs the full stochastic DDPM chain
(for the benchmark).
"""

from __future__ import annotations

import functools
import math

LOSS_NAMES = ("loss",)


def make_unet(cfg, resolution: int | None = None):
    """The UNet of ``cfg.ddpm`` for ``(B, 1, R, R)`` images; ``R`` defaults to ``cfg.resolution``.

    Levels are ``len(block_out_channels)``, each with ``layers_per_block`` ResNet blocks; the
    lowest level has self-attention when ``ddpm.attention``. Group norm uses
    gcd(32, widths) groups so that tiny test widths work.
    """
    from diffusers import UNet2DModel

    dd = cfg.ddpm
    if dd.pretrained:
        from pathlib import Path

        if not (Path(dd.pretrained) / "config.json").is_file():
            raise FileNotFoundError(
                f"ddpm.pretrained: {dd.pretrained} is not a diffusers UNet2DModel directory "
                "(expected config.json and weights from save_pretrained)"
            )
        unet = UNet2DModel.from_pretrained(dd.pretrained, local_files_only=True)
        if unet.config.in_channels != 1 or unet.config.out_channels != 1:
            raise ValueError(
                f"ddpm.pretrained: {dd.pretrained} has {unet.config.in_channels} input and "
                f"{unet.config.out_channels} output channels; fetalgan needs 1 (grey)"
            )
        return unet
    widths = list(dd.block_out_channels)
    levels = len(widths)
    down = ["DownBlock2D"] * levels
    up = ["UpBlock2D"] * levels
    if dd.attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(
        sample_size=resolution or cfg.resolution,
        in_channels=1,
        out_channels=1,
        layers_per_block=dd.layers_per_block,
        block_out_channels=tuple(widths),
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        norm_num_groups=math.gcd(32, *widths),
        attention_head_dim=min(8, min(widths)),
    )


@functools.lru_cache(maxsize=8)
def _train_scheduler(steps: int, beta_start: float, beta_end: float):
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=steps,
        beta_start=beta_start,
        beta_end=beta_end,
        beta_schedule="linear",
        prediction_type="epsilon",
    )


def train_scheduler(cfg):
    """The (cached) DDPM training noise schedule of ``cfg.ddpm``."""
    dd = cfg.ddpm
    return _train_scheduler(dd.num_train_timesteps, dd.beta_start, dd.beta_end)


def diffusion_loss(unet, clean, cfg, ctx):
    """Epsilon-prediction MSE on ``clean (B, 1, R, R)`` in [-1, 1] at uniform random timesteps
    (global torch RNG, so resume is exact). Returns a scalar fp32 tensor."""
    import torch
    import torch.nn.functional as F

    scheduler = train_scheduler(cfg)
    noise = torch.randn_like(clean)
    t = torch.randint(0, cfg.ddpm.num_train_timesteps, (clean.shape[0],), device=clean.device)
    noisy = scheduler.add_noise(clean, noise, t)
    with ctx.autocast():
        predicted = unet(noisy, t, return_dict=False)[0]
    return F.mse_loss(predicted.float(), noise.float())


def ddim_sample(unet, noise, cfg, steps: int | None = None):
    """DDIM (eta 0) from ``noise (n, 1, R, R)`` in ``steps`` steps (default
    ``ddpm.sample_steps``) -> images ``(n, 1, R, R)`` in [-1, 1]. Deterministic."""
    from diffusers import DDIMScheduler

    dd = cfg.ddpm
    scheduler = DDIMScheduler(
        num_train_timesteps=dd.num_train_timesteps,
        beta_start=dd.beta_start,
        beta_end=dd.beta_end,
        beta_schedule="linear",
        prediction_type="epsilon",
    )
    scheduler.set_timesteps(steps or dd.sample_steps, device=noise.device)
    x = noise
    for t in scheduler.timesteps:
        eps = unet(x, t, return_dict=False)[0]
        x = scheduler.step(eps, t, x, eta=0.0).prev_sample
    return x.clamp(-1, 1)


def ddpm_sample(unet, noise, cfg, generator=None):
    """The full ancestral DDPM chain (``num_train_timesteps`` steps, fresh noise each step
    from ``generator``) from ``noise (n, 1, R, R)`` -> images in [-1, 1]."""
    from diffusers import DDPMScheduler

    dd = cfg.ddpm
    scheduler = DDPMScheduler(
        num_train_timesteps=dd.num_train_timesteps,
        beta_start=dd.beta_start,
        beta_end=dd.beta_end,
        beta_schedule="linear",
        prediction_type="epsilon",
    )
    scheduler.set_timesteps(dd.num_train_timesteps, device=noise.device)
    x = noise
    for t in scheduler.timesteps:
        eps = unet(x, t, return_dict=False)[0]
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    return x.clamp(-1, 1)


def build(cfg) -> dict:
    return {"unet": make_unet(cfg)}


def make_optimizers(cfg, networks: dict) -> dict:
    """AdamW at ``lr_g`` with ``betas`` and ``weight_decay`` (diffusion usually wants
    betas [0.9, 0.999] and lr ~1e-4: see sweeps/ddpm.yaml)."""
    import torch

    return {
        "unet": torch.optim.AdamW(
            networks["unet"].parameters(),
            lr=cfg.lr_g,
            betas=tuple(cfg.betas),
            weight_decay=cfg.weight_decay,
        )
    }


def train_step(networks, optimizers, real, cfg, ctx):
    """One denoising step on ``real (B, 1, R, R)`` in [-1, 1]; returns ``[loss]``."""
    loss = diffusion_loss(networks["unet"], real, cfg, ctx)
    opt = optimizers["unet"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach().reshape(1)


def latents(n: int, cfg, generator):
    """The DDIM starting noise ``(n, 1, R, R)`` on the CPU."""
    import torch

    return torch.randn(n, 1, cfg.resolution, cfg.resolution, generator=generator)


def decode(networks, latents, cfg):
    """DDIM with ``ddpm.sample_steps`` steps: noise -> images ``(n, 1, R, R)`` in [-1, 1]."""
    return ddim_sample(networks["unet"], latents, cfg)
