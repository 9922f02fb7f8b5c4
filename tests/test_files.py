"""The one atomic writer: a file appears whole or not at all, with one documented mode."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from fetalgan.files import FILE_MODE, atomic_write, atomic_write_bytes, atomic_write_text


@pytest.fixture(params=[0o077, 0o000, 0o022], ids=["umask077", "umask000", "umask022"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_mode_is_documented_one():
    assert FILE_MODE == 0o644
    import fetalgan.files

    assert "0o644" in fetalgan.files.__doc__


def test_writes_whole_file_creating_parents(tmp_path):
    path = tmp_path / "a" / "b" / "out.bin"
    assert atomic_write(path, lambda f: f.write(b"abc")) == path
    assert path.read_bytes() == b"abc"
    assert os.listdir(path.parent) == ["out.bin"]


def test_replaces_existing_content(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old")
    atomic_write_text(path, "nouveau é")
    assert path.read_text(encoding="utf-8") == "nouveau é"
    assert os.listdir(tmp_path) == ["out.txt"]


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failure_midway_keeps_old_content_and_no_temp_file(tmp_path, error):
    path = tmp_path / "out.bin"
    atomic_write_bytes(path, b"old content")

    def half_then_fail(f):
        f.write(b"half of the new")
        f.flush()
        raise error

    with pytest.raises(type(error)):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_failure_on_a_new_file_leaves_nothing(tmp_path):
    def fail(f):
        f.write(b"x")
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        atomic_write(tmp_path / "sub" / "new.bin", fail)
    assert os.listdir(tmp_path / "sub") == []


def test_mode_ignores_umask(tmp_path, umask):
    path = atomic_write_bytes(tmp_path / "out.bin", b"x")
    assert mode_of(path) == FILE_MODE
    assert mode_of(atomic_write_bytes(tmp_path / "private.bin", b"x", mode=0o600)) == 0o600


def _write_checkpoint(path):
    from fetalgan.checkpoint import save_checkpoint

    save_checkpoint(path, {"epoch": 1, "w": torch.zeros(2)})


def _write_data_cache(path):
    from fetalgan.data.cache import save_atomic

    save_atomic({"images": torch.zeros(1, 1, 2, 2, dtype=torch.uint8)}, path)


def _write_real_stats(path):
    from fetalgan.metrics.stats import RealStats, _save_stats

    d = 3
    stats = RealStats(
        features=np.zeros((2, d), np.float32),
        mu=np.zeros(d),
        sigma=np.eye(d),
        lbpv=np.full(256, 1 / 256),
        n=2,
        feature_dim=d,
        weights_sha256="0" * 64,
        images_sha256="1" * 64,
    )
    _save_stats(stats, path)


@pytest.mark.parametrize(
    "write", [_write_checkpoint, _write_data_cache, _write_real_stats], ids=lambda f: f.__name__
)
def test_every_fetalgan_file_gets_the_one_mode(tmp_path, umask, write):
    path = tmp_path / "deep" / "entry"
    write(path)
    assert path.is_file() and mode_of(path) == FILE_MODE
    assert os.listdir(path.parent) == ["entry"]  # no temp file beside it
