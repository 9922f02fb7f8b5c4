"""Tracking under load: N concurrent trials through one sweep driver's tracking path into
``mlflow/server.sh`` on PostgreSQL, the way a cluster sweep logs.

    .venv/bin/python bench/tracking_load.py [--trials 50,200] [--evaluations 20]
        [--checkpoint-mb 20] [--interval 10] [--ray] [--json FILE]

Default (simulated trials; Tune itself is bypassed): one driver process runs the real tracking
path of ``run_sweep`` (SweepTracker, parent run, the durable write queue and
:class:`~fetalgan.sweep.callback.TrackingCallback`) and calls the callback's hooks from ONE
thread, as Tune's event loop does, in Tune's order (``on_trial_start``; per evaluation
``on_trial_result`` then ``on_checkpoint``; ``on_trial_complete``; ``on_experiment_end``), with
stand-ins for Tune's Trial. Each of the N trials reports every ``--interval`` s (+-20 %
jitter, out of step) with a real checkpoint directory (hard links to a ``checkpoint.pt`` of
``--checkpoint-mb`` MB, a weights-only ``best.pt`` when its made-up FID improves, a 256x256
sample grid); Tune's keep-the-last-two checkpoints is mimicked. The staged checkpoints are
hard links, so they take no disk; what the server stores (best.pt, last.pt, grids) is removed
after each N, with the work directory.

``--ray``: N real Ray Tune trials (a light trainable reporting the same files) through the real
``run_sweep``: about 250 MB per trial process, so N = 200 needs a large machine.

PostgreSQL and ``server.sh`` are started here with the e2e harness (Debian's PostgreSQL must be
installed; run as root or as a user PostgreSQL accepts).

Prints per N: evaluations present in MLflow out of those reported, tracking lag from report to
visible in MLflow's database (polled every 0.5 s: p50, p95, max), the driver process's CPU and
peak RSS, artefact MB stored and MB/s, the callback hooks' time per call (p50, p95: Tune's loop
waits that long) and, after the last report, how long the queue took to drain. Sharing a
loaded machine, the figures are load-dependent: read them as "keeps up or not".
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


def fake_evaluation(
    templates: Path,
    stage: Path,
    epoch: int,
    fid: float,
    best: float,
    is_best: bool,
    objective,
    *,
    place,
):
    """A checkpoint directory as a trial stages it (the template checkpoint, grid and, when
    ``is_best``, best weights, put there by ``place``: a copy or a hard link) and its
    Evaluation record."""
    from fetalgan.checkpoint import CHECKPOINT_NAME
    from fetalgan.evaluation import Evaluation
    from fetalgan.sweep.trainable import sample_grid_name
    from fetalgan.tracking.names import BEST_CHECKPOINT

    (stage / "samples").mkdir(parents=True, exist_ok=True)
    place(templates / "checkpoint.pt", stage / CHECKPOINT_NAME)
    place(templates / "grid.png", stage / sample_grid_name(epoch))
    if is_best:
        place(templates / "best.pt", stage / BEST_CHECKPOINT)
    return Evaluation(
        epoch=epoch,
        losses={"loss_g": 1.0 / epoch, "loss_d": 0.5},
        values={"fid": fid},
        n_fake=64,
        objective=objective,
        best_value=best,
        is_best=is_best,
    )


def light_trial(config: dict, spec) -> None:
    """Reports ``epochs`` evaluations, ``FETALGAN_LOAD_INTERVAL`` seconds apart, each with a
    checkpoint directory like ``sweep_trial``'s (copies of the bench's template files)."""
    import random

    from ray import tune

    from fetalgan.sweep.space import trial_config
    from fetalgan.sweep.trainable import tune_result

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
        evaluation = fake_evaluation(
            templates, stage, epoch, fid, best, is_best, spec.objective, place=shutil.copyfile
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
    from fetalgan.sweep.run import RunOptions, run_sweep

    work = Path(args.work)
    sweep = {
        "name": args.experiment,
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
    path = work / f"{args.experiment}.yaml"
    import yaml

    path.write_text(yaml.safe_dump(sweep))
    summary = run_sweep(
        load_sweep(path),
        storage=work / "ray_results",
        tracking_uri=args.tracking_uri,
        verbose=0,
        options=RunOptions(trial_fn=light_trial, warm_statistics=False),
    )
    return 0 if summary.get("tracking_queued") == 0 else 1


# ---- the simulated driver (default): Tune bypassed, the real callback and write queue -------


class SimTrial:
    """The attributes of Tune's ``Trial`` that :class:`TrackingCallback` reads."""

    def __init__(self, trial_id: str, config: dict, path: Path):
        self.trial_id = trial_id
        self.config = config
        self.path = str(path)
        self.last_result: dict = {}
        self.checkpoint = None  # SimCheckpoint once one is stored
        self.status = "PENDING"
        self.num_failures = 0
        self.error_file = None

    def get_error(self):
        return None


