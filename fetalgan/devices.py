"""The one device picker, for training, generation and evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


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
