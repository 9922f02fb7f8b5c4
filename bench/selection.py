"""Selection: does the final selection stage hand back a better generator than the in-sweep
best, and is the number it prints honest?

    .venv/bin/python bench/selection.py [--seeds 20] [--first-seed 0] [--samples 12]
        [--epochs 48] [--top-k 3] [--per-trial 2] [--n-fake 512] [--draws 2] [--no-window]
        [--json FILE] [--merge FILE ...]

On the built-in phantom (DCGAN at 32 px, FID on 64-d Inception features), per seed, one
12-trial Optuna + ASHA sweep over ``lr_g`` x ``lr_d`` (one trial at a time, so ASHA's verdicts
and the search repeat exactly) with the phantom pool split into five disjoint sets:

    training 0-255 | in-sweep reference 256-511 | selection 512-1535 | test 1536-2559 |
    fourth set 2560-3583 (this benchmark's alone)

Rules on the same trials (paired):

- R0, the in-sweep best: the trial with the lowest best in-sweep FID, its ``best.pt``; the
  number it prints is that in-sweep FID;
- R1, the final selection: the top ``--top-k`` trials' ``best.pt`` and next-best snapshots
  (``--per-trial``) re-scored on ``--draws`` x ``--n-fake`` fresh fakes against the selection
  set; the number it prints is the winner's test score (test set, other latents);
- R1 window: R1 on a second sweep of the same seed with ``rank_by: window`` (ASHA and the
  search see the geometric mean of a trial's last 3 FIDs), unless ``--no-window``.

Endpoint: the delivered generator's FID of 1024 fakes (seed 777) against the fourth set. Per
rule: the median endpoint; R1 vs R0 as the paired log ratio (median, exact Wilcoxon
signed-rank p, 90 % bootstrap interval of the median); each rule's optimism, log(printed /
endpoint) (median and sign count: an honest number sits around 0); the regret against the
best candidate of the selection's pool (endpoint over the lowest endpoint among the
candidates, each also scored on the fourth set); and the selection stage's share of the sweep's
wall time. Figures other than wall times repeat exactly on a rerun (fixed seeds, one trial at
a time); wall times depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

FOURTH = {"size": 1024, "skip": 2560}
POOL = 3584


def sweep_file(args, work: Path, seed: int, rank_by: str) -> Path:
    import yaml

    base = {
        "model": "dcgan",
        "resolution": 32,
        "data": {"kind": "phantom", "size": 256, "order": "listed", "phantom_n": POOL,
                 "cache_dir": str(work / "cache")},
        "eval_reference": {"size": 256, "order": "listed", "skip": 256},
        "epochs": args.epochs,
        "eval_every": 4,
        "eval_n": 64,
        "eval_metrics": ["fid"],
        "fid_dims": 64,
        "batch_size": 32,
        "ngf": 32,
        "ndf": 32,
        "device": "cpu",
        "seed": seed,
    }  # fmt: skip
    sweep = {
        "name": f"sel_{rank_by}_s{seed}",
        "metric": "fid",
        "mode": "min",
        "rank_by": rank_by,
        "num_samples": args.samples,
        "max_concurrent": 1,
        "resources": {"cpu": 1, "gpu": 0},
        "max_failures": 0,
        "scheduler": {"kind": "asha", "max_t": args.epochs, "grace_period": 4,
                      "reduction_factor": 4},
        "search": {"kind": "optuna", "seed": seed},
        "base": base,
        "space": {"lr_g": {"loguniform": [1e-4, 3e-3]}, "lr_d": {"loguniform": [1e-4, 3e-3]}},
        "select": {
            "top_k": args.top_k,
            "per_trial": args.per_trial,
            "n_fake": args.n_fake,
            "draws": args.draws,
            "reference": {"order": "listed", "skip": 512, "size": 1024},
            "test_reference": {"order": "listed", "skip": 1536, "size": 1024},
        },
    }  # fmt: skip
    path = work / f"{sweep['name']}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


class FourthSet:
    """FID of 1024 fakes (seed 777) against phantoms 2560-3583, cached per checkpoint."""

    def __init__(self, work: Path):
        from fetalgan.config import DataConfig
        from fetalgan.data import load_training_images
        from fetalgan.data.cache import statistics_dir
        from fetalgan.metrics.stats import TrainingMetrics

        data = DataConfig(kind="phantom", phantom_n=POOL, order="listed", cache_dir=str(work / "cache"), **FOURTH)  # fmt: skip
        reals = load_training_images(data, 32, seed=0).images
        self.evaluator = TrainingMetrics(
            reals, metrics=["fid"], dims=64, stats_dir=statistics_dir(data.cache_dir)
        )
        self.scores: dict[str, float] = {}

    def __call__(self, checkpoint: Path, key: str) -> float:
        from fetalgan.generate import load_generator
        from fetalgan.sampling import sample_images

        if key not in self.scores:
            networks, cfg = load_generator(checkpoint, device="cpu")
            fakes = sample_images(networks, cfg, 1024, seed=777)
            self.scores[key] = float(self.evaluator(fakes)["fid"])
        return self.scores[key]


def run_seed(args, seed: int, work: Path, fourth: FourthSet) -> list[dict]:
    from fetalgan.sweep import run_sweep
    from fetalgan.tracking.queries import download_checkpoint

    rows = []
    store = f"sqlite:///{work / 'mlruns.db'}"
    for rank_by in ("last", "window") if args.window else ("last",):
        path = sweep_file(args, work, seed, rank_by)
        t0 = time.perf_counter()
        summary = run_sweep(path, storage=work / "ray_results", tracking_uri=store, verbose=0)
        wall = time.perf_counter() - t0
        selection = summary["selection"]

        def endpoint(c: dict) -> float:
            local = download_checkpoint(f"runs:/{c['run_id']}/{c['artifact']}",
                                        work / "fetched" / c["run_id"] / Path(c["artifact"]).parent,
                                        tracking_uri=store)  # fmt: skip
            return fourth(local, f"{c['run_id']}/{c['artifact']}")

        for c in selection["candidates"]:
            c["endpoint"] = endpoint(c)
        pool_best = min(c["endpoint"] for c in selection["candidates"])
        # R0: the first candidate is the top in-sweep trial's best.pt (candidates in rank order)
        r0 = min(
            (c for c in selection["candidates"] if c["artifact"].endswith("best.pt")),
            key=lambda c: c["in_sweep"],
        )
        winner = selection["winner"]
        winner_endpoint = next(
            c["endpoint"] for c in selection["candidates"]
            if c["run_id"] == winner["run_id"] and c["artifact"] == winner["artifact"]
        )  # fmt: skip
        common = {"seed": seed, "wall_s": wall, "selection_s": summary["selection_s"],
                  "pool_best": pool_best}  # fmt: skip
        if rank_by == "last":
            rows.append({**common, "rule": "R0", "endpoint": r0["endpoint"],
                         "printed": r0["in_sweep"]})  # fmt: skip
        rows.append({**common, "rule": "R1" if rank_by == "last" else "R1 window",
                     "endpoint": winner_endpoint, "printed": selection["test"]["value"],
                     "selection_score": winner["score"]})  # fmt: skip
        print(
            f"seed {seed} rank_by {rank_by}: "
            + (f"R0 {r0['endpoint']:.4f} (printed {r0['in_sweep']:.4f}); " if rank_by == "last" else "")
            + f"R1 {winner_endpoint:.4f} (printed test {selection['test']['value']:.4f}); "
            f"pool best {pool_best:.4f}; selection {summary['selection_s']:.0f} s of {wall:.0f} s",
            flush=True,
        )  # fmt: skip
    return rows


def wilcoxon_exact(diffs: list[float]) -> float | None:
    from scipy.stats import wilcoxon

    nonzero = [d for d in diffs if d != 0]
    if len(nonzero) < 2:
        return None
    return float(wilcoxon(nonzero, method="exact").pvalue)


def bootstrap_median(values: list[float], draws: int = 10_000) -> tuple[float, float]:
    import numpy as np

    rng = np.random.default_rng(0)
    a = np.asarray(values)
    medians = np.median(a[rng.integers(0, len(a), size=(draws, len(a)))], axis=1)
    return tuple(float(v) for v in np.percentile(medians, [5, 95]))


def pct(log_ratio: float) -> str:
    return f"{math.expm1(log_ratio) * 100:+.1f} %"


def table(rows: list[dict]) -> str:
    rules = [r for r in ("R0", "R1", "R1 window") if any(row["rule"] == r for row in rows)]
    by = {rule: {row["seed"]: row for row in rows if row["rule"] == rule} for rule in rules}
    lines = [
        "| rule | seeds | FID on the fourth set, median (range) | vs R0: median log ratio, "
        "90 % bootstrap, exact Wilcoxon p | optimism of the printed number: median, "
        "printed < true | regret vs the pool's best | selection share of wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    for rule in rules:
        seeds = sorted(by[rule])
        end = [by[rule][s]["endpoint"] for s in seeds]
        cells = [rule, str(len(seeds)),
                 f"{statistics.median(end):.4f} ({min(end):.4f}–{max(end):.4f})"]  # fmt: skip
        if rule == "R0":
            cells.append("—")
        else:
            paired = [s for s in seeds if s in by["R0"]]
            logs = [math.log(by[rule][s]["endpoint"] / by["R0"][s]["endpoint"]) for s in paired]
            low, high = bootstrap_median(logs)
            p = wilcoxon_exact(logs)
            cells.append(
                f"{pct(statistics.median(logs))} ({pct(low)} to {pct(high)}), "
                f"p = {'n/a' if p is None else f'{p:.3f}'}"
            )
        optimism = [math.log(by[rule][s]["printed"] / by[rule][s]["endpoint"]) for s in seeds]
        below = sum(o < 0 for o in optimism)
        cells.append(
            f"{pct(statistics.median(optimism))} (median abs "
            f"{pct(statistics.median(abs(o) for o in optimism))}); {below} of {len(seeds)}"
        )
        regret = [by[rule][s]["endpoint"] / by[rule][s]["pool_best"] - 1 for s in seeds]
        cells.append(f"{statistics.median(regret) * 100:+.1f} %")
        share = [by[rule][s]["selection_s"] / by[rule][s]["wall_s"] for s in seeds]
        cells.append("—" if rule == "R0" else f"{statistics.median(share) * 100:.1f} %")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=48)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--per-trial", type=int, default=2)
    parser.add_argument("--n-fake", type=int, default=512)
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--no-window", dest="window", action="store_false")
    parser.add_argument("--json", help="write every row here (after each seed)")
    parser.add_argument("--merge", nargs="*", default=[], help="rows of earlier --json runs")
    args = parser.parse_args()

    import os

    import ray

    rows = [row for path in args.merge for row in json.loads(Path(path).read_text())]
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="fetalgan-bench-selection-") as tmp:
            work = Path(tmp)
            fourth = FourthSet(work)
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                rows += run_seed(args, seed, work, fourth)
                if args.json:
                    Path(args.json).write_text(json.dumps(rows, indent=1))
    finally:
        ray.shutdown()
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
