"""Fixtures for the end-to-end tests: real Slurm clusters, a work directory per test, the
installed ``fetalgan``, a shared data cache.

Everything is started by PID and stopped by PID; Slurm, munge, Chromium and network namespaces
come from Debian packages that ``.ci/run`` installs. Outside CI a missing program skips the
test with the install command; under CI (``CI`` set) it fails instead, so a broken CI image
cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from harness.jobs import APT, VENV, need
from harness.slurm import SlurmCluster, missing_programs, start_cluster


@pytest.fixture(scope="session")
def fetalgan_bin() -> Path:
    exe = VENV / "bin" / "fetalgan"
    need(exe.exists(), f"{exe} missing: run `make install`")
    return exe


@pytest.fixture(scope="session")
def e2e_cache() -> Path:
    """One decoded-data and real-statistics cache for every e2e test (FETALGAN_CACHE)."""
    path = Path(tempfile.mkdtemp(prefix="fg-cache-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _cluster(layout: str):
    missing = missing_programs()
    need(not missing, f"{', '.join(missing)} not installed: {APT}")
    need(os.geteuid() == 0, "the Slurm harness runs its daemons as root")
    if layout == "two_node":
        need(shutil.which("ip") and shutil.which("nsenter"), "ip/nsenter missing: install iproute2")
    cluster = start_cluster(layout)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="module")
def slurm_single() -> SlurmCluster:
    """A one-node Slurm (every CPU of this machine) for the module's tests."""
    yield from _cluster("single")


@pytest.fixture(scope="module")
def slurm_two_node() -> SlurmCluster:
    """A two-node Slurm, one node per network namespace (1 CPU each)."""
    yield from _cluster("two_node")


@pytest.fixture
def workdir() -> Path:
    """The directory a user would submit from (short path: Ray's sockets live under /tmp)."""
    path = Path(tempfile.mkdtemp(prefix="fg-work-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
