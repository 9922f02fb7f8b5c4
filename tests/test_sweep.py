"""Sweeps end to end on tiny phantoms: Ray Tune + Optuna + ASHA, grid, data-parallel trials,
crashes, interruption and resume, every trial checked in a real sqlite MLflow store.

The in-process tests share one Ray instance (starting Ray costs ~5 s and ~1.7 GB). Trials run
one at a time where a test asserts on scheduler decisions, so the outcome is deterministic.
The LBPv distance (no Inception network) stands in for FID where the metric's value does not
matter; the smoke sweep runs the real FID path.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from fetalgan.cli import main
from fetalgan.config import param_value
from fetalgan.sweep import run_sweep
from fetalgan.sweep.run import RunOptions
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_instance():
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # see DESIGN.md: stale auth tokens
    ray.init(num_cpus=4, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def tiny_base(tmp_path: Path, **overrides) -> dict:
    base = {
        "resolution": 32,
        "data": {
            "kind": "phantom",
            "size": 24,
            "phantom_n": 32,
            "cache_dir": str(tmp_path / "cache"),
        },
        "epochs": 3,
        "eval_every": 1,
        "eval_n": 16,
        "eval_metrics": ["lbpv"],
        "batch_size": 8,
        "ngf": 8,
        "ndf": 8,
        "nz": 16,
        "precision": "fp32",
        "device": "cpu",
    }
    base.update(overrides)
    return base


def write_sweep(tmp_path: Path, name: str, base: dict, **fields) -> Path:
    data = {
        "name": name,
        "metric": "lbpv_l1",
        "mode": "min",
        "resources": {"cpu": 1},
        "scheduler": {"kind": "fifo"},
        "search": {"kind": "random", "seed": 0},
        "base": base,
    }
    data.update(fields)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def assert_one_state_per_trial(exp_dir: Path) -> None:
    """Disk retention: at most one Tune checkpoint per trial, and no checkpoint file anywhere
    else under the experiment (no staged, queued or trainer-side copies left)."""
    for trial_dir in exp_dir.glob("trial_*"):
        assert len(list(trial_dir.glob("checkpoint_*"))) <= 1, trial_dir
    stray = [p for p in exp_dir.rglob("*.pt") if not p.parent.name.startswith("checkpoint_")]
    assert not stray, stray


def children(store: str, name: str) -> list:
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(name)
    return client.search_runs(
        [experiment.experiment_id], filter_string="tags.`fetalgan.role` = 'trial'"
    )


def test_optuna_asha_sweep_tracked_best_and_generate(tmp_path, ray_instance, monkeypatch, capsys):
    """Optuna samples the learning rates, ASHA stops at least one trial, every trial is a child
    run, `fetalgan best` agrees with a direct MLflow query and `generate --best` writes images;
    with ``rank_by: best`` Optuna is told each trial's best value, not its last."""
    store = f"sqlite:///{tmp_path}/mlruns.db"
    path = write_sweep(
        tmp_path,
        "asha",
        tiny_base(tmp_path),
        num_samples=4,
        max_concurrent=1,
        rank_by="best",
        scheduler={"kind": "asha", "max_t": 3, "grace_period": 1, "reduction_factor": 2},
        search={"kind": "optuna", "seed": 0},
        space={"lr_g": {"loguniform": [1e-4, 1e-2]}, "lr_d": {"loguniform": [1e-4, 1e-2]}},
    )
    summary = run_sweep(path, storage=tmp_path / "rr", tracking_uri=store)
    printed = capsys.readouterr().out
    assert not summary["interrupted"]
    assert summary["num_trials"] == 4 and summary["num_errors"] == 0

    runs = children(store, "asha")
    assert len(runs) == 4
    assert all(r.info.status == "FINISHED" for r in runs)
    lrs = {float(r.data.params["lr_g"]) for r in runs}
    assert len(lrs) == 4 and all(1e-4 <= lr <= 1e-2 for lr in lrs)  # sampled, in range
    stopped = [r for r in runs if r.data.tags["fetalgan.stopped_early"] == "true"]
    assert stopped, "ASHA stopped no trial"
    assert summary["num_stopped_early"] == len(stopped)
    # fetalgan's progress lines: a line per stop and per finish, the trial table at the end
    assert printed.count("stopped by ASHA at epoch") == len(stopped), printed
    assert printed.count("finished 3 epochs") == 4 - len(stopped), printed
    assert "fetalgan sweep asha, " in printed and "trial     status" in printed
    final = printed[printed.rindex("fetalgan sweep asha, ") :].splitlines()
    # the table's trial rows ("  81ab4612  finished  3/3 ..."), not a run URI holding "/3"
    rows = [line for line in final if re.match(r"  [0-9a-f]{8}  \w+ +\d+/3 ", line)]
    assert len(rows) == 4, final
    client = MlflowClient(store)
    for run in runs:  # every evaluation logged once, at step = epoch
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "lbpv_l1")]
        assert steps == list(range(1, len(steps) + 1))
        assert (len(steps) < 3) == (run in stopped)
        names = {f.path for f in client.list_artifacts(run.info.run_id, "checkpoint")}
        assert {"checkpoint/last.pt", "checkpoint/best.pt"} <= names

    # `fetalgan best` against an independent query: the lowest lbpv_l1 anywhere in the
    # children's histories (best over the history, not the last value).
    lowest = min(
        (m.value, r.info.run_id)
        for r in runs
        for m in client.get_metric_history(r.info.run_id, "lbpv_l1")
    )
    capsys.readouterr()
    assert main(["best", "asha", "--json", "--tracking-uri", store]) == 0
    best = json.loads(capsys.readouterr().out)
    assert (best["value"], best["run_id"]) == lowest
    assert best["run_id"] == summary["best"]["run_id"]
    assert summary["best"]["lbpv_l1"] == best["value"]
    expected = client.get_run(best["run_id"])
    assert expected.data.metrics["best_lbpv_l1"] == best["value"]
    parent = client.get_run(expected.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["fetalgan.best_run_id"] == expected.info.run_id
    assert client.get_model_version_by_alias("asha", "best").run_id == expected.info.run_id
    # System metrics sampled in the trial, logged at the evaluation's step.
    cpu = client.get_metric_history(best["run_id"], "system/cpu_percent")
    assert cpu and all(m.value >= 0 for m in cpu)
    assert expected.data.metrics["system/rss_mib"] > 50  # torch alone is more than that
    # Sample grids as images with steps (the UI's slider), one per evaluation.
    from fetalgan.tracking import sample_grid_files

    steps = [m.step for m in client.get_metric_history(best["run_id"], "lbpv_l1")]
    assert sorted(sample_grid_files(best["run_id"], tracking_uri=store)) == steps

    # Disk: one full state per trial (Tune's latest checkpoint), nothing staged or copied
    # beside it; MLflow holds weights only (best and last).
    from fetalgan.checkpoint import is_full, load_checkpoint
    from fetalgan.files import human_bytes
    from fetalgan.tracking import download_checkpoint

    exp_dir = tmp_path / "rr" / "asha"
    for trial_dir in exp_dir.glob("trial_*"):
        kept = sorted(p.name for p in trial_dir.glob("checkpoint_*"))
        assert len(kept) == 1, (trial_dir, kept)
        assert {p.name for p in (trial_dir / kept[0]).rglob("*.pt")} <= {"checkpoint.pt", "best.pt"}
        assert not list(trial_dir.rglob("staging/*")) and not list(
            trial_dir.rglob("run/checkpoints/*")
        )
    # every .pt under the experiment is a Tune checkpoint's (no queued or pending copies left)
    assert all(p.parent.name.startswith("checkpoint_") for p in exp_dir.rglob("*.pt"))
    assert summary["disk"]["storage"]["bytes"] > 0 and summary["disk"]["artifacts"]["bytes"] > 0
    assert f"disk: {human_bytes(summary['disk']['storage']['bytes'])} in {exp_dir}" in printed
    for run in runs:
        for name in ("best.pt", "last.pt"):
            file = download_checkpoint(
                f"runs:/{run.info.run_id}/checkpoint/{name}",
                tmp_path / "w" / run.info.run_id,
                tracking_uri=store,
            )
            assert not is_full(load_checkpoint(file)), (run.info.run_id, name)

    # rank_by: best: what Optuna was told of each trial is its best value over its history
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    searcher = ConcurrencyLimiter(OptunaSearch(), max_concurrent=1)
    searcher.restore_from_dir(str(exp_dir))
    told = sorted(t.value for t in searcher.searcher._ot_study.trials)
    histories = [client.get_metric_history(r.info.run_id, "lbpv_l1") for r in runs]
    assert told == pytest.approx(sorted(min(m.value for m in h) for h in histories))

    # best.pt is the evaluation that reached the best value.
    served = load_checkpoint(
        download_checkpoint(best["run_id"], tmp_path / "served", tracking_uri=store)
    )
    history = client.get_metric_history(best["run_id"], "lbpv_l1")
    assert served["epoch"] == min(history, key=lambda m: (m.value, m.step)).step

    monkeypatch.setenv("FETALGAN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "synth"
    assert (
        main(["generate", "--best", "asha", "-n", "5", "--out", str(out), "--tracking-uri", store])
        == 0
    )
    assert len(list(out.glob("img_*.png"))) == 5
    # The registered model loads in a fresh process and gives the same images for the seed.
    script = (
        "import sys, mlflow, numpy as np;"
        "m = mlflow.pyfunc.load_model('models:/asha@best');"
        "np.save(sys.argv[1], m.predict({'n': 5, 'seed': 0}))"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "pyfunc.npy")], env=env, check=True
    )
    from fetalgan.images import read_grey

    pyfunc = np.load(tmp_path / "pyfunc.npy")
    generated = np.stack([read_grey(p) for p in sorted(out.glob("img_*.png"))])
    assert pyfunc.dtype == np.uint8 and pyfunc.shape == (5, 32, 32)
    np.testing.assert_array_equal(pyfunc, generated)


