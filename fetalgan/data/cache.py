"""On-disk caches shared by the data loaders and the metric statistics.

Layout: ``cache_root() / SECTION / f"{key}.pt"`` (``SECTION`` is ``data`` for decoded image
tensors, e.g. ``stats`` for real-image metric statistics). Files are written with
:func:`fetalgan.files.atomic_write`, so trials that fill the same entry at once never see half
a file, and read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from fetalgan.files import atomic_write

log = logging.getLogger(__name__)


def cache_root(override: str | None = None) -> Path:
    """``override``, else ``$FETALGAN_CACHE``, else ``~/.cache/fetalgan``."""
    return Path(override or os.environ.get("FETALGAN_CACHE") or Path.home() / ".cache" / "fetalgan")


def statistics_dir(cache_dir: str | None = None) -> Path:
    """Where the real-image statistics (:mod:`fetalgan.metrics.stats`) of a data cache are
    kept: ``cache_root(cache_dir)/stats``."""
    return cache_root(cache_dir) / "stats"


def stable_key(payload: Any, length: int = 20) -> str:
    """A hex id of a JSON-serialisable description (dict key order does not matter)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def cache_path(section: str, key: str, cache_dir: str | None = None) -> Path:
    """Where the entry ``key`` of ``section`` lives: ``cache_root(cache_dir)/section/key.pt``."""
    return cache_root(cache_dir) / section / f"{key}.pt"


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` a cache entry to ``path`` with :func:`fetalgan.files.atomic_write`."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def load_cached(path: str | Path) -> Any | None:
    """The object stored at ``path``, or ``None`` when absent or unreadable (then it is rebuilt)."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as err:
        log.warning("%s: unreadable cache entry, rebuilding it (%s)", path, err)
        return None
