"""Ultrasound -> MR translation fidelity on the phantom: us2mri, each ablation, CycleGAN and the
identity mapping, scored against the phantom's paired MR ground truth, in one run.

Every variant trains with ``fetalgan.train.train`` on the same unpaired data (US heads
0..N-1, MR heads N..2N-1; slices in the middle half of each head) for the same number of
optimiser steps at the same batch size and widths on the CPU: a fixed budget, so the table
compares what each ingredient buys for equal compute, not converged models. Then each
translates the same held-out US heads (past both pools) and
:func:`fetalgan.evaluate.paired_scores` compares every translation with the MR rendering of
its own head and slice (SSIM, PSNR, normalised MI; mean ± standard deviation). The identity
row scores the US input itself against the MR truth: the floor any translator must beat.

Writes a Markdown table to stdout, ``--json`` the numbers, ``--triplets`` a PNG of
US input / us2mri / CycleGAN / MR truth rows for the first held-out heads.

Usage: ``python bench/us2mri.py [--steps 500] [--resolution 64] [--batch 8] [--width 12]
[--n-train 100] [--n-eval 32] [--threads 2] [--json us2mri.json]
[--triplets docs/us2mri_triplets.png]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fetalgan.config import TrainConfig, with_overrides
from fetalgan.data import translation_inputs
from fetalgan.evaluate import PAIRED_KEYS, paired_scores
from fetalgan.generate import load_generator
from fetalgan.models import family, registry
from fetalgan.sampling import decode_uint8, to_uint8_tensor
from fetalgan.train import train

VARIANTS = {  # name -> (model, overrides of the full us2mri)
    "us2mri (all)": ("us2mri", {}),
    "- cross-modal attention": ("us2mri", {"us2mri.attention": False}),
    "- structural constraint": ("us2mri", {"us2mri.structural": False}),
    "- 3D auxiliary input": ("us2mri", {"us2mri.aux3d": False}),
    "- latent adversary": ("us2mri", {"us2mri.latent_adversarial": False}),
    "cyclegan": ("cyclegan", {}),
}


def base_config(args, cache: Path) -> TrainConfig:
    n = args.n_train
    epochs = max(1, round(args.steps / (n // args.batch)))
    common = {
        "kind": "phantom",
        "phantom_n": 2 * n,
        "order": "listed",
        "phantom_slices": 0.5,
        "cache_dir": str(cache),
    }
    flat = {
        "model": "us2mri",
        "resolution": args.resolution,
        **{f"data.{k}": v for k, v in common.items()},
        "data.size": n,
        **{f"target_data.{k}": v for k, v in common.items()},
        "target_data.modality": "mri",
        "target_data.skip": n,
        "epochs": epochs,
        "eval_every": epochs,
        "eval_n": 8,
        "eval_metrics": [],
        "batch_size": args.batch,
        "precision": "fp32",
        "device": "cpu",
        "ndf": args.width,
        "us2mri.width": args.width,
        "us2mri.latent_blocks": 2,
        "us2mri.aux3d": True,
        "cyclegan.width": args.width,
        "cyclegan.blocks": 2,
    }
    return with_overrides(TrainConfig(), flat)


def held_out(cfg: TrainConfig, n: int):
    """US inputs (with aux channels for ``cfg``) and MR truth of ``n`` held-out heads."""
    indices = translation_inputs.heldout_indices(n, cfg, torch.Generator().manual_seed(2024))
    step = registry.spec(cfg.model).source_step(cfg)  # the neighbour slices us2mri asks for
    us = translation_inputs.phantom_source(cfg, indices, cfg.resolution, step)
    return us.float().div_(127.5).sub_(1.0), translation_inputs.paired_truth(
        cfg, indices, cfg.resolution
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="optimiser steps per variant")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=int, default=12, help="network widths (all variants)")
    parser.add_argument("--n-train", type=int, default=100, help="US heads (and MR heads)")
    parser.add_argument("--n-eval", type=int, default=32, help="held-out heads scored")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the numbers here")
    parser.add_argument("--triplets", help="write input / us2mri / cyclegan / truth rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows, translations = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        base = base_config(args, Path(tmp) / "cache")
        _, truth = held_out(base, args.n_eval)
        us_plain = held_out(with_overrides(base, {"us2mri.aux3d": False}), args.n_eval)[0]
        identity = to_uint8_tensor(us_plain)
        rows["identity (US as MR)"] = {"seconds": 0.0, **summarise(paired_scores(truth, identity))}
        for name, (model, overrides) in VARIANTS.items():
            cfg = with_overrides(base, {"model": model} | overrides)
            t0 = time.perf_counter()
            run = Path(tmp) / name.replace(" ", "_")
            train(cfg, run_dir=run, progress=False)
            seconds = time.perf_counter() - t0
            networks, cfg = load_generator(run / "checkpoints" / "last.pt", device="cpu")
            us, _ = held_out(cfg, args.n_eval)
            fake = decode_uint8(family(model).translate, networks, us, cfg)
            translations[name] = fake
            rows[name] = {"seconds": seconds, **summarise(paired_scores(truth, fake))}
            print(f"{name}: {rows[name]}", flush=True)

    print(
        f"\n{args.steps} steps x batch {args.batch} at {args.resolution} px, width "
        f"{args.width}, {args.threads} threads; {args.n_eval} held-out heads\n"
    )
    print("| variant | SSIM | PSNR (dB) | MI (norm.) | train s |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['ssim']:.3f} ± {r['ssim_std']:.3f} | {r['psnr']:.2f} ± "
            f"{r['psnr_std']:.2f} | {r['mi']:.4f} | {r['seconds']:.0f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    if args.triplets:
        write_triplets(args.triplets, identity, translations, truth)


def summarise(scores: dict) -> dict:
    out = {}
    for key in PAIRED_KEYS:
        out[key] = float(np.mean(scores[key]))
        out[f"{key}_std"] = float(np.std(scores[key]))
    return out


def write_triplets(path: str, us, translations: dict, truth, n: int = 6) -> None:
    """Columns: US input, us2mri (all), CycleGAN, MR truth; one row per held-out head."""
    from fetalgan.images import write_grid

    columns = [us, translations["us2mri (all)"], translations["cyclegan"], truth]
    tiles = torch.stack([c[:n] for c in columns], dim=1).flatten(0, 1)  # row-major
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_grid(tiles, path, nrow=len(columns))


if __name__ == "__main__":
    main()