def test_grid_combines_with_sampled_values(tmp_path, ray_instance, capsys):
    """grid (and, with search.kind grid, choice) expands to every combination; a sampled key
    is drawn for each of them."""
    path = write_sweep(
        tmp_path,
        "grid",
        tiny_base(tmp_path, epochs=1),
        max_concurrent=2,
        search={"kind": "grid", "seed": 0},
        space={
            "data.size": {"grid": [16, 24]},
            "betas": {"choice": [[0.5, 0.999], [0.9, 0.999]]},
            "lr_g": {"loguniform": [1e-4, 1e-3]},
        },
    )
    summary = run_sweep(
        path,
        storage=tmp_path / "rr",
        overrides=["max_concurrent=auto"],
        options=RunOptions(tracking=False),
    )
    assert summary["num_trials"] == 4 and summary["num_errors"] == 0
    assert "4 trial(s), 4 at a time (max_concurrent auto)" in capsys.readouterr().out  # 4 CPUs
    trials = []
    for params in (tmp_path / "rr" / "grid").glob("trial_*/params.json"):
        trials.append(json.loads(params.read_text()))
    combos = {(t["data.size"], t["betas"]) for t in trials}
    assert combos == {(s, b) for s in (16, 24) for b in ("[0.5, 0.999]", "[0.9, 0.999]")}
    assert all(1e-4 <= t["lr_g"] <= 1e-3 for t in trials)
    assert len({t["lr_g"] for t in trials}) == 4


