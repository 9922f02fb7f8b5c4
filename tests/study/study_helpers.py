"""Helpers shared by the reader study tests: image folders (phantom scans as the real images,
noisy phantoms of another seed as the synthetic ones) and the form fields of a served page."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fetalgan.images import write_png


def write_image_dirs(
    root: Path, *, n_real: int = 12, n_fake: int = 12, size: int = 32
) -> tuple[Path, Path]:
    """``root/real`` (phantoms at 1.5 x size, not square: create must resize them) and
    ``root/fake`` (noisy phantoms at ``size``)."""
    from fetalgan.data.phantom import make_phantom

    real_dir, fake_dir = root / "real", root / "fake"
    real_dir.mkdir(parents=True)
    fake_dir.mkdir(parents=True)
    for i, image in enumerate(make_phantom(n_real, size * 3 // 2, 0)):
        write_png(np.ascontiguousarray(image[:, : size * 5 // 4]), real_dir / f"scan_{i:03d}.png")
    rng = np.random.default_rng(1)
    for i, image in enumerate(make_phantom(n_fake, size, 7)):
        noisy = np.clip(image.astype(int) + rng.integers(-40, 41, image.shape), 0, 255)
        write_png(noisy.astype(np.uint8), fake_dir / f"gen_{i:03d}.png")
    return real_dir, fake_dir


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no csrf_token field"
    return match.group(1)


def image_id_from(html: str) -> str:
    match = re.search(r'name="image_id" value="([^"]+)"', html)
    assert match, "page has no image_id field"
    return match.group(1)
