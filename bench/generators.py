"""Generator budgets: DDIM vs DDPM sampling speed, and training speed of each kind vs DCGAN.

All figures come from this one run (the machine may be shared and noisy, so the ratios are
what to read):

- sampling: the ``ddpm`` UNet of the given widths, images/s for DDIM with 40 and 100 steps
  and for the full ancestral DDPM chain (``num_train_timesteps`` steps), and their ratios;
- training: images/s of ``train_step`` for dcgan, ddpm, tbgan and both dsrgan stages, on
  phantom images at one resolution and batch size, each kind at its config defaults (widths
  from ``TrainConfig``), and the ratio to DCGAN.

Each side runs once per round, for ``--pairs`` interleaved rounds (A B C A B C ...); ratios
are taken within a round and printed as their median and range.

Usage: ``python bench/generators.py [--resolution 64] [--batch 16] [--steps 5]
[--widths 64,128,256,256] [--timesteps 1000] [--precision auto|fp32|bf16] [--threads N]
[--pairs 3]``.
On a GPU, ``--resolution 128 --batch 32`` is the study's diffusion stage.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from interleave import summary

from fetalgan.config import TrainConfig, with_overrides
from fetalgan.data import load_training_images
from fetalgan.devices import pick_device
from fetalgan.models import build, family
from fetalgan.models.ddpm import model as ddpm
from fetalgan.sampling import autocast_dtype
from fetalgan.train import StepContext


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sampling(cfg: TrainConfig, batch: int, device, pairs: int) -> dict[str, list[float]]:
    """Images/s of DDIM 40, DDIM 100 and the full DDPM chain for one batch of noise, each
    run once per round for ``pairs`` interleaved rounds."""
    unet = build(cfg)["unet"].to(device).eval()
    noise = ddpm.latents(batch, cfg, torch.Generator().manual_seed(0)).to(device)
    runs = {
        "ddim_40": lambda: ddpm.ddim_sample(unet, noise, cfg, steps=40),
        "ddim_100": lambda: ddpm.ddim_sample(unet, noise, cfg, steps=100),
        f"ddpm_{cfg.ddpm.num_train_timesteps}": lambda: ddpm.ddpm_sample(
            unet, noise, cfg, generator=torch.Generator(device).manual_seed(0)
        ),
    }
    out: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        ddpm.ddim_sample(unet, noise, cfg, steps=2)  # warm kernels
        for _ in range(pairs):
            for name, run in runs.items():
                _sync(device)
                t0 = time.perf_counter()
                run()
                _sync(device)
                out[name].append(batch / (time.perf_counter() - t0))
    return out


def training(cfg: TrainConfig, real, steps: int, device, amp_dtype, epoch=None) -> float:
    """Images/s of ``steps`` calls of the family's ``train_step`` after two warm-up steps."""
    torch.manual_seed(0)
    model = family(cfg.model)
    networks = build(cfg)
    for net in networks.values():
        net.to(device, memory_format=torch.channels_last).train()
    optimizers = model.make_optimizers(cfg, networks)
    ctx = StepContext(device, amp_dtype, networks)
    ctx.epoch = epoch  # dsrgan: which stage to time
    batch = real.contiguous(memory_format=torch.channels_last)
    for _ in range(2):
        model.train_step(networks, optimizers, batch, cfg, ctx)
    _sync(device)
    t0 = time.perf_counter()
    losses = torch.zeros(len(model.LOSS_NAMES), device=device)
    for _ in range(steps):
        losses += model.train_step(networks, optimizers, batch, cfg, ctx)
    losses.tolist()  # one sync, as the trainer does per epoch
    return steps * batch.shape[0] / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16, help="images per step / sample batch")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per kind")
    parser.add_argument("--widths", default="64,128,256,256", help="ddpm.block_out_channels")
    parser.add_argument("--timesteps", type=int, default=1000, help="ddpm.num_train_timesteps")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = default")
    parser.add_argument("--pairs", type=int, default=3, help="interleaved rounds of every side")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = pick_device("auto")
    amp_dtype = autocast_dtype(args.precision, device)
    work = Path(tempfile.mkdtemp(prefix="fetalgan-bench-"))
    base = with_overrides(
        TrainConfig(),
        {
            "resolution": args.resolution,
            "batch_size": args.batch,
            "data.size": args.batch,
            "data.phantom_n": args.batch,
            "data.cache_dir": str(work / "cache"),
            "precision": args.precision,
            "ddpm.block_out_channels": [int(w) for w in args.widths.split(",")],
            "ddpm.num_train_timesteps": args.timesteps,
            "ddpm.sample_steps": min(100, args.timesteps),
        },
    )
    print(
        f"device {device}, autocast {amp_dtype}, {args.resolution} px, batch {args.batch}, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )

    ddpm_cfg = with_overrides(base, {"model": "ddpm"})
    rates = sampling(ddpm_cfg, args.batch, device, args.pairs)
    ref = rates["ddim_100"]
    print(
        f"\nsampling, ddpm UNet {args.widths} (images/s, median of {args.pairs} interleaved "
        "rounds; ratio to DDIM 100 per round, median and range):"
    )
    for name, rate in rates.items():
        per_round = [r / d for r, d in zip(rate, ref, strict=True)]
        print(f"  {name:<12} {statistics.median(rate):9.3f}  {summary(per_round)}", flush=True)

    images = load_training_images(base.data, args.resolution, seed=0, progress=False).images
    real = images.to(device).float().div_(127.5).sub_(1.0)
    dsr = with_overrides(base, {"model": "dsrgan", "epochs": 2, "dsrgan.epochs_a": 1})
    kinds = {
        "dcgan": (with_overrides(base, {"model": "dcgan"}), None),
        "ddpm": (ddpm_cfg, None),
        "tbgan": (with_overrides(base, {"model": "tbgan"}), None),
        "dsrgan stage A": (dsr, 0),
        # Stage B trains on (R/2 -> R) pairs here; with 2R real images it costs ~4x this.
        "dsrgan stage B": (dsr, 1),
    }
    results: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(args.pairs):  # every kind once per round: load drifts hit all alike
        for name, (cfg, epoch) in kinds.items():
            results[name].append(training(cfg, real, args.steps, device, amp_dtype, epoch))
    print(
        "\ntraining (images/s, median of the rounds; ratio to DCGAN at the same resolution and "
        "batch, per round, median and range):"
    )
    for name, rate in results.items():
        per_round = [r / d for r, d in zip(rate, results["dcgan"], strict=True)]
        print(f"  {name:<15} {statistics.median(rate):9.2f}  {summary(per_round)}")


if __name__ == "__main__":
    main()
