"""On-disk cache locations shared by the data loaders and the metric statistics."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(override: str | None = None) -> Path:
    """``override``, else ``$FETALGAN_CACHE``, else ``~/.cache/fetalgan``."""
    return Path(override or os.environ.get("FETALGAN_CACHE") or Path.home() / ".cache" / "fetalgan")
