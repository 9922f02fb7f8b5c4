"""`mlflow/server.sh` on a real PostgreSQL (Debian's, started as a daemon for the module): a
sweep logs through it; then the server is stopped mid-sweep for longer than the client's retry
budget, the trials keep training, and after the restart every evaluation of every trial is in
MLflow, every run ended."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from harness.jobs import REPO, VENV, need
from harness.mlflow_server import MlflowServer, http
from harness.postgres import APT_POSTGRES, Postgres, postgres_bin

pytestmark = pytest.mark.e2e

SERVER = REPO / "mlflow" / "server.sh"
SMOKE = REPO / "sweeps" / "smoke.yaml"
# The client's retry budget, shrunk from MLflow's ~4 minutes to a few seconds: the outage
# below lasts many times longer than any single call may retry.
SHORT_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
OUTAGE_S = 45


@pytest.fixture(scope="module")
def postgres():
    need(postgres_bin() is not None, f"PostgreSQL not installed: {APT_POSTGRES}")
    need(shutil.which("runuser") is not None or os.geteuid() != 0, "runuser missing (util-linux)")
    database = Postgres()
    yield database
    database.stop()


@pytest.fixture
def served(postgres):
    """server.sh on the PostgreSQL database, in a fresh work directory."""
    workdir = Path(tempfile.mkdtemp(prefix="fg-pgw-", dir="/tmp"))
    env = {**os.environ, "FETALGAN_VENV": str(VENV)}
    server = None
    try:
        server = MlflowServer(
            SERVER, workdir / "mlflow_server", "--backend-store-uri", postgres.uri, env=env
        )
        yield server, workdir, env
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _sweep(workdir: Path, server: MlflowServer, cache: Path, *sets: str, env: dict):
    """`fetalgan sweep sweeps/smoke.yaml --set ...` logging to the server, in the background."""
    log = open(workdir / "sweep.log", "w+")  # noqa: SIM115 - closed by _finish
    command = [sys.executable, "-m", "fetalgan", "sweep", str(SMOKE), "--storage"]
    command += [str(workdir / "ray_results"), "--tracking-uri", server.url]
    for item in sets:
        command += ["--set", item]
    environment = {**env, "FETALGAN_CACHE": str(cache), "RAY_ADDRESS": "", **SHORT_RETRIES}
    process = subprocess.Popen(
        command, cwd=workdir, env=environment, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    process.log = log
    return process


def _finish(process, timeout: float) -> str:
    process.wait(timeout=timeout)
    process.log.seek(0)
    output = process.log.read()
    process.log.close()
    return output


def _api(server: MlflowServer, path: str, payload: dict | None = None) -> dict:
    status, body = http(f"{server.url}/api/2.0/mlflow/{path}", payload)
    assert status == 200, (path, status, body)
    return json.loads(body)


def _runs(server: MlflowServer, name: str) -> list[dict]:
    experiment = _api(server, f"experiments/get-by-name?experiment_name={name}")["experiment"]
    return _api(
        server,
        "runs/search",
        {"experiment_ids": [experiment["experiment_id"]], "max_results": 100},
    ).get("runs", [])


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _fid_steps(server: MlflowServer, run_id: str) -> list[int]:
    history = _api(server, f"metrics/get-history?run_id={run_id}&metric_key=fid")
    return sorted(m["step"] for m in history.get("metrics", []))


def _reported(exp_dir: Path) -> dict[str, list[int]]:
    """Tune's own record of what each trial reported: ``{trial id: [epoch, ...]}``."""
    out = {}
    for result in exp_dir.glob("trial_*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        out[result.parent.name.removeprefix("trial_")] = [
            int(r["epoch"]) for r in lines if "fid" in r
        ]
    return out


def test_sweep_logs_through_server_on_postgresql(served, postgres, e2e_cache):
    server, workdir, env = served
    process = _sweep(workdir, server, e2e_cache, "name=pg_smoke", env=env)
    output = _finish(process, 600)
    assert process.returncode == 0, output
    runs = _runs(server, "pg_smoke")
    trials = [r for r in runs if _tags(r).get("fetalgan.role") == "trial"]
    assert len(runs) == 3 and len(trials) == 2, [r["info"]["run_name"] for r in runs]
    for run in runs:
        assert run["info"]["status"] == "FINISHED", run["info"]
    for run in trials:
        assert _fid_steps(server, run["info"]["run_id"]) == [1, 2]
    # The runs are rows of the PostgreSQL database, not of a sqlite file beside the server.
    assert int(postgres.sql("SELECT count(*) FROM runs WHERE status = 'FINISHED'")) >= 3
    assert not (server.state_dir / "mlruns.db").exists()
    assert list((server.state_dir / "mlartifacts").rglob("best.pt"))


def test_outage_longer_than_the_retry_budget_loses_nothing(served, postgres, e2e_cache):
    server, workdir, env = served
    process = _sweep(workdir, server, e2e_cache, "name=pg_outage", "epochs=14", env=env)
    exp_dir = workdir / "ray_results" / "pg_outage"
    restarted = None
    try:
        deadline = time.monotonic() + 300
        while not any(_reported(exp_dir).values()):  # the first evaluation is out
            assert process.poll() is None, _finish(process, 10)
            assert time.monotonic() < deadline, "no trial reported an evaluation"
            time.sleep(0.5)
        server.stop()
        before = sum(len(epochs) for epochs in _reported(exp_dir).values())
        time.sleep(OUTAGE_S)
        during = sum(len(epochs) for epochs in _reported(exp_dir).values())
        # The trials trained on while nothing could reach MLflow, and the sweep did not abort.
        assert process.poll() is None or process.returncode == 0, _finish(process, 10)
        assert during > before, (before, during)
        restarted = MlflowServer(
            SERVER,
            server.state_dir,
            "--backend-store-uri",
            postgres.uri,
            env=env,
            port=server.port,
        )
        output = _finish(process, 600)
        assert process.returncode == 0, output
        assert "They stay on disk" not in output, output  # nothing left queued
        reported = _reported(exp_dir)
        assert len(reported) == 2 and all(len(epochs) == 14 for epochs in reported.values())
        runs = _runs(restarted, "pg_outage")
        assert all(run["info"]["status"] == "FINISHED" for run in runs), [
            (r["info"]["run_name"], r["info"]["status"]) for r in runs
        ]
        by_trial = {_tags(r).get("fetalgan.trial_id"): r for r in runs}
        for trial, epochs in reported.items():
            assert _fid_steps(restarted, by_trial[trial]["info"]["run_id"]) == sorted(epochs)
        parent = next(r for r in runs if _tags(r).get("fetalgan.role") == "sweep")
        assert _tags(parent).get("fetalgan.best_run_id") in {
            by_trial[trial]["info"]["run_id"] for trial in reported
        }
    finally:
        if process.poll() is None:
            process.kill()
        if not process.log.closed:
            process.log.close()
        if restarted is not None:
            restarted.stop()
