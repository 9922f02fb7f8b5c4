"""The one image reader: images are read by their bit depth (16-bit grey scaled to 8 bits, not
clipped to white) in every loader, and files it cannot read safely are errors naming them."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fetalgan.cli import main
from fetalgan.config import DataConfig
from fetalgan.data.datasets import load_folder, load_training_images
from fetalgan.images import read_grey, write_png


def _ramp16(h: int = 32, w: int = 48) -> np.ndarray:
    """A full-range 16-bit ramp, 0 at the left to 65535 at the right."""
    return np.round(np.linspace(0, 65535, w))[None, :].repeat(h, 0).astype(np.uint16)


def _save16(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    assert Image.open(path).mode.startswith("I;16")  # what a scanner's 16-bit export reads as
    return path


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file whose header claims ``width`` x ``height`` 8-bit grey pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path, suffix):
    ramp = _ramp16()
    grey = read_grey(_save16(tmp_path / f"scan{suffix}", ramp))
    assert grey.dtype == np.uint8 and grey.shape == ramp.shape
    assert grey[0, 0] == 0 and grey[0, -1] == 255
    expected = np.round(ramp.astype(np.float64) * 255 / 65535)
    assert np.abs(grey.astype(int) - expected).max() == 0
    assert 120 < grey.mean() < 135  # a ramp's mean, not the 254.5 of clipping to white


def test_eight_bit_images_are_read_unchanged(tmp_path):
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    write_png(image, tmp_path / "grey.png")
    assert np.array_equal(read_grey(tmp_path / "grey.png"), image)
    Image.fromarray(np.stack([image] * 3, -1)).save(tmp_path / "rgb.png")
    assert np.array_equal(read_grey(tmp_path / "rgb.png"), image)  # grey RGB: same values


@pytest.mark.parametrize(
    ("array", "kind"),
    [
        (np.full((8, 8), 70000, np.int32), "32-bit integer"),
        (np.ones((8, 8), np.float32), "floating"),
    ],
)
def test_images_without_a_fixed_range_are_refused_by_name(tmp_path, array, kind):
    path = tmp_path / "odd.tif"
    Image.fromarray(array).save(path)
    with pytest.raises(ValueError, match=rf"^{path}: {kind}.*8- or 16-bit PNG"):
        read_grey(path)


@pytest.mark.parametrize("side", [20000, 10000])  # over twice PIL's limit, and just over it
def test_decompression_bombs_are_a_clear_error(tmp_path, side):
    path = _png_claiming(tmp_path / "bomb.png", side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(ValueError, match=rf"^{path}: image too large to decode safely"):
            read_grey(path)


def test_every_loader_reads_sixteen_bit_images_by_depth(tmp_path):
    folder = tmp_path / "scans"
    for i in range(3):
        _save16(folder / f"scan_{i}.png", _ramp16())
    evaluated = load_folder(folder)  # what `evaluate` and `study` read
    trained = load_training_images(  # what training reads (through the cache)
        DataConfig(kind="folder", root=str(folder), cache_dir=str(tmp_path / "cache")),
        32,
        seed=0,
        progress=False,
    )
    for images in (evaluated, trained.images):
        assert 110 < float(images.float().mean()) < 145, float(images.float().mean())


def test_study_create_reads_sixteen_bit_images_by_depth(tmp_path):
    import sqlite3

    from fetalgan.study.store import create_study

    real, fake = tmp_path / "real", tmp_path / "fake"
    for i in range(4):
        _save16(real / f"r{i}.png", _ramp16(32, 32))
        write_png(
            np.full((32, 32), 100, np.uint8), (fake.mkdir(exist_ok=True), fake)[1] / f"f{i}.png"
        )
    create_study(tmp_path / "study.db", real, [fake], n=4, seed=0)
    with sqlite3.connect(tmp_path / "study.db") as conn:
        rows = conn.execute("SELECT is_real, png FROM images").fetchall()
    import io

    means = [np.asarray(Image.open(io.BytesIO(png))).mean() for is_real, png in rows if is_real]
    assert means and all(110 < m < 145 for m in means), means


def test_a_bomb_in_an_evaluated_folder_is_a_one_line_error(tmp_path, capsys):
    real, fake = tmp_path / "real", tmp_path / "fake"
    real.mkdir()
    fake.mkdir()
    for i in range(2):
        write_png(np.full((16, 16), 90, np.uint8), real / f"r{i}.png")
        write_png(np.full((16, 16), 90, np.uint8), fake / f"f{i}.png")
    bomb = _png_claiming(fake / "f9.png", 20000, 20000)
    code = main(["evaluate", "--real", str(real), "--fake", str(fake), "--metrics", "psnr"])
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    errors = [line for line in lines if line.startswith("fetalgan: error:")]
    assert code == 2 and len(errors) == 1, lines  # one line, no traceback
    assert errors[0].startswith(f"fetalgan: error: {bomb}: image too large"), errors
    assert "Traceback" not in "\n".join(lines)