@pytest.mark.slow
def test_crash_restarts_into_the_same_run_and_nan_fails_alone(tmp_path, ray_instance, capsys):
    """fail_at_epoch crashes a trial once: it resumes from its epoch-1 checkpoint into the same
    MLflow run. A trial whose loss turns non-finite fails (FAILED, error tag); the rest finish.
    The console says each in one line."""
    store = f"sqlite:///{tmp_path}/mlruns.db"
    path = write_sweep(
        tmp_path,
        "faults",
        tiny_base(tmp_path),
        max_concurrent=2,
        max_failures=1,
        search={"kind": "grid", "seed": 0},
        space={"fail_at_epoch": {"grid": [None, 2]}, "lr_d": {"grid": [2e-4, 1e30]}},
    )
    summary = run_sweep(path, storage=tmp_path / "rr", tracking_uri=store)
    runs = children(store, "faults")
    assert len(runs) == 4  # a restart never makes a second run
    by_case = {
        (param_value("fail_at_epoch", r.data.params["fail_at_epoch"]), r.data.params["lr_d"]): r
        for r in runs
    }
    crashed = by_case[(2, "0.0002")]
    assert crashed.info.status == "FINISHED"
    assert crashed.data.tags["fetalgan.restarts"] == "1"
    history = MlflowClient(store).get_metric_history(crashed.info.run_id, "lbpv_l1")
    assert sorted(m.step for m in history) == [1, 2, 3]  # epoch 1 kept, 2 and 3 after restart
    assert by_case[(None, "0.0002")].info.status == "FINISHED"
    for key in ((None, "1e+30"), (2, "1e+30")):
        failed = by_case[key]
        assert failed.info.status == "FAILED"
        assert "non-finite loss" in failed.data.tags["fetalgan.error"]
        # Not retried (max_failures 1 would allow one): it would diverge the same way again.
        assert failed.data.tags.get("fetalgan.restarts", "0") == "0", failed.data.tags
    seen = list((tmp_path / "rr" / "faults" / "nonfinite").glob("*.seen"))
    assert len(seen) == 2  # the driver took each diverged trial off the retry list
    assert summary["num_errors"] == 2
    assert_one_state_per_trial(tmp_path / "rr" / "faults")  # after a crash and a restart
    printed = capsys.readouterr()
    restarts = [line for line in printed.out.splitlines() if "crashed after epoch" in line]
    assert len(restarts) == 1 and "fail_at_epoch: simulated crash at epoch 2" in restarts[0]
    assert "restarting from its last checkpoint (restart 1 of at most 1)" in restarts[0]
    failures = [line for line in printed.out.splitlines() if " failed before its first " in line]
    assert len(failures) == 2 and all("FloatingPointError: non-finite loss" in f for f in failures)
    kept = [Path(f.split("; traceback in ")[1]) for f in failures]
    assert all(p.name == "error.txt" and p.is_file() for p in kept), failures  # in the storage
    assert all(p.is_relative_to(tmp_path / "rr" / "faults") for p in kept), failures


