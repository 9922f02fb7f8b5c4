"""Training throughput: fetalgan's trainer against the classic PyTorch DCGAN example loop.

Both train the same DCGAN on the same phantom images for the same number of epochs, timed in
this run (the machine is shared and noisy, so only the ratio means anything):

- reference: PNG files through torchvision ``ImageFolder`` + PIL transforms (grey, resize,
  crop, flip, rotation) and a ``DataLoader`` (2 workers, as the example's default), fp32,
  ``.item()`` on both losses every step — the way the PyTorch DCGAN example is written;
- fetalgan: ``train()`` with the decoded uint8 cache on the device, batched tensor
  augmentation, channels_last, losses read once per epoch; ``precision: auto`` and ``fp32``.

The three sides run interleaved (reference, auto, fp32, reference, ... for ``--pairs``
rounds); the ratios are per round, printed as their median and range.

Usage: ``python bench/train_throughput.py [--n 512] [--epochs 2] [--resolution 64] [--pairs 3]
[--device auto|cpu|cuda] [--json FILE]``. ``--device`` puts both sides on the same device
(the reference's batches are copied to it from pinned memory, as the example does on a GPU).
Also checks that bf16 training converges like fp32 (losses side by side) when asked with
``--converge EPOCHS``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from interleave import interleave, ratios, summary

from fetalgan.config import TrainConfig, with_overrides
from fetalgan.data.phantom import write_phantom_dir
from fetalgan.devices import pick_device
from fetalgan.models import build
from fetalgan.train import train


def reference_epochs(image_root: Path, cfg: TrainConfig, epochs: int, device) -> float:
    """The PyTorch DCGAN example's loop on ``device``; returns seconds for ``epochs`` epochs."""
    import torchvision.datasets as dset
    import torchvision.transforms as T

    dataset = dset.ImageFolder(
        root=str(image_root),
        transform=T.Compose(
            [
                T.Grayscale(),
                T.Resize(cfg.resolution),
                T.CenterCrop(cfg.resolution),
                T.RandomHorizontalFlip(),
                T.RandomRotation(cfg.data.augment.rotate_deg),
                T.ToTensor(),
                T.Normalize((0.5,), (0.5,)),
            ]
        ),
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=2,
        pin_memory=device.type == "cuda",
    )
    torch.manual_seed(cfg.seed)
    nets = build(cfg)
    net_g, net_d = nets["generator"].to(device), nets["discriminator"].to(device)
    opt_g = torch.optim.Adam(net_g.parameters(), lr=cfg.lr_g, betas=tuple(cfg.betas))
    opt_d = torch.optim.Adam(net_d.parameters(), lr=cfg.lr_d, betas=tuple(cfg.betas))
    t0 = time.perf_counter()
    for _ in range(epochs):
        for real, _ in loader:
            real = real.to(device, non_blocking=True)
            b = real.shape[0]
            ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)
            net_d.zero_grad()
            err_real = F.binary_cross_entropy_with_logits(net_d(real), ones)
            err_real.backward()
            fake = net_g(torch.randn(b, cfg.nz, 1, 1, device=device))
            err_fake = F.binary_cross_entropy_with_logits(net_d(fake.detach()), zeros)
            err_fake.backward()
            opt_d.step()
            net_g.zero_grad()
            err_g = F.binary_cross_entropy_with_logits(net_d(fake), ones)
            err_g.backward()
            opt_g.step()
            _ = (err_real + err_fake).item(), err_g.item()  # the example prints these each step
    return time.perf_counter() - t0


def ours_epochs(cfg: TrainConfig, epochs: int, run_dir: Path) -> tuple[float, dict]:
    """Seconds of ``epochs`` epochs of ``train()`` (data cache already warm), its metrics."""
    cfg = with_overrides(
        cfg, {"epochs": epochs, "eval_every": epochs, "eval_n": 16, "eval_metrics": []}
    )
    t0 = time.perf_counter()
    metrics = train(cfg, run_dir=run_dir, progress=False)
    return time.perf_counter() - t0, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="training images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument(
        "--converge", type=int, default=0, help="epochs for the bf16 vs fp32 convergence check"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda: both sides on it")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--pairs", type=int, default=3, help="interleaved rounds (A B C ...)")
    args = parser.parse_args()
    device = pick_device(args.device)

    work = Path(tempfile.mkdtemp(prefix="fetalgan-bench-"))
    # ImageFolder needs one sub-folder per class; phantoms at 256 px as a stand-in for HC18.
    write_phantom_dir(work / "images" / "head", n=args.n, size=256, seed=0, progress=False)
    cfg = with_overrides(
        TrainConfig(),
        {
            "resolution": args.resolution,
            "data.kind": "folder",
            "data.root": str(work / "images" / "head"),
            "data.cache_dir": str(work / "cache"),
            "device": device.type,
        },
    )
    ours_epochs(cfg, 1, work / "warm")  # decode into the cache once; warm oneDNN kernels
    images = args.n * args.epochs
    reference_name = "reference (ImageFolder+DataLoader, fp32, .item())"
    sides = {reference_name: lambda: reference_epochs(work / "images", cfg, args.epochs, device)}
    for precision in ("auto", "fp32"):
        sides[f"fetalgan precision={precision}"] = lambda p=precision: ours_epochs(
            with_overrides(cfg, {"precision": p}), args.epochs, work / p
        )[0]
    # A B C A B C ...: each round's ratios compare runs made under the same load.
    times, _ = interleave(sides, args.pairs)
    results = {name: statistics.median(seconds) for name, seconds in times.items()}
    print(
        f"DCGAN{args.resolution}, {args.n} images x {args.epochs} epochs, batch {cfg.batch_size}, "
        f"{torch.get_num_threads()} threads, device {device}, {args.pairs} interleaved rounds"
    )
    for name, seconds in results.items():
        print(f"  {name:50s} {images / seconds:8.1f} img/s  (median {seconds:.1f} s)")
    for precision in ("auto", "fp32"):
        per_pair = ratios(times[reference_name], times[f"fetalgan precision={precision}"])
        print(f"ratio fetalgan({precision}) / reference: {summary(per_pair)}")
    if args.json:
        figures = {name: images / seconds for name, seconds in results.items()}
        args.json.write_text(json.dumps({"device": str(device), "img_per_s": figures}, indent=2))

    if args.converge:
        print(f"convergence check, {args.converge} epochs (losses at the end, FID off):")
        for precision in ("fp32", "bf16"):
            c = with_overrides(
                cfg,
                {
                    "precision": precision,
                    "epochs": args.converge,
                    "eval_every": args.converge,
                    "eval_metrics": [],
                },
            )
            m = train(c, run_dir=work / f"conv-{precision}", progress=False)
            print(
                f"  {precision}: loss_d {m['loss_d']:.3f} loss_g {m['loss_g']:.3f}  samples: {m['sample_grid']}"
            )


if __name__ == "__main__":
    main()
