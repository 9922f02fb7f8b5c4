"""Helpers the Slurm e2e tests share: submit a job and wait, read its log, inspect the MLflow
store it wrote, find Ray processes it left behind, and decide skip-or-fail for prerequisites."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .procs import processes_mentioning
from .slurm import SlurmCluster

REPO = Path(__file__).resolve().parents[3]
VENV = REPO / ".venv"
SCRIPT = REPO / "slurm" / "ray_cluster.sh"
SMOKE = REPO / "sweeps" / "smoke.yaml"
APT = "apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge chromium iproute2"


def need(condition: bool, why: str) -> None:
    """Skip (locally) or fail (under CI) when a prerequisite is missing."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"e2e prerequisite missing under CI: {why}")
    pytest.skip(why)


def artifacts_dir() -> Path:
    """Where screenshots and logs worth keeping go: ``$CI_ARTIFACTS`` or tests/e2e/artifacts."""
    path = Path(os.environ.get("CI_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Job:
    job_id: str
    returncode: int  # sbatch --wait: the job's exit code
    log: str  # the job's output file (both submissions' output for a requeued job)
    seconds: float

    def describe(self) -> str:
        return f"job {self.job_id} exit {self.returncode} after {self.seconds:.0f} s; its log:\n{self.log[-6000:]}"


def job_env(cluster: SlurmCluster, workdir: Path, cache: Path, **extra: str) -> dict[str, str]:
    """The environment a user would submit with: the repo's venv, a per-test sqlite store and
    storage under ``workdir``, the shared e2e data cache; ``extra`` overrides any of them."""
    settings = {
        "FETALGAN_VENV": str(VENV),
        "FETALGAN_CACHE": str(cache),
        "FETALGAN_STORAGE": str(workdir / "ray_results"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlruns.db'}",
    }
    return cluster.env(**{**settings, **extra})


def submit(cluster: SlurmCluster, workdir: Path, args: list[str], env: dict[str, str]):
    """``sbatch --wait --parsable ARGS`` from ``workdir``, in the background; returns the
    Popen and the job id (read from sbatch's first output line)."""
    proc = subprocess.Popen(
        ["sbatch", "--wait", "--parsable", *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    job_id = proc.stdout.readline().strip().split(";")[0]
    if not job_id.isdigit():
        proc.wait(timeout=30)
        raise AssertionError(f"sbatch {' '.join(args)} failed: {job_id} {proc.stderr.read()}")
    return proc, job_id


def finish(
    proc: subprocess.Popen, job_id: str, workdir: Path, t0: float, timeout_s: float = 900
) -> Job:
    proc.wait(timeout=timeout_s)
    logs = sorted(workdir.glob(f"slurm-*-{job_id}.out"))
    log = "\n".join(p.read_text(errors="replace") for p in logs)
    (artifacts_dir() / f"{workdir.name}-job{job_id}.log").write_text(log)
    return Job(job_id, proc.returncode, log, time.monotonic() - t0)


def sbatch_wait(cluster: SlurmCluster, workdir: Path, args: list[str], env: dict[str, str]) -> Job:
    """Submit and wait for the job's end (``sbatch --wait``)."""
    t0 = time.monotonic()
    proc, job_id = submit(cluster, workdir, args, env)
    return finish(proc, job_id, workdir, t0)


def ray_leftovers(job_id: str) -> list[tuple[int, str]]:
    """Ray processes (raylet, gcs_server, workers) of a job still alive: their command lines
    name the job's temp dir /tmp/ray-JOBID.N."""
    return processes_mentioning(f"/tmp/ray-{job_id}.")


def mlflow_runs(tracking_uri: str, experiment: str) -> tuple[object, list, list]:
    """(parent run, child runs) of a sweep's experiment, read with MlflowClient."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} in {tracking_uri}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def artifact_paths(client, run_id: str, path: str = "") -> list[str]:
    """Every artefact file of a run, recursively."""
    out = []
    for item in client.list_artifacts(run_id, path or None):
        out.extend(artifact_paths(client, run_id, item.path) if item.is_dir else [item.path])
    return out
