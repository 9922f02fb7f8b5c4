"""Search efficiency: how much compute Optuna + ASHA needs to reach what a grid reaches.

    .venv/bin/python bench/search_efficiency.py [--seeds 3] [--epochs 24] [--samples 12]
        [--grid 1e-4,3e-4,1e-3,3e-3] [--grace 4] [--reduction 3] [--json FILE]

On the built-in phantom (DCGAN at 32 px, 256 training images, FID on 64-d Inception features
of 64 fakes against 256 held-out reference phantoms, an evaluation every 4 epochs), three ways
of choosing ``lr_g`` x ``lr_d``, each repeated with ``--seeds`` seeds (the training seed and
the search seed):

- grid: every pair of the ``--grid`` values (16 configurations), each trained ``--epochs``
  epochs (FIFO, no early stopping);
- Optuna + ASHA: ``--samples`` trials of Optuna's TPE over the grid's range (log-uniform),
  ASHA on FID with ``max_t = --epochs``, ``--grace`` and ``--reduction``;
- random + ASHA: the same with Tune's random search.

Every sweep runs through ``fetalgan.sweep.run_sweep`` (Ray started once, no tracking, two
trials at a time with one CPU each). For each method: the best FID found (each trial's best
evaluation, the sweep's definition of best), the epochs trained by all its trials together,
and the sweep's wall time; median and range over the seeds. Goal: Optuna + ASHA within 5 % of
the grid's best FID with at most 30 % of its epochs. FID and epochs do not depend on the
machine's load (ASHA's decisions can, a little, through the order trials report in); wall
times do.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def trial_base(args, cache_dir: str, seed: int) -> dict:
    return {
        "model": "dcgan",
        "resolution": 32,
        "data": {
            "kind": "phantom",
            "size": 256,
            "order": "listed",
            "phantom_n": 512,
            "cache_dir": cache_dir,
        },
        # held out: the last 256 phantoms of the pool, never trained on
        "eval_reference": {"size": 256, "order": "listed", "skip": 256},
        "epochs": args.epochs,
        "eval_every": args.eval_every,
        "eval_n": args.eval_n,
        "eval_metrics": ["fid"],
        "fid_dims": args.fid_dims,
        "batch_size": 32,
        "ngf": 32,
        "ndf": 32,
        "device": "cpu",
        "seed": seed,
    }


def epochs_trained(exp_dir: Path) -> list[int]:
    """Per trial of a finished sweep, the last epoch it reported (what it trained)."""
    epochs = []
    for result_file in sorted(exp_dir.glob("trial_*/result.json")):
        reported = [json.loads(line) for line in result_file.read_text().splitlines() if line]
        epochs.append(max((r.get("epoch", 0) for r in reported), default=0))
    return epochs


def best_fid(exp_dir: Path) -> float:
    """The lowest FID any evaluation of any trial reached."""
    values = []
    for result_file in exp_dir.glob("trial_*/result.json"):
        for line in result_file.read_text().splitlines():
            if line and "fid" in (row := json.loads(line)):
                values.append(row["fid"])
    return min(values)


def run_method(method: str, seed: int, args, work: Path) -> dict:
    from fetalgan.config import load_sweep
    from fetalgan.sweep import run_sweep

    grid = [float(v) for v in args.grid.split(",")]
    low, high = min(grid), max(grid)
    sweep = {
        "name": f"{method}_s{seed}",
        "metric": "fid",
        "mode": "min",
        "max_concurrent": args.concurrent,
        "resources": {"cpu": 1, "gpu": 0},
        "max_failures": 0,
        "base": trial_base(args, str(work / "cache"), seed),
    }
    if method == "grid":
        sweep |= {
            "num_samples": 1,
            "scheduler": {"kind": "fifo"},
            "search": {"kind": "grid", "seed": seed},
            "space": {"lr_g": {"grid": grid}, "lr_d": {"grid": grid}},
        }
    else:
        sweep |= {
            "num_samples": args.samples,
            "scheduler": {
                "kind": "asha",
                "max_t": args.epochs,
                "grace_period": args.grace,
                "reduction_factor": args.reduction,
            },
            "search": {"kind": "optuna" if method == "optuna_asha" else "random", "seed": seed},
            "space": {"lr_g": {"loguniform": [low, high]}, "lr_d": {"loguniform": [low, high]}},
        }
    path = work / f"{sweep['name']}.yaml"
    import yaml

    path.write_text(yaml.safe_dump(sweep))
    cfg = load_sweep(path)
    t0 = time.perf_counter()
    run_sweep(cfg, storage=work / "ray_results", tracking=False, verbose=0)
    wall = time.perf_counter() - t0
    exp_dir = work / "ray_results" / sweep["name"]
    epochs = epochs_trained(exp_dir)
    return {
        "method": method,
        "seed": seed,
        "best_fid": best_fid(exp_dir),
        "trials": len(epochs),
        "epochs": sum(epochs),
        "wall_s": wall,
    }


def spread(values: list[float], fmt: str) -> str:
    return (
        f"{format(statistics.median(values), fmt)} "
        f"({format(min(values), fmt)}–{format(max(values), fmt)})"
    )


def table(rows: list[dict], methods: list[str]) -> str:
    by = {m: [r for r in rows if r["method"] == m] for m in methods}
    grid_fid = statistics.median(r["best_fid"] for r in by["grid"])
    grid_epochs = statistics.median(r["epochs"] for r in by["grid"])
    lines = [
        "| method | trials | best FID, median (range) | vs grid | epochs, median (range) "
        "| of grid's | wall s, median (range) |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        runs = by[method]
        fid = statistics.median(r["best_fid"] for r in runs)
        epochs = statistics.median(r["epochs"] for r in runs)
        lines.append(
            f"| {method} | {statistics.median(r['trials'] for r in runs):g} "
            f"| {spread([r['best_fid'] for r in runs], '.3f')} | {fid / grid_fid - 1:+.1%} "
            f"| {spread([r['epochs'] for r in runs], '.0f')} | {epochs / grid_epochs:.0%} "
            f"| {spread([r['wall_s'] for r in runs], '.0f')} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="repeats of every method")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first .. first+seeds-1")
    parser.add_argument("--epochs", type=int, default=24, help="grid epochs = ASHA max_t")
    parser.add_argument("--eval-every", type=int, default=4, help="epochs between evaluations")
    parser.add_argument("--eval-n", type=int, default=64, help="fakes per evaluation")
    parser.add_argument("--fid-dims", type=int, default=64, help="Inception feature block")
    parser.add_argument("--grid", default="1e-4,3e-4,1e-3,3e-3", help="lr values, both axes")
    parser.add_argument("--samples", type=int, default=12, help="trials of each ASHA search")
    parser.add_argument("--grace", type=int, default=4, help="ASHA grace period (epochs)")
    parser.add_argument("--reduction", type=float, default=3.0, help="ASHA reduction factor")
    parser.add_argument("--concurrent", type=int, default=2, help="trials at once")
    parser.add_argument(
        "--methods", default="grid,optuna_asha,random_asha", help="comma-separated subset"
    )
    parser.add_argument("--json", help="also write every run and the table to this file")
    args = parser.parse_args()

    import ray

    work = Path(tempfile.mkdtemp(prefix="fetalgan-search-"))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=args.concurrent, include_dashboard=False, log_to_driver=False)
    methods = args.methods.split(",")
    rows = []
    t_start = time.perf_counter()
    try:
        # seeds outermost: load drifts hit every method alike
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for method in methods:
                row = run_method(method, seed, args, work)
                rows.append(row)
                print(
                    f"seed {seed} {method:12s} best FID {row['best_fid']:.3f}  "
                    f"{row['trials']} trials, {row['epochs']} epochs, {row['wall_s']:.0f} s",
                    flush=True,
                )
    finally:
        ray.shutdown()
    total = time.perf_counter() - t_start
    print(
        f"\nDCGAN32 on 256 phantoms, FID{args.fid_dims} of {args.eval_n} fakes vs 256 held-out, "
        f"eval every {args.eval_every}; grid {args.grid} squared at {args.epochs} epochs; "
        f"ASHA max_t {args.epochs}, grace {args.grace}, reduction {args.reduction:g}, "
        f"{args.samples} trials; {args.seeds} seeds; {args.concurrent} trials at once; "
        f"load average at the end {os.getloadavg()[0]:.1f}; {total / 60:.1f} min in all\n"
    )
    text = table(rows, methods) if "grid" in methods else ""
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": rows, "table": text}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
