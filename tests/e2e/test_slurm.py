"""`sbatch slurm/ray_cluster.sh SWEEP.yaml` on a real one-node Slurm: the sweep completes and
is tracked; an interrupted sweep resumes (resubmitted, or requeued by the job itself) without
rerunning finished trials; no Ray process outlives its job."""

from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from harness.jobs import (
    SCRIPT,
    SMOKE,
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
        assert child.info.status == "FINISHED", child.data.tags.get("error")
        assert math.isfinite(child.data.metrics["fid"])
        assert child.data.tags["slurm_job_id"] == job.job_id
        files = artifact_paths(client, child.info.run_id)
        assert any(f.startswith("checkpoint/") and f.endswith(".pt") for f in files), files
    assert parents[0].data.tags["best_run_id"] in {c.info.run_id for c in children}

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
    ``--signal=B:USR1@120`` does near the time limit). Returns {run_id: end_time}."""
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
    """USR1 mid-sweep (what `--signal=B:USR1@120` sends before the time limit): the sweep
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
