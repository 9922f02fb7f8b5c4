"""Shared fixtures for the metric tests: the FID network loaded once, and small synthetic images."""

from __future__ import annotations

import numpy as np
import pytest


def make_blob_images(n: int, size: int = 32, *, seed: int = 0, noise: float = 20.0) -> np.ndarray:
    """``(n, 1, size, size) uint8``: one bright Gaussian blob per image on a noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(n):
        cx, cy = rng.uniform(0.3, 0.7, 2)
        radius = rng.uniform(0.15, 0.3)
        blob = 200 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / radius**2)
        image = 30 + blob + rng.normal(0, noise, (size, size))
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return np.stack(images)[:, None]


@pytest.fixture(scope="session")
def blob_images():
    """The :func:`make_blob_images` function."""
    return make_blob_images


@pytest.fixture(scope="session")
def fid_weights_path():
    from fetalgan.metrics.inception import find_fid_weights

    try:
        return find_fid_weights()
    except FileNotFoundError as err:
        pytest.skip(f"no FID weights on this machine: {err}")


@pytest.fixture(scope="session")
def fid_network(fid_weights_path):
    """``(model, weights_sha256)`` on the CPU, loaded once for the session."""
    from fetalgan.metrics.inception import load_fid_network

    return load_fid_network(fid_weights_path)
