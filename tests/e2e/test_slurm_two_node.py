"""`sbatch --nodes=2 slurm/ray_cluster.sh sweeps/smoke.yaml` on a real two-node Slurm (one
slurmd per network namespace): the Ray head starts on node1, a worker on node2, and the
trials' recorded addresses prove the sweep used both nodes."""

from __future__ import annotations

import math
import subprocess

import pytest
from harness.jobs import SCRIPT, SMOKE, job_env, mlflow_runs, ray_leftovers, sbatch_wait
from harness.netns import BRIDGE, NODES, PREFIX

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
    addresses = sorted(c.data.tags.get("worker_ip", "") for c in children)
    assert addresses == sorted(NODES.values()), addresses


def test_namespaces_removed_on_teardown(slurm_two_node):
    slurm_two_node.stop()  # what the fixture does at the end of the module (idempotent)
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(PREFIX + node in namespaces for node in NODES), namespaces
    bridge = subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, text=True)
    assert bridge.returncode != 0, f"bridge {BRIDGE} left behind"
    assert not any(d.alive() for d in slurm_two_node.daemons)
