"""A sweep that starts its own Ray protects it with a fresh token: a client on this machine
without it, or with another token, is refused; the sweep's own tasks run. (The Slurm job's
token is tested on a real two-node cluster in tests/e2e/test_slurm_two_node.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, os, subprocess, sys
import ray
from fetalgan.sweep.cluster import _ensure_ray

os.environ["RAY_AUTH_MODE"] = "disabled"  # what the caller had: not used for a local Ray
assert _ensure_ray()
own = ray.get(ray.remote(lambda: 41 + 1).remote())
token = os.environ["RAY_AUTH_TOKEN"]
gcs = ray.get_runtime_context().gcs_address
ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
outsider = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}

def status(**auth):
    done = subprocess.run([ray_cli, "status", f"--address={gcs}"], env={**outsider, **auth},
                          capture_output=True, text=True, timeout=180)
    return {"rc": done.returncode, "out": (done.stdout + done.stderr)[-2000:]}

result = {
    "own": own,
    "mode": os.environ["RAY_AUTH_MODE"],
    "token": token,
    "no_token": status(),
    "wrong_token": status(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64),
    "with_token": status(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token),
}
ray.shutdown()
print("RESULT " + json.dumps(result))
"""


def _probe(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), RAY_ADDRESS="")  # empty: a local Ray
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=600
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.slow
def test_local_ray_takes_only_clients_with_its_fresh_token(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    first = _probe(home)
    assert first["own"] == 42 and first["mode"] == "token"
    for refused in (first["no_token"], first["wrong_token"]):
        assert refused["rc"] != 0 and "InvalidAuthToken" in refused["out"], refused
    assert first["with_token"]["rc"] == 0, first["with_token"]
    assert not (home / ".ray" / "auth_token").exists()  # nothing left for later Rays to reuse
    assert _probe(home)["token"] != first["token"]  # fresh per sweep
