"""The one device picker, for training, generation and evaluation."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
# The oldest NVIDIA driver (Linux) each CUDA major version of a torch build runs on.
MIN_DRIVER = {"12": "525.60.13", "13": "580"}


def pick_device(name: str = "auto") -> torch.device:
    """The torch device for ``name``: ``auto`` (``cuda`` when torch sees one, else ``cpu``),
    ``cpu``, ``cuda`` or ``cuda:N``.

    Under an initialised ``torch.distributed`` group, ``cuda`` (and ``auto`` resolving to it)
    is this process's current CUDA device. ``ValueError`` for an unknown name, for ``cuda``
    asked for where torch sees no CUDA device, and for a ``cuda:N`` that does not exist; the
    message names the value and the choices.
    """
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: unknown value {name!r}; expected {DEVICE_CHOICES}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device: unsupported value {name!r}; expected {DEVICE_CHOICES}")
    if device.type == "cpu":
        return device
    if not torch.cuda.is_available():
        raise ValueError(
            f"device: {name!r} requested but torch sees no CUDA device; use cpu or auto"
        )
    if device.index is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.device("cuda", torch.cuda.current_device())
        return device
    count = torch.cuda.device_count()
    if device.index >= count:
        raise ValueError(
            f"device: {name!r} requested but torch sees {count} CUDA device(s) "
            f"(cuda:0..cuda:{count - 1})"
        )
    return device


def cuda_problem() -> str | None:
    """Why torch cannot use a GPU here, in words (None when it can): the torch build's CUDA
    version and the error CUDA's initialisation gives (no driver, a driver older than the
    build needs, no visible device)."""
    import torch

    if torch.cuda.is_available():
        return None
    built = torch.version.cuda
    if built is None:
        return f"torch {torch.__version__} is a CPU-only build"
    try:
        torch.cuda.init()
        reason = "torch.cuda.is_available() is False"
    except (RuntimeError, AssertionError) as err:
        reason = str(err).strip().splitlines()[0]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    shown = "unset" if visible is None else repr(visible)
    driver = MIN_DRIVER.get(built.split(".")[0])
    needs = f"driver >= {driver}" if driver else "a driver that supports it"
    older = (
        "" if built.startswith("12.") else " (for drivers >= 525.60.13: make install CUDA=cu126)"
    )
    return (
        f"torch {torch.__version__} is built for CUDA {built} and cannot use a GPU here: "
        f"{reason} (CUDA_VISIBLE_DEVICES {shown}). CUDA {built} needs an NVIDIA {needs}: "
        f"compare `nvidia-smi`, or install the torch build that matches the driver{older}; "
        "README, GPUs"
    )


def trial_device(name: str, gpus: float) -> str:
    """The device a sweep trial (or data-parallel worker) trains on, from its config's
    ``device`` and the GPUs Ray gave it (``resources.gpu``): with no GPU it is ``cpu`` even
    where CUDA is visible (Ray no longer hides GPUs from zero-GPU tasks); with one it is
    ``cuda``, and a trial that cannot use it fails at once (:func:`cuda_problem`) instead of
    training on the CPU. ``ValueError`` when ``device`` contradicts ``gpus``."""
    if gpus <= 0:
        if name not in ("auto", "cpu"):
            raise ValueError(
                f"device: {name!r} but the trial's resources.gpu is 0 (Ray gave it no GPU); "
                "use device auto or cpu, or resources.gpu > 0"
            )
        return "cpu"
    if name == "cpu":
        raise ValueError(
            f"device: 'cpu' but resources.gpu is {gpus:g}: the trial would hold a GPU it never "
            "uses; set resources.gpu: 0 or device auto"
        )
    problem = cuda_problem()
    if problem is not None:
        raise RuntimeError(f"resources.gpu is {gpus:g} but {problem}")
    return str(pick_device("cuda" if name == "auto" else name))