@pytest.mark.slow
def test_data_parallel_trial_on_two_cpu_workers(tmp_path, ray_instance):
    store = f"sqlite:///{tmp_path}/mlruns.db"
    path = write_sweep(
        tmp_path, "ddp", tiny_base(tmp_path, epochs=2), workers_per_trial=2, max_failures=0
    )
    summary = run_sweep(path, storage=tmp_path / "rr", tracking_uri=store)
    assert summary["num_errors"] == 0
    (run,) = children(store, "ddp")
    assert run.info.status == "FINISHED"
    client = MlflowClient(store)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss_g")] == [1, 2]
    assert run.data.tags["fetalgan.workers"] == "2"  # rank 0 reported a world of two DDP workers
    assert {"checkpoint/last.pt", "checkpoint/best.pt"} <= {
        f.path for f in client.list_artifacts(run.info.run_id, "checkpoint")
    }
    # The trial ran as a two-worker Ray Train run (named after the trial).
    (train_run,) = (tmp_path / "rr" / "ddp" / "ddp").iterdir()
    assert train_run.name.startswith("ddp_")


@pytest.mark.slow
def test_data_parallel_trial_with_an_uneven_split_finishes(tmp_path, ray_instance):
    """data.size 99 on 2 workers at batch 16: the ranks used to take 4 and 3 steps, one waited
    in DDP's gradient all-reduce while the other was in the loss all-reduce, and gloo aborted
    the trial (NCCL hangs). Equal shards: both take 3 steps per epoch and the trial finishes."""
    data = {**tiny_base(tmp_path)["data"], "size": 99, "phantom_n": 99}
    base = tiny_base(tmp_path, epochs=2, batch_size=16, data=data)
    path = write_sweep(tmp_path, "uneven", base, workers_per_trial=2, max_failures=0)
    summary = run_sweep(path, storage=tmp_path / "rr", options=RunOptions(tracking=False))
    assert summary["num_trials"] == 1 and summary["num_errors"] == 0


