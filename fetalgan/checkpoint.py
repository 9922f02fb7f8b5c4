"""The one checkpoint format: a single file with both networks, both optimisers, the epoch,
the full config, RNG states and free-form ``extra`` (e.g. an MLflow run id).

Written with :func:`fetalgan.files.atomic_write` (a crash mid-write never leaves a truncated
checkpoint; the file mode is ``fetalgan.files.FILE_MODE``); read with
``torch.load(weights_only=True)`` so a checkpoint file cannot run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fetalgan.files import atomic_write

FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"  # the file a checkpoint directory holds (see resolve)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save({"format": FORMAT_VERSION, **state}, f))


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or a directory holding :data:`CHECKPOINT_NAME`; error if neither."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    return path


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (weights only, no pickled code)."""
    import torch

    path = resolve(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt/foreign file
        raise ValueError(f"{path}: not a readable fetalgan checkpoint ({err})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a fetalgan checkpoint (format {FORMAT_VERSION} expected)")
    return state
