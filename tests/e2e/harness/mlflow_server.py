"""Start ``mlflow/server.sh`` as a daemon and wait until ``GET /health`` answers ``OK``."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

from .procs import Daemon, wait_for
from .slurm import free_port


def http(
    url: str,
    payload: dict | None = None,
    *,
    auth: tuple[str, str] | None = None,
    host: str | None = None,
):
    """(status, body) of a GET (or a POST of ``payload`` as JSON); HTTP errors included.
    ``host`` overrides the Host header."""
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    if host:
        request.add_header("Host", host)
    if auth:
        request.add_header("Authorization", "Basic " + b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""


class MlflowServer:
    """A running ``mlflow/server.sh --port PORT --dir DIR [ARGS]``; ``url`` once healthy.
    ``port``: a given one (a server restarted where its clients expect it), else a free one."""

    def __init__(
        self,
        script: Path,
        state_dir: Path,
        *args: str,
        env: dict | None = None,
        port: int | None = None,
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_dir = state_dir
        argv = ["bash", str(script), "--port", str(self.port), "--dir", str(state_dir), *args]
        self.daemon = Daemon("mlflow server", argv, state_dir.parent / "mlflow-server.log", env)
        try:
            wait_for(
                lambda: http(f"{self.url}/health") == (200, "OK"),
                180,
                f"MLflow at {self.url}/health",
                daemons=[self.daemon],
            )
        except BaseException:
            self.daemon.stop()
            raise

    def stop(self) -> None:
        self.daemon.stop()
