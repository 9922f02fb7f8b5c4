"""`sbatch --nodes=2 slurm/ray_cluster.sh sweeps/smoke.yaml` on a real two-node Slurm (one
slurmd per network namespace): the Ray head starts on node1, a worker on node2, and the
trials' recorded addresses prove the sweep used both nodes. The job's Ray cluster takes only
clients holding its token: one on node2 without it (or with another) is refused while the
sweep runs on, unaffected."""

from __future__ import annotations

import math
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from harness.jobs import (
    SCRIPT,
    SMOKE,
    VENV,
    finish,
    job_env,
    mlflow_runs,
    ray_leftovers,
    sbatch_wait,
    submit,
)
from harness.netns import BRIDGE, NODES, PREFIX
from harness.procs import wait_for

pytestmark = pytest.mark.e2e


def test_sweep_spans_two_nodes(slurm_two_node, workdir, e2e_cache):
    env = job_env(slurm_two_node, workdir, e2e_cache)
    args = ["--nodes=2", "--cpus-per-task=1", str(SCRIPT), str(SMOKE)]
    job = sbatch_wait(slurm_two_node, workdir, args, env)
    assert job.returncode == 0, job.describe()
    assert "Ray head on node1 (10.77.0.1:" in job.log, job.describe()
    assert "Ray cluster up: 2 nodes (node1 node2)" in job.log, job.describe()
    assert ray_leftovers(job.job_id) == [], "Ray processes outlived the job"

    _, parents, children = mlflow_runs(env["MLFLOW_TRACKING_URI"], "smoke")
    assert len(parents) == 1 and len(children) == 2
    assert all(c.info.status == "FINISHED" for c in children)
    assert all(math.isfinite(c.data.metrics["fid"]) for c in children)
    # One CPU per node and one CPU per trial: each node ran one trial.
    addresses = sorted(c.data.tags.get("fetalgan.worker_ip", "") for c in children)
    assert addresses == sorted(NODES.values()), addresses


def _ray_status_from_node2(
    cluster, address: str, home: Path, **auth: str
) -> subprocess.CompletedProcess:
    """`ray status --address=ADDRESS` run on node2 by someone outside the job: none of the
    job's environment (and a HOME without ~/.ray/auth_token), only the Ray variables in
    ``auth``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM"))}
    env.update(PATH=f"{VENV / 'bin'}:{env['PATH']}", HOME=str(home), **auth)
    return subprocess.run(
        [
            *cluster.namespaces.enter("node2"),
            "timeout",
            "120",
            "ray",
            "status",
            f"--address={address}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )


def test_clients_without_the_job_token_are_refused(slurm_two_node, workdir, e2e_cache):
    env = job_env(slurm_two_node, workdir, e2e_cache)
    # Longer than the smoke sweep's two epochs, so the job is still running when probed.
    args = ["--nodes=2", "--cpus-per-task=1", str(SCRIPT), str(SMOKE), "--set", "epochs=6"]
    t0 = time.monotonic()
    proc, job_id = submit(slurm_two_node, workdir, args, env)
    log = workdir / f"slurm-fetalgan-sweep-{job_id}.out"

    def cluster_up() -> bool:
        return log.is_file() and "Ray cluster up" in log.read_text(errors="replace")

    wait_for(cluster_up, 300, "the job's Ray cluster")
    address = re.search(r"Ray head on node1 \(([\d.:]+)\)", log.read_text()).group(1)
    (private,) = Path("/tmp").glob(f"fetalgan-{job_id}.*")
    assert private.stat().st_mode & 0o777 == 0o700
    token_file = private / "ray_token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()

    home = workdir / "outsider"
    home.mkdir()
    no_token = _ray_status_from_node2(slurm_two_node, address, home)
    wrong_token = _ray_status_from_node2(
        slurm_two_node, address, home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64
    )
    with_token = _ray_status_from_node2(
        slurm_two_node, address, home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token
    )
    still_running = "sweep exited" not in log.read_text(errors="replace")
    job = finish(proc, job_id, workdir, t0)

    for refused in (no_token, wrong_token):
        output = refused.stdout + refused.stderr
        assert refused.returncode != 0 and "InvalidAuthToken" in output, output[-3000:]
    # The same command with the job's token reaches the same head and sees both nodes.
    assert with_token.returncode == 0, with_token.stderr[-3000:]
    assert with_token.stdout.count(" node_") == 2, with_token.stdout
    assert still_running, "the sweep had ended before the clients were probed"

    assert job.returncode == 0, job.describe()
    client, _, children = mlflow_runs(env["MLFLOW_TRACKING_URI"], "smoke")
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    for child in children:  # every epoch of both trials evaluated and logged
        steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "fid"))
        assert steps == [1, 2, 3, 4, 5, 6], steps
    assert token not in job.log
    assert not private.exists(), "the job's private directory outlived it"
    # This job's Ray temp dir (other harness clusters on this machine also number jobs from 1).
    ray_tmps = set(re.findall(rf"/tmp/ray-{job_id}\.\w{{10}}-[01]", job.log))
    assert len(ray_tmps) == 2, f"the job log names {ray_tmps}, not one Ray temp dir per node"
    assert not [p for p in ray_tmps if Path(p).exists()], "a node's Ray temp dir outlived the job"
    assert ray_leftovers(job_id) == []


def test_namespaces_removed_on_teardown(slurm_two_node):
    slurm_two_node.stop()  # what the fixture does at the end of the module (idempotent)
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(PREFIX + node in namespaces for node in NODES), namespaces
    bridge = subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, text=True)
    assert bridge.returncode != 0, f"bridge {BRIDGE} left behind"
    assert not any(d.alive() for d in slurm_two_node.daemons)
