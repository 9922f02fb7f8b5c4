"""Small reader studies for the tests: phantom scans as the real images, phantoms with added
noise (a different seed) as the synthetic ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from study_helpers import write_image_dirs


@pytest.fixture
def image_dirs(tmp_path: Path) -> tuple[Path, Path]:
    return write_image_dirs(tmp_path / "images")


@pytest.fixture
def study_file(tmp_path: Path, image_dirs) -> Path:
    from fetalgan.study.store import create_study

    real_dir, fake_dir = image_dirs
    path = tmp_path / "study.db"
    create_study(path, real_dir, [fake_dir], n=8, seed=3)
    return path