class SimCheckpoint:
    def __init__(self, path: Path):
        self.path = str(path)


def simulate(
    trials: int,
    evaluations: int,
    interval: float,
    *,
    templates: Path,
    work: Path,
    tracking_uri: str,
    experiment: str,
    reports: Path | None = None,
    seed: int = 0,
) -> dict:
    """One sweep of ``trials`` simulated trials, driven the way ``run_sweep`` drives Tune's
    callbacks: the same SweepTracker, parent run, write queue and :class:`TrackingCallback`,
    whose hooks are called from this one thread (Tune's event loop) in the order Tune calls
    them. Each trial reports an evaluation every ``interval`` s (jittered, trials out of step),
    with a checkpoint directory of hard links to ``templates`` (checkpoint.pt, best.pt when its
    made-up FID improves, the sample grid); Tune's keep-two checkpoints are mimicked. Returns
    ``{reported: {(trial, epoch): time}, hook_seconds: {hook: [s, ...]}, runs, queued_left,
    loop_late_s: [s]}``; appends each report to ``reports/<trial>.jsonl`` when given."""
    import heapq
    import random
    import socket

    from fetalgan.config import TrainConfig, to_dict
    from fetalgan.evaluation import Objective
    from fetalgan.sweep.callback import QUEUE_DIR, TrackingCallback
    from fetalgan.sweep.trainable import TrialSpec
    from fetalgan.tracking import SweepTracker
    from fetalgan.tracking.write_queue import open_write_queue

    objective = Objective("fid", "min")
    tracker = SweepTracker(experiment, objective=objective, tracking_uri=tracking_uri)
    parent = tracker.start_parent()
    tracker_args = {
        "experiment": experiment,
        "objective": objective,
        "tracking_uri": tracker.tracking_uri,
        "checkpoint_epochs": (),
        "parent_run_id": parent,
    }
    exp_dir = work / experiment
    exp_dir.mkdir(parents=True, exist_ok=True)
    queue = open_write_queue(exp_dir / QUEUE_DIR, tracker_args)
    base = to_dict(TrainConfig(model="dcgan", resolution=32, epochs=evaluations, eval_every=1))
    spec = TrialSpec(name=experiment, base=base, objective=objective, parent_run_id=parent)
    callback = TrackingCallback(tracker_args, spec, str(exp_dir / "outcome.json"))
    hook_seconds: dict[str, list[float]] = {}

    def call(hook: str, *args, **kwargs) -> None:
        start = time.perf_counter()
        getattr(callback, hook)(*args, **kwargs)
        hook_seconds.setdefault(hook, []).append(time.perf_counter() - start)

    rng = random.Random(seed)
    host, ip = socket.gethostname(), "127.0.0.1"
    sims = []
    for i in range(trials):
        trial_id = f"sim{i:05d}"
        config = {"lr_g": 10 ** rng.uniform(-4, -3)}
        sims.append(SimTrial(trial_id, config, exp_dir / f"trial_{trial_id}"))
    best: dict[str, float] = {}
    stages: dict[str, list[Path]] = {t.trial_id: [] for t in sims}
    reported: dict[tuple[str, int], float] = {}
    late: list[float] = []
    out = {}
    if reports is not None:
        reports.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    # (when, order, trial index, epoch): epoch 0 starts the trial; Tune starts them together
    events = [(t0, i, i, 0) for i in range(trials)]
    heapq.heapify(events)
    order = trials
    iteration = 0
    while events:
        due, _, index, epoch = heapq.heappop(events)
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        late.append(max(0.0, -wait))
        trial = sims[index]
        iteration += 1
        if epoch == 0:
            trial.status = "RUNNING"
            Path(trial.path).mkdir(parents=True, exist_ok=True)
            call("on_trial_start", iteration, sims, trial)
            first = time.time() + rng.uniform(0, interval) + interval * rng.uniform(0.5, 1.0)
            heapq.heappush(events, (first, order, index, 1))
            order += 1
            continue
        # the trial's side (a worker process in a real sweep): its checkpoint directory
        trial_rng = random.Random(f"{trial.trial_id}/{epoch}")
        fid = 300.0 / epoch + trial_rng.uniform(0, 40)
        is_best = trial.trial_id not in best or fid < best[trial.trial_id]
        best[trial.trial_id] = min(fid, best.get(trial.trial_id, fid))
        stage = Path(trial.path) / f"checkpoint_{epoch - 1:06d}"
        evaluation = fake_evaluation(
            templates, stage, epoch, fid, best[trial.trial_id], is_best, objective, place=os.link
        )
        result = {
            **evaluation.metrics(),
            "epoch": epoch,
            "evaluation": json.dumps(evaluation.to_dict()),
            "system": json.dumps({"cpu_percent": 1.0}),
            "worker_host": host,
            "worker_ip": ip,
            "should_checkpoint": True,  # Tune adds it to a result reported with a checkpoint
            "trial_id": trial.trial_id,
            "training_iteration": epoch,
        }
        reported[(trial.trial_id, epoch)] = due
        if reports is not None:
            with open(reports / f"{trial.trial_id}.jsonl", "a") as file:
                file.write(json.dumps({"epoch": epoch, "t": due}) + "\n")
        # Tune's loop: the result, then the checkpoint it persisted
        trial.last_result = result
        call("on_trial_result", iteration, sims, trial, result)
        trial.checkpoint = SimCheckpoint(stage)
        call("on_checkpoint", iteration, sims, trial, trial.checkpoint)
        stages[trial.trial_id].append(stage)
        while len(stages[trial.trial_id]) > 2:  # Tune keeps the last two
            shutil.rmtree(stages[trial.trial_id].pop(0), ignore_errors=True)
        if epoch < evaluations:
            step = interval * rng.uniform(0.8, 1.2)
            heapq.heappush(events, (due + step, order, index, epoch + 1))
            order += 1
        else:
            trial.status = "TERMINATED"
            call("on_trial_complete", iteration, sims, trial)
    call("on_experiment_end", sims)
    out["reports_done_s"] = time.time() - t0
    drained = queue.drain(float(os.environ.get("FETALGAN_LOAD_DRAIN", 1800)))
    out["drain_s"] = time.time() - t0 - out["reports_done_s"]
    out["queued_left"] = queue.pending()
    out["runs"] = dict(queue.runs)
    queue.close(timeout_s=30 if drained else 1)
    tracker.finish_parent("FINISHED", register=False)
    out.update(reported=reported, hook_seconds=hook_seconds, loop_late_s=late)
    return out


