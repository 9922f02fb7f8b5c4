"""Test-wide set-up: the helpers in this folder (``tiny``) import from every test folder."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray of two CPUs for one test module's real Tune runs (started once per module,
    shut down after it). RAY_AUTH_MODE disabled: see DESIGN.md, stale auth tokens."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
