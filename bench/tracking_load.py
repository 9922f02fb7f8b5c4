"""Tracking under load: N simulated concurrent trials through one sweep driver into
``mlflow/server.sh`` on PostgreSQL, the way a cluster sweep logs.

    .venv/bin/python bench/tracking_load.py [--trials 50,200] [--evaluations 20]
        [--checkpoint-mb 20] [--interval 10] [--json FILE]

Each trial is a light trainable (no training): every ``--interval`` seconds it writes a full
checkpoint of ``--checkpoint-mb`` MB (a real fetalgan checkpoint: weights one third, optimiser
state two thirds), a weights-only ``best.pt`` when its made-up FID improves, and a 256x256
sample grid, and reports them to Tune exactly as ``sweep_trial`` does. The driver is the real
``run_sweep`` (callback, write queue, end-of-sweep registry) in a subprocess. PostgreSQL and
``server.sh`` are started here with the e2e harness (Debian's PostgreSQL must be installed;
run as root or as a user PostgreSQL accepts).

Prints per N: evaluations present in MLflow out of those reported, tracking lag from report to
visible in MLflow's database (p50, p95, max), the driver process's CPU seconds and peak RSS,
artefact MB in the server's artefact root and MB/s over the sweep. Sharing a 2-core machine,
the figures are load-dependent: read them as "keeps up or not".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# ---- the light trial (runs in Ray workers; no torch import) ---------------------------------


def light_trial(config: dict, spec) -> None:
    """Reports ``epochs`` evaluations, ``FETALGAN_LOAD_INTERVAL`` seconds apart, each with a
    checkpoint directory like ``sweep_trial``'s (copies of the bench's template files)."""
    import random

    from ray import tune

    from fetalgan.checkpoint import CHECKPOINT_NAME
    from fetalgan.evaluation import Evaluation
    from fetalgan.sweep.space import trial_config
    from fetalgan.sweep.trainable import sample_grid_name, tune_result
    from fetalgan.tracking.names import BEST_CHECKPOINT

    templates = Path(os.environ["FETALGAN_LOAD_TEMPLATES"])
    interval = float(os.environ["FETALGAN_LOAD_INTERVAL"])
    context = tune.get_context()
    trial_id = context.get_trial_id()
    trial_dir = Path(context.get_trial_dir())
    reports = open(templates.parent / "reports" / f"{trial_id}.jsonl", "a")  # noqa: SIM115
    cfg = trial_config(spec.base, config, spec.encoded)
    rng = random.Random(trial_id)
    time.sleep(rng.uniform(0, interval))  # trials do not evaluate in lockstep
    best = None
    for epoch in range(1, cfg.epochs + 1):
        started = time.monotonic()
        fid = 300.0 / epoch + rng.uniform(0, 40)
        is_best = best is None or fid < best
        best = fid if is_best else best
        stage = trial_dir / f"stage_{epoch:04d}"
        (stage / "samples").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(templates / "checkpoint.pt", stage / CHECKPOINT_NAME)
        shutil.copyfile(templates / "grid.png", stage / sample_grid_name(epoch))
        if is_best:
            shutil.copyfile(templates / "best.pt", stage / BEST_CHECKPOINT)
        evaluation = Evaluation(
            epoch=epoch,
            losses={"loss_g": 1.0 / epoch, "loss_d": 0.5},
            values={"fid": fid},
            n_fake=64,
            objective=spec.objective,
            best_value=best,
            is_best=is_best,
        )
        result = tune_result(evaluation, {"cpu_percent": 1.0})
        reports.write(json.dumps({"epoch": epoch, "t": time.time()}) + "\n")
        reports.flush()
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(str(stage)))
        shutil.rmtree(stage, ignore_errors=True)
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def driver(args) -> int:
    """One sweep of ``args.trials`` light trials through ``run_sweep`` (this process is the
    driver the parent measures)."""
    from fetalgan.config import load_sweep
    from fetalgan.sweep.run import run_sweep

    work = Path(args.work)
    sweep = {
        "name": f"load{args.trials}",
        "metric": "fid",
        "mode": "min",
        "num_samples": args.trials,
        "max_concurrent": args.trials,
        "resources": {"cpu": round(2.0 / args.trials, 4), "gpu": 0},
        "scheduler": {"kind": "fifo"},
        "search": {"kind": "random", "seed": 0},
        "base": {
            "model": "dcgan",
            "resolution": 32,
            "data": {"kind": "phantom", "size": 64},
            "epochs": args.evaluations,
            "eval_every": 1,
            "eval_metrics": ["fid"],
        },
        "space": {"lr_g": {"loguniform": [1e-4, 1e-3]}},
    }
    path = work / f"load{args.trials}.yaml"
    import yaml

    path.write_text(yaml.safe_dump(sweep))
    summary = run_sweep(
        load_sweep(path),
        storage=work / "ray_results",
        tracking_uri=args.tracking_uri,
        trial_fn=light_trial,
        warm_statistics=False,
        verbose=0,
    )
    return 0 if summary.get("tracking_queued") == 0 else 1


# ---- the measuring parent ------------------------------------------------------------------


def make_templates(folder: Path, megabytes: float) -> None:
    """A full checkpoint of about ``megabytes`` MB, its weights-only best.pt, a sample grid."""
    import numpy as np
    import torch
    from PIL import Image

    from fetalgan.checkpoint import save_checkpoint, save_weights

    floats = max(1, int(megabytes * 1e6 / 4 / 3))
    state = {
        "epoch": 1,
        "config": {},
        "networks": {"generator": {"w": torch.randn(floats)}},
        "optimizers": {
            "generator": {"state": {0: {"a": torch.randn(floats)}, 1: {"b": torch.randn(floats)}}}
        },
        "rng": {},
    }
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / "checkpoint.pt", state)
    save_weights(folder / "best.pt", state)
    grid = np.random.default_rng(0).integers(0, 255, (256, 256), dtype=np.uint8)
    Image.fromarray(grid).save(folder / "grid.png")


class Visibility:
    """Polls the PostgreSQL behind the server: when each (trial, epoch) ``fid`` first shows."""

    def __init__(self, database_uri: str, experiment: str):
        import psycopg

        self.connection = psycopg.connect(database_uri, autocommit=True)
        self.experiment = experiment
        self.first_seen: dict[tuple[str, int], float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        query = """
            SELECT t.value, m.step FROM metrics m
            JOIN tags t ON t.run_uuid = m.run_uuid AND t.key = 'fetalgan.trial_id'
            JOIN runs r ON r.run_uuid = m.run_uuid
            JOIN experiments e ON e.experiment_id = r.experiment_id AND e.name = %s
            WHERE m.key = 'fid'"""
        while not self.stop.is_set():
            now = time.time()
            with self.connection.cursor() as cursor:
                cursor.execute(query, (self.experiment,))
                for trial, step in cursor.fetchall():
                    self.first_seen.setdefault((trial, int(step)), now)
            self.stop.wait(0.5)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.connection.close()


def measure(args, n: int, server, database_uri: str, work: Path) -> dict:
    import psutil

    run_dir = work / f"n{n}"
    (run_dir / "reports").mkdir(parents=True)
    make_templates(run_dir / "templates", args.checkpoint_mb)
    artefacts_before = _tree_bytes(server.state_dir / "mlartifacts")
    env = {
        **os.environ,
        "FETALGAN_LOAD_TEMPLATES": str(run_dir / "templates"),
        "FETALGAN_LOAD_INTERVAL": str(args.interval),
        "RAY_ADDRESS": "",
        "RAY_AUTH_MODE": "disabled",
        "PYTHONPATH": f"{REPO / 'bench'}:{os.environ.get('PYTHONPATH', '')}",
    }
    command = [sys.executable, str(Path(__file__).resolve()), "--driver", "--trials", str(n)]
    command += ["--evaluations", str(args.evaluations), "--work", str(run_dir)]
    command += ["--tracking-uri", server.url]
    visibility = Visibility(database_uri, f"load{n}")
    started = time.time()
    log = open(run_dir / "driver.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    driver = psutil.Process(proc.pid)
    peak_rss = 0
    cpu = 0.0
    while proc.poll() is None:
        try:
            peak_rss = max(peak_rss, driver.memory_info().rss)
            times = driver.cpu_times()
            cpu = times.user + times.system
        except psutil.NoSuchProcess:
            break
        time.sleep(0.5)
    wall = time.time() - started
    log.close()
    time.sleep(1.5)  # the poller's last round
    visibility.close()
    reported = {}
    for file in (run_dir / "reports").glob("*.jsonl"):
        for line in file.read_text().splitlines():
            record = json.loads(line)
            reported[(file.stem, record["epoch"])] = record["t"]
    lags = sorted(
        visibility.first_seen[key] - t
        for key, t in reported.items()
        if key in visibility.first_seen
    )
    last_seen = max(visibility.first_seen.values(), default=started)
    megabytes = (_tree_bytes(server.state_dir / "mlartifacts") - artefacts_before) / 1e6
    first_report = min(reported.values(), default=started)
    row = {
        "trials": n,
        "evaluations": args.evaluations,
        "checkpoint_mb": args.checkpoint_mb,
        "interval_s": args.interval,
        "reported": len(reported),
        "present": sum(1 for key in reported if key in visibility.first_seen),
        "lag_p50_s": _quantile(lags, 0.5),
        "lag_p95_s": _quantile(lags, 0.95),
        "lag_max_s": lags[-1] if lags else None,
        "driver_cpu_s": cpu,
        "driver_cpu_percent": 100 * cpu / wall,
        "driver_peak_rss_mib": peak_rss / 2**20,
        "artefact_mb": megabytes,
        "artefact_mb_per_s": megabytes / max(1e-9, last_seen - first_report),
        "wall_s": wall,
        "driver_exit": proc.returncode,
    }
    print(json.dumps(row), flush=True)
    return row


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", default="50,200", help="comma-separated N (default 50,200)")
    parser.add_argument("--evaluations", type=int, default=20, help="per trial (default 20)")
    parser.add_argument("--checkpoint-mb", type=float, default=20.0, help="full checkpoint size")
    parser.add_argument("--interval", type=float, default=10.0, help="s between evaluations")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--tracking-uri", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver:
        args.trials = int(args.trials)
        return driver(args)

    sys.path.insert(0, str(REPO / "tests" / "e2e"))
    from harness.mlflow_server import MlflowServer
    from harness.postgres import Postgres

    work = Path(tempfile.mkdtemp(prefix="fg-load-", dir="/tmp"))
    database = Postgres()
    server = None
    rows = []
    try:
        env = {**os.environ, "FETALGAN_VENV": str(Path(sys.executable).parents[1])}
        server = MlflowServer(
            REPO / "mlflow" / "server.sh",
            work / "mlflow_server",
            "--backend-store-uri",
            database.uri,
            env=env,
        )
        for n in (int(x) for x in args.trials.split(",")):
            rows.append(measure(args, n, server, database.uri, work))
    finally:
        if server is not None:
            server.stop()
        database.stop()
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        f"{'N':>4} {'present/reported':>17} {'lag p50':>8} {'p95':>7} {'max':>7} "
        f"{'driver CPU':>11} {'driver RSS':>11} {'artefacts':>10} {'MB/s':>6}"
    )
    for row in rows:
        print(
            f"{row['trials']:>4} {row['present']:>8}/{row['reported']:<8} "
            f"{row['lag_p50_s'] or 0:>7.2f}s {row['lag_p95_s'] or 0:>6.2f}s "
            f"{row['lag_max_s'] or 0:>6.2f}s {row['driver_cpu_percent']:>10.0f}% "
            f"{row['driver_peak_rss_mib']:>8.0f} MiB {row['artefact_mb']:>7.0f} MB "
            f"{row['artefact_mb_per_s']:>6.1f}"
        )
    print(
        f"({args.evaluations} evaluations per trial, {args.interval:g} s apart, "
        f"{args.checkpoint_mb:g} MB checkpoints)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["present"] == r["reported"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