def simulated_driver(args) -> int:
    """``--driver`` without ``--ray``: :func:`simulate` in this process, which the parent
    measures; what it measured itself goes to ``WORK/driver.json``."""
    work = Path(args.work)
    out = simulate(
        args.trials,
        args.evaluations,
        args.interval,
        templates=work / "templates",
        work=work,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        reports=work / "reports",
    )
    out.pop("reported")
    (work / "driver.json").write_text(json.dumps(out))
    return 0 if out["queued_left"] == 0 else 1


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


def measure(args, n: int, server, database_uri: str, work: Path, artifacts: str) -> dict:
    import psutil

    run_dir = work / f"n{n}-{artifacts}"
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
    env.pop("FETALGAN_ARTIFACT_ROOT", None)
    if artifacts == "direct":  # the driver writes into the server's artefact root itself
        env["FETALGAN_ARTIFACT_ROOT"] = str(server.state_dir / "mlartifacts")
    command = [sys.executable, str(Path(__file__).resolve()), "--driver", "--trials", str(n)]
    command += ["--evaluations", str(args.evaluations), "--work", str(run_dir)]
    command += ["--interval", str(args.interval)] + (["--ray"] if args.ray else [])
    command += ["--tracking-uri", server.url]
    command += ["--experiment", f"load{n}-{artifacts}"]
    visibility = Visibility(database_uri, f"load{n}-{artifacts}")
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
    ended = time.time()  # the driver has exited: its queue drained (or gave up)
    wall = ended - started
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
    inside = {}  # what the simulated driver measured itself
    if (run_dir / "driver.json").is_file():
        inside = json.loads((run_dir / "driver.json").read_text())
    hooks = [s for seconds in inside.get("hook_seconds", {}).values() for s in seconds]
    hooks.sort()
    first_report = min(reported.values(), default=started)
    row = {
        "trials": n,
        "artifacts": artifacts,
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
        "artefact_mb_per_s": megabytes / max(1e-9, max(ended, last_seen) - first_report),
        "wall_s": wall,
        "driver_exit": proc.returncode,
        "mode": "ray" if args.ray else "simulated",
        "hook_calls": len(hooks),
        "hook_p50_ms": 1000 * (_quantile(hooks, 0.5) or 0),
        "hook_p95_ms": 1000 * (_quantile(hooks, 0.95) or 0),
        "hook_max_ms": 1000 * (hooks[-1] if hooks else 0),
        "loop_late_p95_s": _quantile(sorted(inside.get("loop_late_s", [])), 0.95),
        "drain_s": inside.get("drain_s"),
    }
    shutil.rmtree(run_dir, ignore_errors=True)  # the staged checkpoints and the queue
    for child in (server.state_dir / "mlartifacts").iterdir():  # this N's uploads
        shutil.rmtree(child, ignore_errors=True)
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
    parser.add_argument(
        "--ray", action="store_true", help="real Ray Tune trials (a ~250 MB process each)"
    )
    parser.add_argument(
        "--artifacts",
        default="server,direct",
        help="comma-separated: server (uploads through mlflow/server.sh) and/or direct (the "
        "driver writes into the server's artefact root, FETALGAN_ARTIFACT_ROOT)",
    )
    parser.add_argument("--experiment", help=argparse.SUPPRESS)
    parser.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--tracking-uri", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver:
        args.trials = int(args.trials)
        args.experiment = args.experiment or f"load{args.trials}"
        return driver(args) if args.ray else simulated_driver(args)

    modes = args.artifacts.split(",")
    for mode in modes:  # before PostgreSQL and the server start
        if mode not in ("server", "direct"):
            parser.error(f"--artifacts: unknown mode {mode!r}; expected server and/or direct")

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
            for artifacts in modes:
                rows.append(measure(args, n, server, database.uri, work, artifacts))
    finally:
        if server is not None:
            server.stop()
        database.stop()
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        f"{'N':>4} {'artefacts':>9} {'present/reported':>17} {'lag p50':>8} {'p95':>7} {'max':>7} "
        f"{'driver CPU':>11} {'driver RSS':>11} {'artefacts':>10} {'MB/s':>6} "
        f"{'hook p50':>9} {'p95':>8} {'drain':>7}"
    )
    for row in rows:
        print(
            f"{row['trials']:>4} {row['artifacts']:>9} {row['present']:>8}/{row['reported']:<8} "
            f"{row['lag_p50_s'] or 0:>7.2f}s {row['lag_p95_s'] or 0:>6.2f}s "
            f"{row['lag_max_s'] or 0:>6.2f}s {row['driver_cpu_percent']:>10.0f}% "
            f"{row['driver_peak_rss_mib']:>8.0f} MiB {row['artefact_mb']:>7.0f} MB "
            f"{row['artefact_mb_per_s']:>6.1f} {row['hook_p50_ms']:>7.2f}ms "
            f"{row['hook_p95_ms']:>6.2f}ms {row['drain_s'] or 0:>6.1f}s"
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
