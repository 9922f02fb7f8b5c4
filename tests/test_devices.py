"""The one device picker: what ``auto`` resolves to, and errors that name the problem."""

from __future__ import annotations

import pytest
import torch

from fetalgan.devices import cuda_problem, pick_device, trial_device


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    """torch believes in two CUDA devices; only ``torch.device`` objects are made, no kernels."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_is_cpu_without_cuda(no_cuda):
    assert pick_device() == torch.device("cpu")
    assert pick_device("auto") == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")


def test_auto_is_cuda_with_cuda(two_gpus):
    assert pick_device("auto") == torch.device("cuda")
    assert pick_device("cuda") == torch.device("cuda")
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_a_value_error(no_cuda, name):
    with pytest.raises(ValueError, match=rf"device: '{name}' requested but torch sees no CUDA"):
        pick_device(name)


def test_missing_gpu_index_is_a_value_error(two_gpus):
    with pytest.raises(ValueError, match=r"'cuda:2' requested but torch sees 2 CUDA device"):
        pick_device("cuda:2")


@pytest.mark.parametrize("name", ["gpu", "", "meta"])
def test_unknown_name_lists_the_choices(name):
    with pytest.raises(ValueError, match=r"device: .*expected auto, cpu, cuda or cuda:N"):
        pick_device(name)


# ---- a sweep trial's device: from its resources, not from what CUDA shows -----------------


@pytest.mark.parametrize("name", ["auto", "cpu"])
def test_zero_gpu_trial_is_on_cpu_even_where_cuda_is_visible(two_gpus, name):
    """Ray 2.60 leaves CUDA visible to zero-GPU tasks: resources.gpu 0 must still mean CPU."""
    assert trial_device(name, 0) == "cpu"


def test_gpu_trial_is_on_cuda(two_gpus):
    assert trial_device("auto", 1) == "cuda"
    assert trial_device("cuda", 0.25) == "cuda"


def test_gpu_trial_without_usable_cuda_fails_naming_the_driver_and_build(no_cuda, monkeypatch):
    """Not a silent fallback to the CPU: the message names the torch build's CUDA version, the
    driver it needs and CUDA's own reason."""
    monkeypatch.setattr(torch.version, "cuda", "13.0")

    def no_driver():
        raise RuntimeError("The NVIDIA driver on your system is too old (found version 12040).")

    monkeypatch.setattr(torch.cuda, "init", no_driver)
    with pytest.raises(RuntimeError) as info:
        trial_device("auto", 1)
    message = str(info.value)
    assert "resources.gpu is 1" in message and "built for CUDA 13.0" in message
    assert "driver >= 580" in message and "too old (found version 12040)" in message
    assert "nvidia-smi" in message and "make install CUDA=" in message


def test_cuda_problem_on_this_machine():
    """The real answer here: None where torch can use a GPU, else a reason naming the build."""
    problem = cuda_problem()
    if torch.cuda.is_available():
        assert problem is None
    else:
        assert problem.startswith(f"torch {torch.__version__} is ")


def test_device_contradicting_the_resources_is_a_value_error(two_gpus):
    with pytest.raises(ValueError, match=r"device: 'cuda' but the trial's resources\.gpu is 0"):
        trial_device("cuda", 0)
    with pytest.raises(ValueError, match=r"device: 'cpu' but resources\.gpu is 1"):
        trial_device("cpu", 1)
