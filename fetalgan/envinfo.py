"""Where and with what a sweep runs: git commit, package versions, host, Python, Slurm job and
container image. Plain data, no mlflow or ray import; tracking logs it with every run."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = ("fetalgan", "torch", "torchvision", "numpy", "ray", "mlflow", "optuna", "pytorch-fid")


def git_commit() -> str | None:
    """The commit of the fetalgan checkout this code runs from, None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def image_digest(image: str) -> str | None:
    """sha256 of a container image file (an Apptainer ``.sif``), or None if it is not a file."""
    path = Path(image)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.cache
def environment() -> dict[str, Any]:
    """Git commit, package versions, host, Python, Slurm job and container image. Computed once
    per process (the image digest reads the whole image)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    env = {
        "git_sha": git_commit(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_nodelist": os.environ.get("SLURM_JOB_NODELIST"),
        "container_image": os.environ.get("FETALGAN_IMAGE"),
    }
    if env["container_image"]:
        env["container_image_sha256"] = image_digest(env["container_image"])
    return env


def environment_tags(env: dict[str, Any]) -> dict[str, str]:
    """The environment as run tags (strings), the git commit also under MLflow's standard
    ``mlflow.source.git.commit``, the host as ``fetalgan.host``."""
    from fetalgan.tracking.names import GIT_COMMIT_TAG, HOST_TAG

    tags = {
        "git_sha": env.get("git_sha"),
        GIT_COMMIT_TAG: env.get("git_sha"),
        HOST_TAG: env.get("host"),
        "slurm_job_id": env.get("slurm_job_id"),
        "container_image": env.get("container_image"),
        "container_image_sha256": env.get("container_image_sha256"),
    }
    return {k: str(v) for k, v in tags.items() if v}
