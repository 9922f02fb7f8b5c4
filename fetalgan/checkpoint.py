"""The one checkpoint format: a single file with both networks, both optimisers, the epoch,
the full config, RNG states and free-form ``extra`` (e.g. an MLflow run id).

Written atomically (temp file in the same directory + ``os.replace``) so a crash mid-write
never leaves a truncated checkpoint; read with ``torch.load(weights_only=True)`` so a
checkpoint file cannot run code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or a directory holding ``checkpoint.pt``; error if neither."""
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
