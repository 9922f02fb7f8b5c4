"""The tiny training config the tests share: 32 px phantoms, narrow networks, fp32 on the CPU
(seconds per epoch on 2 cores; the bit-exact tests need the CPU's determinism)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fetalgan.config import TrainConfig, with_overrides

TINY: dict[str, Any] = {
    "resolution": 32,
    "data.size": 24,
    "data.phantom_n": 32,
    "batch_size": 8,
    "ngf": 8,
    "ndf": 8,
    "nz": 16,
    "epochs": 2,
    "eval_every": 1,
    "eval_n": 16,
    "eval_metrics": [],
    "precision": "fp32",
    "device": "cpu",
}


def tiny_train_config(cache: Path, **overrides: Any) -> TrainConfig:
    """:data:`TINY` with its decoded-data cache under ``cache`` and dotted-key ``overrides``."""
    return with_overrides(TrainConfig(), TINY | {"data.cache_dir": str(cache)} | overrides)
