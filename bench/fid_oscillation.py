"""How much of a run's FID movement is the evaluation's sampling, and how much the generator.

    .venv/bin/python bench/fid_oscillation.py [--pairs 1e-3/1e-3,3e-3/1e-3] [--seed 0]
        [--epochs 48] [--draws 6] [--rescore-n 1024] [--ema-decay 0]
        [--json FILE]

Trains each ``lr_g/lr_d`` pair in the search-efficiency bench's setting (DCGAN32 on 256
phantoms, an evaluation every 4 epochs of 48: FID64 of 64 fakes against 256 held-out
phantoms) and keeps every evaluated generator. Each is then scored again ``--draws`` times on
other draws of 64 fakes against the same reference (the spread of one generator's in-sweep
FID: the evaluation's noise), and once on ``--rescore-n`` fakes against as many further
held-out phantoms (the generator's own quality, nearly free of that noise). Where the re-score
moves between evaluations far more than the draws spread at one evaluation, the generator
itself oscillates, and no larger ``eval_n`` makes one evaluation a trial's verdict. With
``--ema-decay`` the runs sample the generator's moving average (what smooths the oscillation,
and how far it lags). Sweep trials train on one thread: ``OMP_NUM_THREADS=1`` gives their
numbers (other thread counts round differently and give other, equally valid, runs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import search_efficiency  # noqa: E402  (the bench's trial settings and held-out re-score)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", default="1e-3/1e-3,3e-3/1e-3", help="lr_g/lr_d,...")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--epochs", type=int, default=48, help="epochs of each run")
    parser.add_argument("--draws", type=int, default=6, help="64-fake draws per generator")
    parser.add_argument("--rescore-n", type=int, default=1024, help="fakes of the re-score")
    parser.add_argument(
        "--ema-decay", type=float, default=0.0, help="train with a generator EMA (0: off)"
    )
    parser.add_argument("--json", help="also write every evaluation to this file")
    args = parser.parse_args()
    args.eval_every, args.eval_n, args.fid_dims = 4, 64, 64

    from fetalgan.config import train_config_from_dict
    from fetalgan.data.datasets import load_reference_images
    from fetalgan.generate import load_generator
    from fetalgan.metrics.frechet import fid_from_features
    from fetalgan.metrics.inception import extract_features
    from fetalgan.sampling import sample_images
    from fetalgan.train import train

    work = Path(tempfile.mkdtemp(prefix="fetalgan-oscillation-"))
    cache = str(work / "cache")
    base = search_efficiency.trial_base(args, cache, args.seed)
    reference = search_efficiency.rescore_reference(args, cache)
    model = reference[0]
    in_sweep = extract_features(
        load_reference_images(train_config_from_dict(base), 32).images, model
    )

    def draw(networks, cfg, seed):  # one in-sweep evaluation's worth: 64 fakes
        fakes = sample_images(networks, cfg, 64, seed=seed)
        return fid_from_features(in_sweep, extract_features(fakes, model))["fid"]

    out = {}
    for pair in args.pairs.split(","):
        lr_g, lr_d = (float(v) for v in pair.split("/"))
        cfg = train_config_from_dict(base | {"lr_g": lr_g, "lr_d": lr_d})
        run = work / pair.replace("/", "_")
        kept = []

        def keep(evaluation, run=run, kept=kept):
            path = run / f"epoch_{evaluation.epoch:03d}.pt"
            shutil.copy(run / "checkpoints" / "last.pt", path)
            kept.append((evaluation.epoch, evaluation.values["fid"], path))

        train(cfg, report=keep, run_dir=run, progress=False)
        rows = []
        ema = f", EMA {args.ema_decay:g}" if args.ema_decay else ""
        print(f"\nlr_g {lr_g:g}, lr_d {lr_d:g}, seed {args.seed}{ema}")
        print("| epoch | in-sweep FID | 64-fake draws: median (range) | re-score |")
        print("|---|---|---|---|")
        for epoch, in_sweep_fid, path in kept:
            networks, gen_cfg = load_generator(path, device="cpu")
            draws = [draw(networks, gen_cfg, s) for s in range(args.draws)]
            rescore = search_efficiency.rescore(path, reference, args)  # the bench's re-score
            rows.append({"epoch": epoch, "fid": in_sweep_fid, "draws": draws, "rescore": rescore})
            print(
                f"| {epoch} | {in_sweep_fid:.3f} | {statistics.median(draws):.3f} "
                f"({min(draws):.3f}–{max(draws):.3f}) | {rescore:.4f} |",
                flush=True,
            )
        out[pair] = rows
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
