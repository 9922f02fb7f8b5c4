"""`mlflow/server.sh` as a cluster's tracking server: the smoke sweep, submitted with sbatch,
logs to it over HTTP (artefacts proxied into the server's artefact root); the best checkpoint
comes back through it; headless Chromium renders its runs table; basic auth guards it."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from harness.browser import CHROMEDRIVER, dump_dom, runs_table
from harness.jobs import (
    REPO,
    SCRIPT,
    SMOKE,
    VENV,
    artifacts_dir,
    job_env,
    need,
    ray_leftovers,
    sbatch_wait,
)
from harness.mlflow_server import MlflowServer, http

pytestmark = pytest.mark.e2e

SERVER = REPO / "mlflow" / "server.sh"


@pytest.fixture(scope="module")
def served_sweep(slurm_single, e2e_cache):
    """A running server.sh and the smoke sweep logged to it from a Slurm job."""
    workdir = Path(tempfile.mkdtemp(prefix="fg-srv-", dir="/tmp"))
    server = MlflowServer(
        SERVER, workdir / "mlflow_server", env={**os.environ, "FETALGAN_VENV": str(VENV)}
    )
    try:
        env = job_env(slurm_single, workdir, e2e_cache, MLFLOW_TRACKING_URI=server.url)
        job = sbatch_wait(
            slurm_single, workdir, ["--cpus-per-task=2", str(SCRIPT), str(SMOKE)], env
        )
        assert job.returncode == 0, job.describe()
        assert ray_leftovers(job.job_id) == []
        yield server, env, workdir
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _runs(server: MlflowServer) -> tuple[str, list[dict]]:
    status, body = http(
        f"{server.url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=smoke"
    )
    assert status == 200, body
    experiment_id = json.loads(body)["experiment"]["experiment_id"]
    status, body = http(
        f"{server.url}/api/2.0/mlflow/runs/search",
        {"experiment_ids": [experiment_id], "max_results": 100},
    )
    assert status == 200, body
    return experiment_id, json.loads(body)["runs"]


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def test_sweep_logs_to_server_over_http(served_sweep, fetalgan_bin):
    server, env, workdir = served_sweep
    _, runs = _runs(server)
    children = [r for r in runs if "mlflow.parentRunId" in _tags(r)]
    assert len(runs) == 3 and len(children) == 2, [r["info"]["run_name"] for r in runs]
    for run in children:
        assert run["info"]["status"] == "FINISHED"
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert math.isfinite(metrics["fid"])
        # the real sets as dataset inputs (the runs table's Datasets column), over HTTP
        inputs = run.get("inputs", {}).get("dataset_inputs", [])
        contexts = sorted(t["value"] for i in inputs for t in i.get("tags", []))
        assert contexts == ["evaluation", "training"], inputs
        assert {i["dataset"]["name"] for i in inputs} == {"phantom:seed0"}
        status, body = http(
            f"{server.url}/api/2.0/mlflow/artifacts/list?run_id={run['info']['run_id']}&path=checkpoint"
        )
        assert status == 200 and ".pt" in body, body
    # Nothing went to a local store; the artefacts sit in the server's artefact root.
    assert not (workdir / "mlruns.db").exists()
    assert list((server.state_dir / "mlartifacts").rglob("*.pt"))

    # The best checkpoint comes back through the server.
    out = workdir / "synth"
    result = subprocess.run(
        [str(fetalgan_bin), "generate", "--best", "smoke", "-n", "4", "--out", str(out)],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert len([p for p in out.glob("*.png") if p.name != "grid.png"]) == 4


def test_runs_table_renders_in_chromium(served_sweep):
    need(
        shutil.which("chromium") is not None, "chromium not installed: apt-get install -y chromium"
    )
    server, _, _ = served_sweep
    experiment_id, runs = _runs(server)
    names = [r["info"]["run_name"] for r in runs]
    url = (
        f"{server.url}/#/experiments/{experiment_id}/runs"
        "?orderByKey=metrics.%60fid%60&orderByAsc=true"
    )
    # What anyone can check without Selenium: the flat table lists every run, sorted by fid.
    dom = dump_dom(url)
    for name in names:
        assert name in dom, f"run {name!r} not rendered"
    assert "Sort: fid" in dom
    assert "phantom:seed0" in dom, "the Datasets column does not show the training set"

    # The fid column itself: shown through the Columns menu, its cells in ascending order.
    need(importlib.util.find_spec("selenium") is not None, "selenium missing: make install")
    need(Path(CHROMEDRIVER).exists(), "chromedriver missing: apt-get install -y chromium-driver")
    shot = artifacts_dir() / "mlflow-runs-table.png"
    shot.unlink(missing_ok=True)
    dom, cells = runs_table(
        url,
        wait_for_text=names[0],
        metrics=["fid", "kid_mean"],
        hide=["Dataset", "Source", "Models"],
        screenshot=shot,
    )
    (artifacts_dir() / "mlflow-runs-table.html").write_text(dom)
    for name in names:
        assert name in dom
    shown = [float(text) for text in cells["fid"] if text not in ("", "-")]
    logged = sorted(
        m["value"] for r in runs for m in r["data"].get("metrics", []) if m["key"] == "fid"
    )
    assert len(shown) == len(logged) == 2, (cells, logged)
    assert shown == sorted(shown), f"fid column not ascending: {shown}"
    assert all(math.isclose(a, b, rel_tol=1e-3) for a, b in zip(shown, logged, strict=True)), (
        shown,
        logged,
    )
    assert shot.exists() and shot.stat().st_size > 20_000, "screenshot missing or blank"


def test_basic_auth(tmp_path):
    env = {**os.environ, "FETALGAN_VENV": str(VENV)}
    env.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)
    refused = subprocess.run(
        ["bash", str(SERVER), "--auth", "--dir", str(tmp_path / "a")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "MLFLOW_AUTH_ADMIN_PASSWORD" in refused.stderr

    password = "e2e-" + os.urandom(8).hex()
    server = MlflowServer(
        SERVER, tmp_path / "b", "--auth", env={**env, "MLFLOW_AUTH_ADMIN_PASSWORD": password}
    )
    try:
        search = f"{server.url}/api/2.0/mlflow/experiments/search"
        assert http(search, {"max_results": 10})[0] == 401
        assert http(search, {"max_results": 10}, auth=("admin", "wrong-password"))[0] == 401
        status, body = http(search, {"max_results": 10}, auth=("admin", password))
        assert status == 200, body
        assert (tmp_path / "b" / "secret_key").stat().st_mode & 0o077 == 0
    finally:
        server.stop()


def test_all_interfaces_answers_this_hosts_names_only(tmp_path):
    """--host 0.0.0.0: compute nodes address the server by this machine's name or address;
    MLflow's DNS-rebinding guard must accept those and still refuse foreign Host headers."""
    import socket

    env = {**os.environ, "FETALGAN_VENV": str(VENV)}
    server = MlflowServer(SERVER, tmp_path / "s", "--host", "0.0.0.0", env=env)
    try:
        search = f"{server.url}/api/2.0/mlflow/experiments/search"
        own = socket.gethostname().split(".")[0]
        assert http(search, {"max_results": 1}, host=f"{own}:{server.port}")[0] == 200
        assert http(search, {"max_results": 1}, host=f"evil.example:{server.port}")[0] == 403
    finally:
        server.stop()
