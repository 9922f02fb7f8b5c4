"""`sbatch slurm/ray_cluster.sh SWEEP.yaml` on a real one-node Slurm: the sweep completes and
is tracked; an interrupted sweep resumes (resubmitted, or requeued by the job itself) without
rerunning finished trials; two jobs sharing the node each run their own Ray; no Ray process
outlives its job."""

from __future__ import annotations

import math
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from harness.jobs import (
    SCRIPT,
    SMOKE,
    VENV,
    artifact_paths,
    finish,
    job_env,
    mlflow_runs,
    ray_leftovers,
    sbatch_wait,
    submit,
)
from harness.procs import wait_for

pytestmark = pytest.mark.e2e

CPUS = "--cpus-per-task=2"  # this machine's two cores: both smoke trials at once


def test_smoke_sweep_under_sbatch(slurm_single, workdir, e2e_cache, fetalgan_bin):
    env = job_env(slurm_single, workdir, e2e_cache)
    job = sbatch_wait(slurm_single, workdir, [CPUS, str(SCRIPT), str(SMOKE)], env)
    assert job.returncode == 0, job.describe()
    assert "Ray cluster up: 1 nodes" in job.log, job.describe()
    # The Ray step ran with the job's CPUs (srun >= 22.05 does not take --cpus-per-task from
    # the job by itself) and says what the node offers; the job asked for no GPU.
    node = slurm_single.nodes[0]
    assert f"node {node} offers Ray 2 CPUs and 0 GPUs" in job.log, job.describe()
    assert "no GPUs (the job has none)" in job.log, job.describe()
    assert ray_leftovers(job.job_id) == [], "Ray processes outlived the job"

    tracking_uri = env["MLFLOW_TRACKING_URI"]
    client, parents, children = mlflow_runs(tracking_uri, "smoke")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2, [c.info.run_name for c in children]
    for child in children:
        assert child.info.status == "FINISHED", child.data.tags.get("fetalgan.error")
        assert math.isfinite(child.data.metrics["fid"])
        assert child.data.tags["slurm_job_id"] == job.job_id
        files = artifact_paths(client, child.info.run_id)
        assert any(f.startswith("checkpoint/") and f.endswith(".pt") for f in files), files
    assert parents[0].data.tags["fetalgan.best_run_id"] in {c.info.run_id for c in children}

    # The best checkpoint comes back out through MLflow and generates images.
    out = workdir / "synth"
    result = subprocess.run(
        [str(fetalgan_bin), "generate", "--best", "smoke", "-n", "8", "--out", str(out)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert len([p for p in out.glob("*.png") if p.name != "grid.png"]) == 8


def _three_sequential_trials(workdir: Path) -> Path:
    """The smoke sweep with three trials one at a time, so a signal can
    land after the first trial finished and before the last one started."""
    data = yaml.safe_load(SMOKE.read_text())
    data.update(name="resume", num_samples=3, max_concurrent=1)
    path = workdir / "resume.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _signal_after_first_trial(cluster, env, job_id: str) -> dict[str, float]:
    """Wait until one child run has FINISHED, then send USR1 to the batch script (as
    ``--signal=B:USR1@180`` does near the time limit). Returns {run_id: end_time}."""
    finished: dict[str, float] = {}

    def one_finished() -> bool:
        try:
            _, _, children = mlflow_runs(env["MLFLOW_TRACKING_URI"], "resume")
        except AssertionError:  # experiment not created yet
            return False
        finished.update(
            {c.info.run_id: c.info.end_time for c in children if c.info.status == "FINISHED"}
        )
        return bool(finished)

    wait_for(one_finished, 600, "the first trial to finish")
    cluster.run("scancel", "--batch", "--signal=USR1", job_id)
    return finished


def _check_resumed(env, finished_before: dict[str, float]) -> None:
    epochs = yaml.safe_load(SMOKE.read_text())["base"]["epochs"]  # one FID per epoch
    _, parents, children = mlflow_runs(env["MLFLOW_TRACKING_URI"], "resume")
    assert len(parents) == 1, "a resumed sweep continues its parent run"
    assert len(children) == 3, [c.info.run_name for c in children]
    assert all(c.info.status == "FINISHED" for c in children), [c.info.status for c in children]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    for run_id, end_time in finished_before.items():
        run = client.get_run(run_id)
        assert run.info.end_time == end_time, f"finished trial {run_id} was run again"
        steps = [m.step for m in client.get_metric_history(run_id, "fid")]
        assert sorted(steps) == list(range(1, epochs + 1)), (
            f"finished trial {run_id} logged again: {steps}"
        )


def test_interrupt_then_resubmit_resumes(slurm_single, workdir, e2e_cache):
    """USR1 mid-sweep with requeueing off: the job stops (exit 3, state saved); the same
    sbatch command again resumes the experiment and finishes it."""
    sweep = _three_sequential_trials(workdir)
    env = job_env(slurm_single, workdir, e2e_cache, FETALGAN_REQUEUE="0")
    t0 = time.monotonic()
    proc, job_id = submit(slurm_single, workdir, [CPUS, str(SCRIPT), str(sweep)], env)
    finished = _signal_after_first_trial(slurm_single, env, job_id)
    first = finish(proc, job_id, workdir, t0)
    assert first.returncode == 3, first.describe()
    assert "resubmit the same command to resume" in first.log, first.describe()
    assert ray_leftovers(job_id) == [], "Ray processes outlived the interrupted job"
    _, _, children = mlflow_runs(env["MLFLOW_TRACKING_URI"], "resume")
    assert any(c.info.status != "FINISHED" for c in children) or len(children) < 3, (
        "the signal came too late: every trial had finished"
    )

    second = sbatch_wait(slurm_single, workdir, [CPUS, str(SCRIPT), str(sweep)], env)
    assert second.returncode == 0, second.describe()
    assert "exists: resuming it" in second.log, second.describe()
    _check_resumed(env, finished)


def test_usr1_requeues_and_resumes(slurm_single, workdir, e2e_cache):
    """USR1 mid-sweep (what `--signal=B:USR1@180` sends before the time limit): the sweep
    saves, the job requeues itself, and the requeued run resumes and finishes; `sbatch
    --wait` returns 0 once, at the real end."""
    sweep = _three_sequential_trials(workdir)
    env = job_env(slurm_single, workdir, e2e_cache)
    t0 = time.monotonic()
    proc, job_id = submit(slurm_single, workdir, [CPUS, str(SCRIPT), str(sweep)], env)
    finished = _signal_after_first_trial(slurm_single, env, job_id)
    job = finish(proc, job_id, workdir, t0)
    assert job.returncode == 0, job.describe()
    assert f"requeueing job {job_id}" in job.log, job.describe()
    assert "exists: resuming it" in job.log, job.describe()
    assert ray_leftovers(job_id) == []
    _check_resumed(env, finished)
    # Disk after a requeue: one Tune checkpoint per trial, no other copy of a state.
    exp_dir = Path(env["FETALGAN_STORAGE"]) / "resume"
    for trial_dir in exp_dir.glob("trial_*"):
        assert len(list(trial_dir.glob("checkpoint_*"))) <= 1, trial_dir
    stray = [p for p in exp_dir.rglob("*.pt") if not p.parent.name.startswith("checkpoint_")]
    assert not stray, stray


def _ray_status(address: str, token: str, home: Path) -> subprocess.CompletedProcess:
    """`ray status --address=ADDRESS` with a job's token (and a HOME without ~/.ray)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM"))}
    env.update(HOME=str(home), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    return subprocess.run(
        ["timeout", "120", str(VENV / "bin" / "ray"), "status", f"--address={address}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )


def test_two_jobs_sharing_the_node_each_run_their_own_ray(slurm_single, workdir, e2e_cache):
    """Two one-CPU jobs submitted at once share the node (Slurm's CR_CPU allocates CPUs, not
    nodes). With Ray's fixed default ports the second head died within seconds (`Failed to
    start the grpc server. The specified port is 6379`); now each job takes its own block of
    ports, its Ray sees only its own node, and each sweep runs only its own trials."""
    jobs = []  # (work dir, env, sbatch --wait process, job id)
    t0 = time.monotonic()
    for name in ("a", "b"):
        job_dir = workdir / name
        job_dir.mkdir()
        env = job_env(slurm_single, job_dir, e2e_cache)  # its own storage and MLflow store
        args = ["--cpus-per-task=1", str(SCRIPT), str(SMOKE)]
        jobs.append((job_dir, env, *submit(slurm_single, job_dir, args, env)))
    logs = [job_dir / f"slurm-fetalgan-sweep-{job_id}.out" for job_dir, _, _, job_id in jobs]

    def text(log: Path) -> str:
        return log.read_text(errors="replace") if log.is_file() else ""

    def both_up_or_one_ended() -> bool:
        ended = any(proc.poll() is not None for _, _, proc, _ in jobs)
        return ended or all("Ray cluster up" in text(log) for log in logs)

    wait_for(both_up_or_one_ended, 600, "both jobs' Ray clusters")
    # While both run: each job's head answers with its own token and has one node, one CPU.
    probes = []
    for (job_dir, env, _, job_id), log in zip(jobs, logs, strict=True):
        match = re.search(r"Ray head on \S+ \(([\d.]+:\d+)\)", text(log))
        if match is None or "Ray cluster up" not in text(log):
            break
        tmp_root = Path(env.get("SLURM_TMPDIR") or env.get("TMPDIR") or "/tmp")
        # the newest: a job id reused by an earlier test cluster may have left its own behind
        # (a job SIGKILLed at the end of KillWait runs no clean-up)
        private = max(tmp_root.glob(f"fetalgan-{job_id}.*"), key=lambda p: p.stat().st_mtime)
        token = (private / "ray_token").read_text().strip()
        home = job_dir / "home"
        home.mkdir()
        probes.append((match.group(1), _ray_status(match.group(1), token, home)))
    both_running = all("sweep exited" not in text(log) for log in logs)
    finished = [finish(proc, job_id, job_dir, t0) for job_dir, _, proc, job_id in jobs]

    for job in finished:
        assert job.returncode == 0, job.describe()
        assert "Ray cluster up: 1 nodes" in job.log, job.describe()
        assert ray_leftovers(job.job_id) == [], f"Ray processes of job {job.job_id} outlived it"
    assert len(probes) == 2 and both_running, "the jobs did not run at the same time"
    (address_a, status_a), (address_b, status_b) = probes
    assert address_a != address_b
    for address, status in probes:
        assert status.returncode == 0, f"{address}: {status.stderr[-3000:]}"
        assert status.stdout.count(" node_") == 1, status.stdout  # not the other job's node
        assert re.search(r"/1\.0 CPU", status.stdout), status.stdout
    ranges = []
    for job in finished:  # the ports each job logged: disjoint blocks
        match = re.search(rf"job {job.job_id}, restart 0: Ray ports (\d+)-(\d+)", job.log)
        assert match, job.describe()
        ranges.append(range(int(match.group(1)), int(match.group(2)) + 1))
    assert not set(ranges[0]) & set(ranges[1]), ranges

    # Each sweep tracked its own two trials, all finished, in its own store.
    for job, (_, env, _, _) in zip(finished, jobs, strict=True):
        _, parents, children = mlflow_runs(env["MLFLOW_TRACKING_URI"], "smoke")
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert len(children) == 2, [c.info.run_name for c in children]
        for child in children:
            assert child.info.status == "FINISHED", child.data.tags.get("fetalgan.error")
            assert child.data.tags["slurm_job_id"] == job.job_id
            assert math.isfinite(child.data.metrics["fid"])
