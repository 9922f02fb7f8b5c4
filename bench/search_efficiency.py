"""Search efficiency: how much compute Optuna + ASHA needs to reach what a grid reaches.

    .venv/bin/python bench/search_efficiency.py [--seeds 3] [--first-seed 0] [--epochs 48]
        [--samples 12] [--grid 1e-4,3e-4,1e-3,3e-3] [--grace 4] [--reduction 4]
        [--sampler tpe|gp] [--rank-by last|best] [--concurrent 1] [--methods grid,...]
        [--rescore-n 1024] [--json FILE] [--tag TEXT] [--merge FILE ...]

On the built-in phantom (DCGAN at 32 px, 256 training images, FID on 64-d Inception features
of 64 fakes against 256 held-out reference phantoms, an evaluation every 4 epochs), three ways
of choosing ``lr_g`` x ``lr_d``, each repeated with ``--seeds`` seeds (the training seed and
the search seed):

- grid: every pair of the ``--grid`` values (16 configurations), each trained ``--epochs``
  epochs (FIFO, no early stopping);
- Optuna + ASHA: ``--samples`` trials of Optuna's TPE over the grid's range (log-uniform,
  fetalgan's default startup trials: a quarter of the budget), ASHA on FID with
  ``max_t = --epochs``, ``--grace`` and ``--reduction``, trials compared by ``--rank-by``
  (the sweep key ``rank_by``: the latest FID, or each trial's best so far);
- random + ASHA: the same with Tune's random search;
- PBT, PB2 (``--methods pbt,pb2``): a population of ``--population`` trials (random learning
  rates) trained ``--epochs`` epochs, perturbed in synch every ``--interval`` epochs (the
  bottom quarter copies a top-quarter trial's state and moves its learning rates), ranked by
  ``--pbt-rank-by``; 4 x 48 epochs is a quarter of the grid's.

Every sweep runs through ``fetalgan.sweep.run_sweep`` with tracking into a private MLflow
store (Ray started once, ``--concurrent`` trials at a time with one CPU each), and what a
user of that sweep gets is what is scored: ``fetalgan.tracking.best_run`` picks the best trial
by its own noisy in-sweep FID, its ``best.pt`` comes back through MLflow, and that generator
is re-scored once, the same way for every method: FID64 of ``--rescore-n`` fakes against as
many further held-out phantoms (never trained on, not the in-sweep reference). A lowest
in-sweep evaluation would favour the method that evaluates most often (the grid's 192
evaluations against a search's ~50 draw more often from the same noise); the re-score does not.

For each method: the re-scored FID of the chosen generator (median and range over seeds), how
far that median moves against the grid's when the seeds are resampled (a 90 % bootstrap
interval, seeds drawn in pairs), on how many seeds it came within 5 % of the grid's, the
lowest in-sweep FID, the epochs trained by all its trials together and the sweep's wall time.
With ``--concurrent 1`` (the default) a search is deterministic: ASHA sees the trials in one
order, so a rerun gives the same figures (the grid still runs two trials at a time: its
training is deterministic either way). ``--merge`` adds runs from earlier ``--json`` files
to the table (the grid once measured, say) and ``--tag`` names this run's settings in it.
Under the table: for the grid's trials, how well each evaluation epoch's FID foretold the end
(would an ASHA rung there have kept the pair that ends best?).

Goal: Optuna + ASHA within 5 % of the grid's FID with at most 30 % of its epochs. The grid's
FIDs and epochs do not depend on the machine's load; with two or more trials at a time a
search's do, through the order in which concurrent trials reach an ASHA rung (two runs of
identical settings have differed by a factor 2.6 on one seed); wall times always do. 48
epochs, not fewer: at 24 every trial is still improving steeply and whoever trains most
configurations to the end wins.
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
        **({"ema_decay": args.ema_decay} if args.ema_decay else {}),
    }


def epochs_trained(exp_dir: Path, eval_every: int) -> list[int]:
    """Per trial of a finished sweep, the epochs it trained: the steps between its reported
    epochs; where the epoch did not advance (a PBT trial that took a donor's state at its
    own epoch and trained on from there), ``eval_every``. Without PBT: its last epoch."""
    epochs = []
    for result_file in sorted(exp_dir.glob("trial_*/result.json")):
        reported = [json.loads(line) for line in result_file.read_text().splitlines() if line]
        trained, previous = 0, 0
        for row in reported:
            epoch = row.get("epoch", 0)
            trained += epoch - previous if epoch > previous else eval_every
            previous = epoch
        epochs.append(trained)
    return epochs


def tracked_epochs_and_lowest(name: str, tracking_uri: str, eval_every: int) -> tuple[list, float]:
    """PBT/PB2 (Tune rewrites a paused trial's result.json, so it loses rows): from MLflow,
    per trial the evaluations it logged x ``eval_every`` (in synch every evaluation follows
    ``eval_every`` trained epochs, also the first after a copy), and the lowest FID logged."""
    from fetalgan.tracking import names
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{names.ROLE_TAG}` = '{names.ROLE_TRIAL}'"
    )
    histories = [[m.value for m in client.get_metric_history(r.info.run_id, "fid")] for r in runs]
    return [len(h) * eval_every for h in histories], min(min(h) for h in histories if h)


def lowest_fid(exp_dir: Path) -> float:
    """The lowest FID any evaluation of any trial reached."""
    values = []
    for result_file in exp_dir.glob("trial_*/result.json"):
        for line in result_file.read_text().splitlines():
            if line and "fid" in (row := json.loads(line)):
                values.append(row["fid"])
    return min(values)


def early_verdicts(exp_dir: Path, settle: int) -> dict[int, dict]:
    """For a grid's trials: how well each evaluation epoch's FID foretells the end. The end is
    a trial's lowest FID from epoch ``settle`` on; per epoch before it, Spearman's rho of the
    FID then with the end, and whether the pair that ends best was in the top quarter then
    (what an ASHA rung at that epoch, reduction 4, would keep)."""
    from scipy.stats import spearmanr

    curves = []
    for result_file in sorted(exp_dir.glob("trial_*/result.json")):
        rows = [json.loads(line) for line in result_file.read_text().splitlines() if line]
        curves.append({r["epoch"]: r["fid"] for r in rows if "fid" in r})
    ends = [min(v for e, v in c.items() if e >= settle) for c in curves]
    winner = ends.index(min(ends))
    verdicts = {}
    for epoch in sorted(set.intersection(*(set(c) for c in curves))):
        if epoch >= settle:
            break
        then = [c[epoch] for c in curves]
        top = sorted(range(len(then)), key=then.__getitem__)[: max(1, len(then) // 4)]
        verdicts[epoch] = {"rho": float(spearmanr(then, ends).statistic), "kept": winner in top}
    return verdicts


def rescore_reference(args, cache_dir: str):
    """Features of ``--rescore-n`` phantoms after the 512 the sweeps use (never trained on,
    not the in-sweep reference), and the FID network that made them."""
    from fetalgan.config import train_config_from_dict
    from fetalgan.data.datasets import load_reference_images
    from fetalgan.metrics.inception import extract_features, load_fid_network

    base = trial_base(args, cache_dir, 0)
    base["data"]["phantom_n"] = 512 + args.rescore_n
    base["eval_reference"] = {"size": args.rescore_n, "order": "listed", "skip": 512}
    reals = load_reference_images(train_config_from_dict(base), 32).images
    model, _ = load_fid_network(dims=args.fid_dims)
    return model, extract_features(reals, model)


def rescore(checkpoint: Path, reference, args) -> float:
    """FID of ``--rescore-n`` fakes of ``checkpoint`` against the re-score reference."""
    from fetalgan.generate import load_generator
    from fetalgan.metrics.frechet import fid_from_features
    from fetalgan.metrics.inception import extract_features
    from fetalgan.sampling import sample_images

    model, real_feats = reference
    networks, cfg = load_generator(checkpoint, device="cpu")
    fakes = sample_images(networks, cfg, args.rescore_n, seed=12345)
    return fid_from_features(real_feats, extract_features(fakes, model))["fid"]


def run_method(method: str, seed: int, args, work: Path, reference) -> dict:
    from fetalgan.config import load_sweep
    from fetalgan.sweep import run_sweep
    from fetalgan.tracking.queries import best_run, download_checkpoint

    grid = [float(v) for v in args.grid.split(",")]
    low, high = min(grid), max(grid)
    sweep = {
        "name": f"{method}_s{seed}",
        "metric": "fid",
        "mode": "min",
        # the grid's training is deterministic whatever the order: two at a time saves time
        "max_concurrent": max(2, args.concurrent) if method == "grid" else args.concurrent,
        "resources": {"cpu": 1, "gpu": 0},
        "max_failures": 0,
        "rank_by": args.rank_by,
        "base": trial_base(args, str(work / "cache"), seed),
    }
    if method in ("pbt", "pb2"):
        # A population trained to the grid's epochs; every --interval epochs the bottom
        # quarter copies a top-quarter trial and changes its learning rates. synch: the
        # population perturbs together, so the decisions do not depend on which trial the
        # machine's load let finish first (with Python's and NumPy's generators seeded below).
        scheduler = {"kind": method, "perturbation_interval": args.interval, "synch": True}
        sweep |= {
            "num_samples": args.population,
            "max_concurrent": max(2, args.concurrent),
            "rank_by": args.pbt_rank_by,
            "scheduler": scheduler,
            "search": {"kind": "random", "seed": seed},
            "space": {"lr_g": {"loguniform": [low, high]}, "lr_d": {"loguniform": [low, high]}},
        }
    elif method == "grid":
        sweep |= {
            "num_samples": 1,
            "scheduler": {"kind": "fifo"},
            "search": {"kind": "grid", "seed": seed},
            "space": {"lr_g": {"grid": grid}, "lr_d": {"grid": grid}},
        }
    else:
        search = {"kind": "random", "seed": seed}
        if method == "optuna_asha":
            search |= {"kind": "optuna", "sampler": args.sampler}
            if args.startup:
                search["startup_trials"] = args.startup
        sweep |= {
            "num_samples": args.samples,
            "scheduler": {
                "kind": "asha",
                "max_t": args.epochs,
                "grace_period": args.grace,
                "reduction_factor": args.reduction,
            },
            "search": search,
            "space": {"lr_g": {"loguniform": [low, high]}, "lr_d": {"loguniform": [low, high]}},
        }
    path = work / f"{sweep['name']}.yaml"
    import yaml

    path.write_text(yaml.safe_dump(sweep))
    cfg = load_sweep(path)
    tracking_uri = f"sqlite:///{work / 'mlruns.db'}"
    if method in ("pbt", "pb2"):  # PBT's donor choices and PB2's bandit draw from these
        import random

        import numpy as np

        random.seed(seed)
        np.random.seed(seed)
    t0 = time.perf_counter()
    run_sweep(cfg, storage=work / "ray_results", tracking_uri=tracking_uri, verbose=0)
    wall = time.perf_counter() - t0
    exp_dir = work / "ray_results" / sweep["name"]
    epochs = epochs_trained(exp_dir, args.eval_every)
    lowest = lowest_fid(exp_dir)
    if method in ("pbt", "pb2"):
        epochs, lowest = tracked_epochs_and_lowest(sweep["name"], tracking_uri, args.eval_every)
    best = best_run(sweep["name"], tracking_uri=tracking_uri)
    checkpoint = download_checkpoint(
        best["checkpoint_uri"], work / "best" / sweep["name"], tracking_uri=tracking_uri
    )
    verdicts = early_verdicts(exp_dir, settle=args.epochs * 3 // 4) if method == "grid" else {}
    return {
        "method": method,
        "seed": seed,
        **({"early_verdicts": verdicts} if verdicts else {}),
        "fid": rescore(checkpoint, reference, args),
        "lowest_fid": lowest,
        "chosen": {k: float(v) for k, v in best["params"].items() if k in ("lr_g", "lr_d")},
        "trials": len(epochs),
        "epochs": sum(epochs),
        "wall_s": wall,
    }


def spread(values: list[float], fmt: str) -> str:
    return (
        f"{format(statistics.median(values), fmt)} "
        f"({format(min(values), fmt)}–{format(max(values), fmt)})"
    )


def paired(rows: list[dict], method: str) -> tuple[list[float], list[float]]:
    """FIDs of ``method`` and of the grid on the seeds both ran, in seed order."""
    grid = {r["seed"]: r["fid"] for r in rows if r["method"] == "grid"}
    own = {r["seed"]: r["fid"] for r in rows if r["method"] == method and r["seed"] in grid}
    seeds = sorted(own)
    return [own[s] for s in seeds], [grid[s] for s in seeds]


def ratio_interval(fids: list[float], grid: list[float], draws: int = 10_000) -> tuple:
    """90 % bootstrap interval (seeds resampled in pairs) of median FID over the grid's
    median FID, minus 1: how far one more set of seeds could move the "vs grid" figure."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = np.asarray(fids), np.asarray(grid)
    pick = rng.integers(0, len(a), size=(draws, len(a)))
    ratios = np.median(a[pick], axis=1) / np.median(b[pick], axis=1) - 1
    return tuple(np.percentile(ratios, [5, 95]))


def table(rows: list[dict], methods: list[str]) -> str:
    by = {m: [r for r in rows if r["method"] == m] for m in methods}
    grid_fid = statistics.median(r["fid"] for r in by["grid"])
    grid_epochs = statistics.median(r["epochs"] for r in by["grid"])
    lines = [
        "| method | trials | FID of the chosen generator, median (range) | vs grid "
        "| vs grid, 90 % bootstrap | seeds within 5 % of the grid "
        "| lowest in-sweep FID, median (range) | epochs, median (range) | of grid's "
        "| wall s, median (range) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        runs = by[method]
        fid = statistics.median(r["fid"] for r in runs)
        epochs = statistics.median(r["epochs"] for r in runs)
        own, grid = paired(rows, method)
        if method == "grid":
            interval = within = "—"
        else:
            low, high = ratio_interval(own, grid)
            interval = f"{low:+.0%} to {high:+.0%}"
            within = f"{sum(f <= 1.05 * g for f, g in zip(own, grid, strict=True))} of {len(own)}"
        lines.append(
            f"| {method} | {statistics.median(r['trials'] for r in runs):g} "
            f"| {spread([r['fid'] for r in runs], '.4f')} | {fid / grid_fid - 1:+.1%} "
            f"| {interval} | {within} "
            f"| {spread([r['lowest_fid'] for r in runs], '.3f')} "
            f"| {spread([r['epochs'] for r in runs], '.0f')} | {epochs / grid_epochs:.0%} "
            f"| {spread([r['wall_s'] for r in runs], '.0f')} |"
        )
    verdicts = [r["early_verdicts"] for r in by["grid"] if "early_verdicts" in r]
    if verdicts:
        lines.append(
            "\nThe grid's pair that ends best (lowest FID from 3/4 of the epochs on), by how it "
            "stood earlier: epoch: in the top quarter then on k of n seeds; median Spearman rho "
            "of the FID then with the end"
        )
        for epoch in sorted(set.intersection(*(set(v) for v in verdicts)), key=int):
            at = [v[epoch] for v in verdicts]
            lines.append(
                f"- {epoch}: {sum(a['kept'] for a in at)} of {len(at)}; "
                f"rho {statistics.median(a['rho'] for a in at):.2f}"
            )
    return "\n".join(lines)


def main() -> int:
    from fetalgan.config import RANK_BY, SAMPLERS, SearchConfig, SweepConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="repeats of every method")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first .. first+seeds-1")
    parser.add_argument("--epochs", type=int, default=48, help="grid epochs = ASHA max_t")
    parser.add_argument("--eval-every", type=int, default=4, help="epochs between evaluations")
    parser.add_argument("--eval-n", type=int, default=64, help="fakes per evaluation")
    parser.add_argument("--fid-dims", type=int, default=64, help="Inception feature block")
    parser.add_argument(
        "--ema-decay", type=float, default=0.0, help="generator EMA of every trial (0: off)"
    )
    parser.add_argument("--grid", default="1e-4,3e-4,1e-3,3e-3", help="lr values, both axes")
    parser.add_argument("--samples", type=int, default=12, help="trials of each ASHA search")
    parser.add_argument(
        "--startup",
        type=int,
        default=0,
        help="Optuna's random startup trials (0: fetalgan's default)",
    )
    parser.add_argument(
        "--sampler", choices=SAMPLERS, default=SearchConfig().sampler, help="Optuna's sampler"
    )
    parser.add_argument("--grace", type=int, default=4, help="ASHA grace period (epochs)")
    parser.add_argument("--reduction", type=float, default=4.0, help="ASHA reduction factor")
    parser.add_argument(
        "--rescore-n", type=int, default=1024, help="fakes and held-out reals of the re-score"
    )
    parser.add_argument(
        "--rank-by",
        choices=RANK_BY,
        default=SweepConfig().rank_by,  # fetalgan's default
        help="what ASHA and the search compare: the latest FID or each trial's best so far",
    )
    parser.add_argument(
        "--concurrent", type=int, default=1, help="a search's trials at once (1: deterministic)"
    )
    parser.add_argument("--population", type=int, default=4, help="PBT/PB2 trials")
    parser.add_argument("--interval", type=int, default=8, help="PBT/PB2 perturbation epochs")
    parser.add_argument(
        "--pbt-rank-by",
        choices=("last", "window"),
        default="window",
        help="PBT/PB2's fitness: the latest FID or the mean log-FID of the last three",
    )
    parser.add_argument(
        "--methods", default="grid,optuna_asha,random_asha", help="comma-separated subset"
    )
    parser.add_argument("--json", help="also write every run and the table to this file")
    parser.add_argument(
        "--tag", default="", help="appended to this run's method names (e.g. 'gp, 1 at once')"
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        default=[],
        metavar="FILE",
        help="runs from earlier --json files join the table (the grid's training is "
        "deterministic: measure it once, merge it); with --seeds 0 only the table",
    )
    args = parser.parse_args()

    methods = args.methods.split(",")
    merged = [row for file in args.merge for row in json.loads(Path(file).read_text())["runs"]]
    own: list[dict] = []  # this run's, what --json keeps
    t_start = time.perf_counter()
    if args.seeds > 0:
        run_seeds(args, methods, own)
    rows = merged + own
    total = time.perf_counter() - t_start
    if own:
        print(
            f"\nDCGAN32 on 256 phantoms, FID{args.fid_dims} of {args.eval_n} fakes vs 256 "
            f"held-out, eval every {args.eval_every}; grid {args.grid} squared at {args.epochs} "
            f"epochs; ASHA max_t {args.epochs}, grace {args.grace}, reduction "
            f"{args.reduction:g}, {args.samples} trials, Optuna's {args.sampler} sampler, ranked "
            f"by the {args.rank_by} FID; EMA {args.ema_decay or 'off'}; re-scored on "
            f"{args.rescore_n} fakes vs {args.rescore_n} held-out; seeds {args.first_seed}.."
            f"{args.first_seed + args.seeds - 1}; {args.concurrent} trials at once; load average "
            f"at the end {os.getloadavg()[0]:.1f}; {total / 60:.1f} min in all"
        )
    if merged:
        print(f"{len(merged)} runs merged from {', '.join(args.merge)}")
    print()
    names = list(dict.fromkeys(["grid"] + [r["method"] for r in rows]))
    text = table(rows, names) if any(r["method"] == "grid" for r in rows) else ""
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": own, "table": text}, indent=2) + "\n")
    return 0


def run_seeds(args, methods: list[str], rows: list[dict]) -> None:
    """Every method on every seed, appended to ``rows`` (and to ``--json`` as it goes)."""
    import ray

    work = Path(tempfile.mkdtemp(prefix="fetalgan-search-"))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=max(2, args.concurrent), include_dashboard=False, log_to_driver=False)
    reference = rescore_reference(args, str(work / "cache"))
    try:
        # seeds outermost: load drifts hit every method alike
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for method in methods:
                row = run_method(method, seed, args, work, reference)
                row["method"] += f" {args.tag}" if args.tag and method != "grid" else ""
                rows.append(row)
                print(
                    f"seed {seed} {row['method']:12s} chosen lr_g "
                    f"{row['chosen'].get('lr_g', 0):.2e} lr_d {row['chosen'].get('lr_d', 0):.2e}: "
                    f"FID {row['fid']:.4f} (in-sweep lowest {row['lowest_fid']:.3f}), "
                    f"{row['trials']} trials, {row['epochs']} epochs, {row['wall_s']:.0f} s",
                    flush=True,
                )
                if args.json:  # nothing lost if a later sweep fails
                    Path(args.json).write_text(json.dumps({"runs": rows}, indent=2) + "\n")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
