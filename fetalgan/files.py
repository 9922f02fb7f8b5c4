"""The one atomic file writer: checkpoints, the data cache and the real-statistics cache.

:func:`atomic_write` writes to a temporary file in the target's own folder (so the rename
stays on one file system), flushes it, calls ``os.fsync``, sets its mode, and moves it onto
the target with ``os.replace``. A reader sees the old file or the whole new one, never half a
file: a crashed trial cannot leave a truncated checkpoint, and trials filling the same cache
entry at once do not see each other's partial writes. On any failure, ``KeyboardInterrupt``
included, the temporary file is removed and the old file is left as it was.

File mode: every file is :data:`FILE_MODE` (``0o644``, owner read/write, everyone else
read), set with ``os.chmod`` so it does not depend on the umask (``mkstemp`` itself makes
``0o600``). One mode for all because checkpoints, decoded-image caches and statistics are
shared the same way: by a lab's sweep directories on a cluster and by MLflow artifacts,
which colleagues read. The decoded-image cache holds the real scans themselves, so a
per-file ``0o600`` on checkpoints alone would protect nothing; keep private data private
with the folder (a ``0o700`` run or cache root), which covers every file under it.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

FILE_MODE = 0o644  # see the module docstring: one mode for every file fetalgan writes atomically


def atomic_write(
    path: str | os.PathLike, write: Callable[[BinaryIO], None], *, mode: int = FILE_MODE
) -> Path:
    """Call ``write(f)`` on a binary temporary file and move it onto ``path`` once complete.

    Parent folders are created. The file gets ``mode`` whatever the umask. If ``write`` (or
    anything up to the rename) raises, the temporary file is removed, ``path`` keeps its old
    content, and the error propagates. Returns ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, mode: int = FILE_MODE) -> Path:
    """Write ``data`` to ``path`` with :func:`atomic_write`."""
    return atomic_write(path, lambda f: f.write(data), mode=mode)


def atomic_write_text(
    path: str | os.PathLike, text: str, *, encoding: str = "utf-8", mode: int = FILE_MODE
) -> Path:
    """Write ``text`` (encoded with ``encoding``) to ``path`` with :func:`atomic_write`."""
    return atomic_write_bytes(path, text.encode(encoding), mode=mode)


def disk_usage(path: str | os.PathLike) -> int:
    """Bytes of the files under ``path`` (a file counts itself; hard links once; symbolic
    links not followed); 0 when it does not exist."""
    root = Path(path)
    if not root.exists():
        return 0
    if root.is_file():
        return root.stat().st_size
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except FileNotFoundError:  # removed while walking
                continue
            if (st.st_dev, st.st_ino) in seen or not stat.S_ISREG(st.st_mode):
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def human_bytes(n: float) -> str:
    """``1.5 GB``, ``21.3 MB``, ``512 B`` (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
