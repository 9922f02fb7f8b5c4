"""The one device picker: what ``auto`` resolves to, and errors that name the problem."""

from __future__ import annotations

import pytest
import torch

from fetalgan.devices import pick_device


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
