"""PSNR, MI, SSIM against scikit-image called directly; the pairing; LBPv histograms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.feature import local_binary_pattern
from skimage.metrics import (
    normalized_mutual_information,
    peak_signal_noise_ratio,
    structural_similarity,
)

from fetalgan.metrics.image import (
    lbp_histogram,
    lbpv,
    lbpv_distance,
    mutual_information,
    pair_indices,
    paired_metrics,
    psnr,
    ssim,
)


@pytest.fixture(scope="module")
def sets(blob_images):
    real = blob_images(7, 24, seed=0)
    fake = blob_images(5, 24, seed=1, noise=35.0)
    return real, fake


def test_pairs_are_seeded_distinct_reals_per_fake():
    a = pair_indices(20, 6, pairs_per_fake=4, seed=1)
    assert a.shape == (6, 4)
    assert all(len(set(row)) == 4 for row in a)
    assert a.min() >= 0 and a.max() < 20
    np.testing.assert_array_equal(a, pair_indices(20, 6, pairs_per_fake=4, seed=1))
    assert not np.array_equal(a, pair_indices(20, 6, pairs_per_fake=4, seed=2))
    everything = pair_indices(5, 3, pairs_per_fake=None)
    np.testing.assert_array_equal(everything, np.tile(np.arange(5), (3, 1)))
    np.testing.assert_array_equal(pair_indices(5, 3, pairs_per_fake=10), everything)  # clipped
    with pytest.raises(ValueError, match="pairs_per_fake"):
        pair_indices(5, 3, pairs_per_fake=0)


def test_paired_metrics_equal_scikit_image_over_the_same_pairs(sets):
    real, fake = sets
    pairs = pair_indices(len(real), len(fake), pairs_per_fake=3, seed=5)
    expected = {"psnr": [], "mi": [], "ssim": []}
    for f, reals in enumerate(pairs):
        for r in reals:
            a, b = real[r, 0], fake[f, 0]
            expected["psnr"].append(peak_signal_noise_ratio(a, b, data_range=255))
            expected["mi"].append(normalized_mutual_information(a, b, bins=100))
            expected["ssim"].append(structural_similarity(a, b, data_range=255))
    got = paired_metrics(torch.from_numpy(real), fake[:, 0], pairs_per_fake=3, seed=5)
    assert got["n_pairs"] == 15
    for name, values in expected.items():
        assert got[name] == pytest.approx(np.mean(values), rel=1e-12)
        assert got[f"{name}_std"] == pytest.approx(np.std(values), rel=1e-9)
    # the single-metric wrappers give the same numbers
    assert psnr(real, fake, pairs_per_fake=3, seed=5)["psnr"] == got["psnr"]
    assert mutual_information(real, fake, pairs_per_fake=3, seed=5)["mi"] == got["mi"]
    assert ssim(real, fake, pairs_per_fake=3, seed=5)["ssim"] == got["ssim"]


def test_psnr_of_a_known_error_level():
    real = np.full((3, 1, 16, 16), 100, dtype=np.uint8)
    fake = real + np.uint8(5)  # every pixel off by 5 grey levels: MSE 25
    expected = 10 * np.log10(255**2 / 25)
    assert psnr(real, fake)["psnr"] == pytest.approx(expected, rel=1e-12)


def test_identical_sets_have_perfect_ssim_and_mi():
    image = np.random.default_rng(0).integers(0, 256, (1, 1, 16, 16), dtype=np.uint8)
    got = paired_metrics(image, image)
    assert got["ssim"] == pytest.approx(1.0)
    assert got["mi"] == pytest.approx(2.0)
    assert got["psnr"] == np.inf


def test_paired_metrics_reject_different_sizes_and_bad_input(sets):
    real, _ = sets
    with pytest.raises(ValueError, match="24x24.*16x16"):
        paired_metrics(real, np.zeros((2, 1, 16, 16), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        paired_metrics(real.astype(np.float32), real)
    with pytest.raises(ValueError, match="unknown"):
        paired_metrics(real, real, metrics=("fid",))


def test_lbp_histogram_has_256_bins_summing_to_one_and_counts_the_codes():
    image = np.random.default_rng(3).integers(0, 256, (20, 20), dtype=np.uint8)
    hist = lbp_histogram(image)
    assert hist.shape == (256,)
    assert hist.sum() == pytest.approx(1.0)
    codes = local_binary_pattern(image, P=8, R=1, method="default")
    assert hist[int(codes[5, 7])] >= 1 / 400
    assert hist[0] == pytest.approx(np.mean(codes == 0))


def test_lbpv_is_the_mean_of_the_per_image_histograms(sets):
    real, _ = sets
    vector = lbpv(real)
    assert vector.shape == (256,)
    assert vector.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(vector, np.mean([lbp_histogram(im[0]) for im in real], axis=0))
    # constant image: every neighbour >= centre (code 255) except on the 1-pixel border,
    # where scikit-image reads the outside as 0
    flat = np.full((2, 1, 8, 8), 50, np.uint8)
    assert lbpv(flat)[255] == pytest.approx(36 / 64)


def test_lbpv_distance_reports_norms_and_the_study_elements():
    real, fake = np.zeros(256), np.zeros(256)
    real[[8, 20]] = 0.5
    fake[[8, 143]] = [0.2, 0.8]
    got = lbpv_distance(real, fake)
    assert got == pytest.approx(
        {
            "lbpv_l1": 0.3 + 0.5 + 0.8,
            "lbpv_l2": np.sqrt(0.09 + 0.25 + 0.64),
            "lbpv_v8": 0.3,
            "lbpv_v20": 0.5,
            "lbpv_v143": 0.8,
            "lbpv_v240": 0.0,
        }
    )
    with pytest.raises(ValueError, match="256"):
        lbpv_distance(np.zeros(10), np.zeros(256))
