"""slurm/ray_cluster.sh and mlflow/server.sh without a cluster: syntax, bad use gives a clear
message and a non-zero exit, and every environment variable they read is documented at their
top. (They run for real under Slurm in tests/e2e.)"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAY_CLUSTER = REPO / "slurm" / "ray_cluster.sh"
SERVER = REPO / "mlflow" / "server.sh"


def run(script: Path, *args: str, env: dict | None = None, cwd: Path | None = None):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    return subprocess.run(
        ["bash", str(script), *args],
        env={**clean, **(env or {})},
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("script", [RAY_CLUSTER, SERVER])
def test_bash_syntax(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


@pytest.mark.parametrize("script", [RAY_CLUSTER, SERVER])
def test_every_environment_variable_read_is_documented(script):
    text = script.read_text()
    header = text[: text.index("set -euo pipefail")]
    body = text[len(header) :]
    lines = body.splitlines()

    def first(pattern: str) -> int | None:
        return next((i for i, line in enumerate(lines) if re.search(pattern, line)), None)

    read = set()  # read before (or where) the script first assigns it: it comes from outside
    for name in set(re.findall(r"\$\{?((?:FETALGAN|MLFLOW|RAY)_[A-Z_]+)", body)):
        used = first(rf"\$\{{?{name}\b")
        assigned = first(rf"(^|[\s;]){name}=")
        if assigned is None or used <= assigned:
            read.add(name)
    undocumented = sorted(v for v in read if v not in header)
    assert read and undocumented == [], f"{script.name} reads undocumented {undocumented}"


def test_sbatch_defaults():
    directives = re.findall(r"^#SBATCH (\S+)", RAY_CLUSTER.read_text(), flags=re.M)
    options = {d.split("=")[0] for d in directives}
    assert {
        "--job-name",
        "--ntasks-per-node",
        "--cpus-per-task",
        "--signal",
        "--requeue",
    } <= options
    assert "--output" in options
    assert "--signal=B:USR1@120" in directives  # B: the batch shell, which forwards it


def test_no_sweep_file():
    result = run(RAY_CLUSTER)
    assert result.returncode == 2
    assert "no sweep file" in result.stderr and "usage" in result.stderr


def test_missing_sweep_file(tmp_path):
    result = run(RAY_CLUSTER, "sweeps/does_not_exist.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "sweeps/does_not_exist.yaml' not found" in result.stderr


def test_not_under_slurm():
    result = run(RAY_CLUSTER, "sweeps/smoke.yaml")
    assert result.returncode == 2
    assert "not inside a Slurm batch job" in result.stderr and "sbatch" in result.stderr


def test_missing_image(tmp_path):
    env = {"SLURM_JOB_ID": "1", "SLURMD_NODENAME": "n1", "FETALGAN_IMAGE": str(tmp_path / "x.sif")}
    result = run(RAY_CLUSTER, "sweeps/smoke.yaml", env=env)
    assert result.returncode == 2 and "no such image file" in result.stderr


def test_invalid_sweep_file_fails_before_ray_starts(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nnum_sampels: 3\n")
    env = {"SLURM_JOB_ID": "1", "SLURMD_NODENAME": "n1", "FETALGAN_VENV": str(REPO / ".venv")}
    result = run(RAY_CLUSTER, str(bad), env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "num_sampels" in result.stderr
    assert "Ray head" not in result.stdout


def test_server_rejects_unknown_option():
    result = run(SERVER, "--hots", "0.0.0.0")
    assert result.returncode == 2 and "unknown option '--hots'" in result.stderr


def test_server_rejects_bad_port():
    result = run(SERVER, "--port", "http")
    assert result.returncode == 2 and "not a number" in result.stderr


def test_server_auth_needs_admin_password(tmp_path):
    env = {"MLFLOW_AUTH_ADMIN_PASSWORD": "", "FETALGAN_VENV": str(REPO / ".venv")}
    result = run(SERVER, "--auth", "--dir", str(tmp_path), env=env)
    assert result.returncode == 2 and "MLFLOW_AUTH_ADMIN_PASSWORD" in result.stderr


def test_server_help():
    result = run(SERVER, "--help")
    assert result.returncode == 0 and "--backend-store-uri" in result.stdout


def test_sweep_options_are_validated_with_the_sweep_file_before_ray_starts(tmp_path):
    """--set on sweep-file keys goes through the same loader as `fetalgan sweep` (a bad value
    stops the job before any Ray step)."""
    good = tmp_path / "good.yaml"
    good.write_text("name: good\n")
    env = {"SLURM_JOB_ID": "1", "SLURMD_NODENAME": "n1", "FETALGAN_VENV": str(REPO / ".venv")}
    result = run(RAY_CLUSTER, str(good), "--set", "max_concurrent=0", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "max_concurrent: must be > 0" in result.stderr
    assert "Ray head" not in result.stdout
