"""Before a sweep is fitted, its per-trial (per-worker) resources are compared with the Ray
cluster's: a sweep no trial of which could ever start stops with a message instead of waiting
forever at "0/0 GPUs". (The same check against a real Ray instance: test_sweep.py.)"""

from __future__ import annotations

import pytest

from fetalgan.config import load_sweep
from fetalgan.sweep.space import check_resources


def sweep(tmp_path, resources: str, workers: int = 1):
    path = tmp_path / "s.yaml"
    path.write_text(
        f"name: s\nworkers_per_trial: {workers}\nresources: {resources}\n"
        "base: {resolution: 32, data: {size: 16}}\n"
    )
    return load_sweep(path)


def test_gpu_trials_on_a_cluster_without_gpus_are_refused(tmp_path):
    cfg = sweep(tmp_path, "{cpu: 1, gpu: 1}")
    with pytest.raises(ValueError) as info:
        check_resources(cfg, {"CPU": 8.0})
    message = str(info.value)
    assert message.startswith("resources.gpu: a trial asks for 1 GPU(s)")
    assert "the Ray cluster has 0" in message and "--gpus-per-node" in message


def test_data_parallel_needs_every_worker(tmp_path):
    cfg = sweep(tmp_path, "{cpu: 2, gpu: 1}", workers=4)
    with pytest.raises(ValueError, match=r"each of a trial's 4 data-parallel workers .* 4 a trial"):
        check_resources(cfg, {"CPU": 64.0, "GPU": 2.0})
    check_resources(cfg, {"CPU": 64.0, "GPU": 4.0})


def test_too_many_cpus_per_trial(tmp_path):
    cfg = sweep(tmp_path, "{cpu: 16}")
    with pytest.raises(ValueError, match=r"resources\.cpu: a trial asks for 16 CPU.*has 8"):
        check_resources(cfg, {"CPU": 8.0})


def test_one_trial_must_fit_on_one_node(tmp_path):
    """16 CPUs in all, but 8 per node: a 12-CPU trial never starts."""
    cfg = sweep(tmp_path, "{cpu: 12}")
    nodes = [{"CPU": 8.0}, {"CPU": 8.0}]
    with pytest.raises(ValueError, match=r"no node has that much \(nodes: 8 CPUs, 0 GPUs; 8 CPUs"):
        check_resources(cfg, {"CPU": 16.0}, nodes)
    check_resources(sweep(tmp_path, "{cpu: 8}"), {"CPU": 16.0}, nodes)


def test_what_fits_passes(tmp_path):
    check_resources(sweep(tmp_path, "{cpu: 1, gpu: 0.25}"), {"CPU": 4.0, "GPU": 1.0})
    check_resources(sweep(tmp_path, "{cpu: 1}"), {"CPU": 1.0, "GPU": 0.0}, [{"CPU": 1.0}])