def test_sweep_asking_for_gpus_the_cluster_lacks_stops_before_fit(tmp_path, ray_instance, capsys):
    """resources.gpu 1 on a Ray cluster without GPUs used to wait forever at "0/0 GPUs"; now
    `fetalgan sweep` stops at once (exit 2) saying why, before any experiment is written."""
    store = f"sqlite:///{tmp_path}/mlruns.db"
    base = tiny_base(tmp_path, device="auto")
    path = write_sweep(tmp_path, "nogpu", base, resources={"cpu": 1, "gpu": 1})
    storage = tmp_path / "rr"
    argv = ["sweep", str(path), "--storage", str(storage), "--tracking-uri", store]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "fetalgan: error: resources.gpu: a trial asks for 1 GPU(s)" in err
    assert "the Ray cluster has 0" in err and "--gpus-per-node" in err
    assert not (storage / "nogpu").exists()


def sweep_command(path, tmp_path, store, *extra, env=None) -> subprocess.Popen:
    """`fetalgan sweep` in a subprocess (its own Ray); output goes to a log file (a pipe
    nobody reads while the test polls could fill up and stall the driver)."""
    env = {
        **os.environ,
        "FETALGAN_CACHE": str(tmp_path / "cache"),
        **(env or {}),
    }
    log = open(tmp_path / f"sweep-{time.monotonic_ns()}.log", "w+")
    command = [sys.executable, "-m", "fetalgan", "sweep", str(path)]
    command += ["--storage", str(tmp_path / "rr"), "--tracking-uri", store, *extra]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    process.log = log
    return process


def finish(process: subprocess.Popen, timeout: float) -> str:
    """Wait for a `sweep_command` and return its output."""
    process.wait(timeout=timeout)
    process.log.seek(0)
    output = process.log.read()
    process.log.close()
    return output


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    """SIGUSR1 to `fetalgan sweep` (what Slurm sends before the time limit) saves the
    experiment; `--resume` finishes it: the finished trial is not rerun, the interrupted one
    continues in its own MLflow run."""
    store = f"sqlite:///{tmp_path}/mlruns.db"
    path = write_sweep(
        tmp_path,
        "resume",
        # Enough images that an epoch takes a while: the signal must land inside a trial.
        tiny_base(
            tmp_path, epochs=6, data={**tiny_base(tmp_path)["data"], "size": 512, "phantom_n": 512}
        ),
        num_samples=3,
        max_concurrent=1,
        space={"lr_g": {"loguniform": [1e-4, 1e-3]}},
    )
    client = MlflowClient(store)
    client.search_experiments()  # create the store first: two processes must not both migrate it
    driver = sweep_command(path, tmp_path, store)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait: one trial finished, the next has reported
        time.sleep(1)
        if driver.poll() is not None:
            pytest.fail(f"sweep ended before the interruption:\n{finish(driver, 10)}")
        if client.get_experiment_by_name("resume") is None:
            continue
        runs = children(store, "resume")
        finished = [r for r in runs if r.info.status == "FINISHED"]
        running = [r for r in runs if r.info.status == "RUNNING" and r.data.metrics]
        if finished and running:
            break
    else:
        pytest.fail("the sweep did not get going in 300 s")
    finished_id = finished[0].info.run_id
    driver.send_signal(signal.SIGUSR1)
    output = finish(driver, 120)
    assert driver.returncode == 3, output  # interrupted, resumable
    assert "interrupted" in output

    runs = {r.info.run_id: r for r in children(store, "resume")}
    killed = [r for r in runs.values() if r.info.status == "KILLED"]
    assert len(killed) == 1
    parent_id = killed[0].data.tags["mlflow.parentRunId"]
    assert client.get_run(parent_id).info.status == "KILLED"
    finished_steps = [m.step for m in client.get_metric_history(finished_id, "lbpv_l1")]

    resumed = sweep_command(path, tmp_path, store, "--resume")
    output = finish(resumed, 400)
    assert resumed.returncode == 0, output
    runs = children(store, "resume")
    assert len(runs) == 3  # no duplicate for the interrupted trial
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent_id}
    assert client.get_run(parent_id).info.status == "FINISHED"
    # The finished trial was not rerun: its metric history is unchanged.
    assert [m.step for m in client.get_metric_history(finished_id, "lbpv_l1")] == finished_steps
    # The interrupted one went on to the last epoch, each epoch logged once.
    for run in runs:
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "lbpv_l1"))
        assert steps == [1, 2, 3, 4, 5, 6]
    assert_one_state_per_trial(tmp_path / "rr" / "resume")  # after an interruption and resume


