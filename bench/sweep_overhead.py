"""What a sweep costs on top of training: N short trials through ``run_sweep`` against the same N
``train()`` calls in a plain loop, and MLflow tracking on against off, all in one run.

    .venv/bin/python bench/sweep_overhead.py [--trials 3] [--epochs 4] [--cpus 2]

Ray is started before any timing (its ~5 s start is paid once per session, not per sweep), as
are MLflow's import and the store's creation (printed separately), and the real-image
statistics are computed beforehand, so each side times the same work: N trials
one after another with the same threads, data, learning rates and evaluations. Goals: sweep /
loop <= 1.3, tracked / untracked <= 1.05. Prints the wall times and the ratios (and writes them
as JSON with --json). Timings are noisy on a shared machine: compare ratios from one run.
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


def trial_base(args, cache_dir: str) -> dict:
    return {
        "resolution": 64,
        "data": {"kind": "phantom", "size": 128, "cache_dir": cache_dir},
        "epochs": args.epochs,
        "eval_every": 2,
        "eval_n": 64,
        "eval_metrics": ["fid", "kid"],
        "batch_size": 32,
        "ngf": 32,
        "ndf": 32,
        "device": "cpu",
        "seed": 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="trials per side (default 3)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (default 4)")
    parser.add_argument("--cpus", type=int, default=2, help="threads per trial (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    import ray
    import torch

    from fetalgan.config import (
        ResourcesConfig,
        SchedulerConfig,
        SearchConfig,
        SweepConfig,
        train_config_from_dict,
        with_overrides,
    )
    from fetalgan.data import load_training_images
    from fetalgan.data.cache import statistics_dir
    from fetalgan.metrics.stats import real_statistics
    from fetalgan.sweep import load_sweep as load
    from fetalgan.sweep import run_sweep
    from fetalgan.sweep.run import RunOptions
    from fetalgan.train import train

    work = Path(tempfile.mkdtemp(prefix="fetalgan-bench-"))
    base = train_config_from_dict(trial_base(args, str(work / "cache")))
    lrs = [1e-4 * 2**i for i in range(args.trials)]
    sweep = load(
        SweepConfig(
            name="overhead",
            metric="fid",
            num_samples=1,
            max_concurrent=1,
            max_failures=0,
            resources=ResourcesConfig(cpu=args.cpus),
            scheduler=SchedulerConfig(kind="fifo"),
            search=SearchConfig(kind="grid"),
            base=base,
            space={"lr_g": {"grid": lrs}},
        )
    )

    # Paid once, outside every timing: real statistics, Ray.
    dataset = load_training_images(base.data, base.resolution, seed=base.seed, progress=False)
    real_statistics(dataset.images, key=dataset.key, stats_dir=statistics_dir(base.data.cache_dir))
    store = f"sqlite:///{work}/mlruns.db"  # one store, as a user has (created here, untimed)
    t0 = time.perf_counter()
    from fetalgan.tracking import SweepTracker

    SweepTracker("overhead", tracking_uri=store)
    store_setup_s = time.perf_counter() - t0
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)

    torch.set_num_threads(args.cpus)

    def loop() -> float:
        t0 = time.perf_counter()
        for i, lr in enumerate(lrs):
            train(with_overrides(base, {"lr_g": lr}), run_dir=work / f"loop{i}", progress=False)
        return time.perf_counter() - t0

    def swept(tag: str, tracked: bool) -> tuple[float, float]:
        t0 = time.perf_counter()
        summary = run_sweep(
            sweep,
            storage=work / f"rr_{tag}",
            tracking_uri=store,
            verbose=0,
            options=RunOptions(tracking=tracked, warm_statistics=False),
        )
        return time.perf_counter() - t0, summary.get("tracking_s", 0.0)

    # Interleaved repeats: slow drifts of a shared machine hit every side alike.
    times: dict[str, list[float]] = {"loop": [], "untracked": [], "tracked": [], "tracking_s": []}
    for r in range(args.repeats):
        times["loop"].append(loop())
        times["untracked"].append(swept(f"off{r}", False)[0])
        wall, tracking_s = swept(f"on{r}", True)
        times["tracked"].append(wall)
        times["tracking_s"].append(tracking_s)
    ray.shutdown()

    # Ratios are paired within a repeat (same machine state), then the median is taken.
    sweep_ratios = [u / lp for u, lp in zip(times["untracked"], times["loop"], strict=True)]
    tracking_ratios = [t / u for t, u in zip(times["tracked"], times["untracked"], strict=True)]
    sweep_ratio = statistics.median(sweep_ratios)
    tracking_ratio = statistics.median(tracking_ratios)
    loop_s, untracked_s, tracked_s, tracking_s = (
        statistics.median(times[k]) for k in ("loop", "untracked", "tracked", "tracking_s")
    )
    figures = {
        "trials": args.trials,
        "epochs": args.epochs,
        "cpus": args.cpus,
        "repeats": args.repeats,
        "loop_s": times["loop"],
        "sweep_untracked_s": times["untracked"],
        "sweep_tracked_s": times["tracked"],
        "driver_tracking_s": times["tracking_s"],
        "sweep_over_loop": round(sweep_ratio, 3),
        "sweep_over_loop_range": [round(min(sweep_ratios), 3), round(max(sweep_ratios), 3)],
        "tracked_over_untracked": round(tracking_ratio, 3),
        "tracked_over_untracked_range": [
            round(min(tracking_ratios), 3),
            round(max(tracking_ratios), 3),
        ],
        "mlflow_import_and_new_store_s": round(store_setup_s, 2),
        "ray_cost_per_trial_s": round((untracked_s - loop_s) / args.trials, 2),
        "tracking_share_of_untracked": round(tracking_s / untracked_s, 3),
    }
    rows = [
        ("plain train() loop", loop_s, ""),
        (
            "sweep, no tracking",
            untracked_s,
            f"x{sweep_ratio:.3f} of the loop (range {min(sweep_ratios):.3f}-"
            f"{max(sweep_ratios):.3f}; goal <= 1.3)",
        ),
        (
            "sweep, MLflow tracking",
            tracked_s,
            f"x{tracking_ratio:.3f} of no tracking (range {min(tracking_ratios):.3f}-"
            f"{max(tracking_ratios):.3f}; goal <= 1.05)",
        ),
        (
            "driver time in MLflow",
            tracking_s,
            f"{tracking_s / untracked_s:.1%} of the untracked sweep",
        ),
    ]
    print(f"\n{args.trials} trials x {args.epochs} epochs, {args.cpus} threads, one at a time")
    print(f"(median of {args.repeats}; ratios paired within a repeat)")
    for label, seconds, note in rows:
        print(f"  {label:<24}{seconds:7.1f} s   {note}")
    print(f"  (once per process, untimed: MLflow import + new store {store_setup_s:.1f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
