"""``FETALGAN_ARTIFACT_ROOT``: a sweep driver that shares a filesystem with ``mlflow/server.sh``
writes artefacts straight into the server's artefact root (no upload through the server), and
the server still serves them (the UI's path) and ``fetalgan best`` still finds them."""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

import pytest
from test_tracking import epoch_of, log_trial

from fetalgan.evaluation import Objective
from fetalgan.tracking import SweepTracker, artifact_location, best_run, download_checkpoint

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))


def test_the_root_must_be_an_absolute_writable_directory(tmp_path, monkeypatch):
    server = "http://127.0.0.1:5000"
    monkeypatch.delenv("FETALGAN_ARTIFACT_ROOT", raising=False)
    assert artifact_location(server, "exp") is None  # uploads through the server
    monkeypatch.setenv("FETALGAN_ARTIFACT_ROOT", str(tmp_path))
    assert artifact_location(server, "exp") == (tmp_path / "exp").as_uri()
    store = f"sqlite:///{tmp_path}/db/mlruns.db"  # the embedded store keeps its own place
    assert artifact_location(store, "exp") == (tmp_path / "db" / "mlartifacts").as_uri()
    for bad in ("relative/dir", str(tmp_path / "missing")):
        monkeypatch.setenv("FETALGAN_ARTIFACT_ROOT", bad)
        with pytest.raises(ValueError, match="FETALGAN_ARTIFACT_ROOT=.*server's --artifacts"):
            artifact_location(server, "exp")


@pytest.mark.slow
def test_a_driver_writes_into_the_servers_root_and_the_server_serves_it(tmp_path, monkeypatch):
    from harness.mlflow_server import MlflowServer

    venv = Path(sys.executable).parents[1]
    server = MlflowServer(
        REPO / "mlflow" / "server.sh",
        tmp_path / "server",
        env={**os.environ, "FETALGAN_VENV": str(venv)},
    )
    try:
        root = tmp_path / "server" / "mlartifacts"
        monkeypatch.setenv("FETALGAN_ARTIFACT_ROOT", str(root))
        tracker = SweepTracker("direct", tracking_uri=server.url, objective=Objective())
        tracker.start_parent()
        run_id = log_trial(tracker, tmp_path / "files", "t1", [40.0, 10.0, 30.0])
        # the files are where the driver wrote them, not uploaded through the server
        on_disk = root / "direct" / run_id / "artifacts" / "checkpoint" / "best.pt"
        assert epoch_of(on_disk) == 2
        # the server serves them (what the UI's artefact view fetches)
        url = f"{server.url}/get-artifact?path=checkpoint/best.pt&run_uuid={run_id}"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.read() == on_disk.read_bytes()
        # and a reader finds the best run's weights through the server
        best = best_run("direct", tracking_uri=server.url)
        assert best["run_id"] == run_id and best["value"] == 10.0
        fetched = download_checkpoint(
            best["checkpoint_uri"], tmp_path / "fetched", tracking_uri=server.url
        )
        assert fetched.read_bytes() == on_disk.read_bytes()
    finally:
        server.stop()