@pytest.mark.slow
def test_smoke_sweep_on_kid_from_the_command_line(tmp_path):
    """sweeps/smoke.yaml as CI runs it (real FID/KID), with `--set metric=kid_mean` and an empty
    RAY_ADDRESS (= a local Ray): best.pt, `fetalgan best`, the parent's best and the registry
    all follow KID, not FID."""
    store = f"sqlite:///{tmp_path}/mlruns.db"
    driver = sweep_command(
        REPO / "sweeps" / "smoke.yaml",
        tmp_path,
        store,
        "--set",
        "metric=kid_mean",
        "--set",
        "num_samples=2",
        env={"RAY_ADDRESS": ""},
    )
    output = finish(driver, 400)
    assert driver.returncode == 0, output
    # smoke.yaml has a final selection (top_k 1): the summary names the selected trial, and
    # the selection and test scores are on the sweep's metric.
    assert "selected trial" in output and "mlflow ui --backend-store-uri" in output
    assert "selection kid_mean" in output and "test kid_mean" in output, output
    runs = children(store, "smoke")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    client = MlflowClient(store)
    for run in runs:
        assert run.data.metrics["fid"] > 0 and "kid_mean" in run.data.metrics
        assert run.data.metrics["n_fake"] == 32
    lowest = min(
        (m.value, r.info.run_id)
        for r in runs
        for m in client.get_metric_history(r.info.run_id, "kid_mean")
    )
    best = json.loads(
        subprocess.run(
            [sys.executable, "-m", "fetalgan", "best", "smoke", "--json", "--tracking-uri", store],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert best["metric"] == "kid_mean" and (best["value"], best["run_id"]) == lowest
    assert best["selection"]["metric"] == best["test"]["metric"] == "kid_mean"
    assert client.get_model_version_by_alias("smoke", "best").run_id == best["run_id"]


def test_gp_sampler_guides_a_real_tune_run(tmp_path, ray_instance):
    """``search.sampler: gp`` through Ray Tune's OptunaSearch, two trials at a time: after the
    random startup trials Optuna's Gaussian process proposes, every proposal is distinct
    (running trials are accounted for), and it homes in on the optimum of a smooth objective
    faster than the startup draws did."""
    import math

    from ray import tune

    from fetalgan.config import SearchConfig, SweepConfig
    from fetalgan.sweep.space import searcher

    def objective(config):
        tune.report({"fid": (math.log10(config["lr_g"]) + 3.0) ** 2})

    cfg = SweepConfig(
        metric="fid", num_samples=10, search=SearchConfig(seed=1, sampler="gp", startup_trials=4)
    )
    alg = searcher(cfg, max_concurrent=2)
    assert type(alg.searcher._sampler).__name__ == "GPSampler"
    results = tune.Tuner(
        objective,
        param_space={"lr_g": tune.loguniform(1e-5, 1e-1)},
        tune_config=tune.TuneConfig(
            metric="fid", mode="min", search_alg=alg, num_samples=cfg.num_samples
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "rr"), verbose=0),
    ).fit()
    assert len(results) == 10 and not results.errors
    study = alg.searcher._ot_study
    trials = sorted(study.trials, key=lambda t: t.number)
    values = [t.value for t in trials]
    assert len({t.params["lr_g"] for t in trials}) == 10
    assert min(values[4:]) < min(values[:4]) / 10, values
