"""The real-statistics cache and the metrics the trainer computes at each evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from fetalgan.metrics import inception
from fetalgan.metrics.stats import TrainingMetrics, real_statistics, stats_path


@pytest.fixture(scope="module")
def reals(blob_images):
    return torch.from_numpy(blob_images(12, 32, seed=0))


def test_real_statistics_are_cached_and_the_second_call_is_a_hit(
    reals, fid_weights_path, tmp_path, monkeypatch
):
    first = real_statistics(
        reals, key="blobs32", weights=str(fid_weights_path), stats_dir=tmp_path / "stats"
    )
    path = stats_path("blobs32", first.weights_sha256, 2048, tmp_path / "stats")
    assert path == tmp_path / "stats" / f"blobs32-{first.weights_sha256[:12]}-2048-fp32.npz"
    assert path.is_file()
    with np.load(path, allow_pickle=False) as f:  # plain arrays only
        assert f["features"].shape == (12, 2048)
    assert first.features.dtype == np.float32 and first.features.shape == (12, 2048)
    assert first.mu.shape == (2048,) and first.sigma.shape == (2048, 2048)
    assert first.lbpv.shape == (256,) and first.lbpv.sum() == pytest.approx(1.0)
    assert (first.n, first.feature_dim, first.weights_sha256) == (
        12,
        2048,
        inception.sha256_file(fid_weights_path),
    )
    np.testing.assert_allclose(
        first.mu, first.features.astype(np.float64).mean(axis=0), rtol=1e-6, atol=1e-7
    )

    def no_network(*args, **kwargs):
        raise AssertionError("the FID network was loaded on a cache hit")

    monkeypatch.setattr(inception, "load_fid_network", no_network)
    second = real_statistics(
        reals, key="blobs32", weights=str(fid_weights_path), stats_dir=tmp_path / "stats"
    )
    np.testing.assert_array_equal(second.features, first.features)
    np.testing.assert_array_equal(second.sigma, first.sigma)
    assert second.images_sha256 == first.images_sha256

    # the same key for other images is recomputed, not trusted
    with pytest.raises(AssertionError, match="cache hit"):
        real_statistics(
            reals[:6], key="blobs32", weights=str(fid_weights_path), stats_dir=tmp_path / "stats"
        )


def test_bad_key_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="key"):
        stats_path("a/b", "0" * 64, 2048, tmp_path)


@pytest.fixture(scope="module")
def training_metrics(reals, fid_weights_path, tmp_path_factory):
    return TrainingMetrics(
        reals,
        key="blobs32",
        metrics=["fid", "kid", "lbpv"],
        fid_weights=str(fid_weights_path),
        device="cpu",
        stats_dir=tmp_path_factory.mktemp("stats"),
        kid_subsets=10,
    )


def test_a_set_against_itself_scores_zero(training_metrics, reals):
    got = training_metrics(reals)
    assert set(got) == {
        "fid",
        "kid_mean",
        "kid_std",
        "lbpv_l1",
        "lbpv_l2",
        "lbpv_v8",
        "lbpv_v20",
        "lbpv_v143",
        "lbpv_v240",
        "n_real",
        "n_fake",
        "feature_dim",
    }
    assert got["fid"] == pytest.approx(0.0, abs=1e-3)
    assert got["lbpv_l1"] == 0.0
    assert (got["n_real"], got["n_fake"], got["feature_dim"]) == (12, 12, 2048)
    assert len(training_metrics.weights_sha256) == 64


def test_fid_rises_as_the_fakes_are_blurred_more(training_metrics, reals):
    images = reals.numpy()
    scores = []
    for sigma in (0.7, 1.5, 3.0):
        blurred = np.stack([gaussian_filter(im[0].astype(np.float64), sigma) for im in images])
        fakes = torch.from_numpy(np.clip(np.round(blurred), 0, 255).astype(np.uint8))[:, None]
        scores.append(training_metrics(fakes))
    fids = [s["fid"] for s in scores]
    assert 0.5 < fids[0] < fids[1] < fids[2], fids
    assert scores[2]["kid_mean"] > scores[0]["kid_mean"]
    assert scores[2]["lbpv_l1"] > 0


def test_lbpv_alone_needs_no_network(reals, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("loaded the FID network for LBPv alone")

    monkeypatch.setattr(inception, "load_fid_network", no_network)
    metrics = TrainingMetrics(reals, key="blobs32", metrics=["lbpv"])
    got = metrics(reals[:4])
    assert set(got) == {
        "lbpv_l1",
        "lbpv_l2",
        "lbpv_v8",
        "lbpv_v20",
        "lbpv_v143",
        "lbpv_v240",
        "n_real",
        "n_fake",
    }
    assert (got["n_real"], got["n_fake"]) == (12, 4)
    assert metrics.weights_sha256 is None


def test_unknown_training_metric_is_rejected(reals):
    with pytest.raises(ValueError, match="nmi.*'fid', 'kid', 'lbpv', 'mi', 'psnr', 'ssim'"):
        TrainingMetrics(reals, key="k", metrics=["nmi"])


def test_feature_precision_is_part_of_the_cache_key(reals, fid_weights_path, tmp_path):
    """bf16 features are other numbers: their own cache entry, never the fp32 one's."""
    fp32 = real_statistics(
        reals, key="blobs32", weights=str(fid_weights_path), stats_dir=tmp_path / "stats", dims=64
    )
    bf16 = real_statistics(
        reals,
        key="blobs32",
        weights=str(fid_weights_path),
        stats_dir=tmp_path / "stats",
        dims=64,
        precision="bf16",
    )
    sha = fp32.weights_sha256[:12]
    names = sorted(p.name for p in (tmp_path / "stats").iterdir())
    assert names == [f"blobs32-{sha}-64-bf16.npz", f"blobs32-{sha}-64-fp32.npz"]
    assert not np.array_equal(fp32.features, bf16.features)


def _stats_of(features: np.ndarray, images):
    from fetalgan.metrics import stats
    from fetalgan.metrics.frechet import mean_and_covariance

    mu, sigma = mean_and_covariance(features)
    return stats.RealStats(
        features=features.astype(np.float32),
        mu=mu,
        sigma=sigma,
        lbpv=np.full(256, 1 / 256),
        n=features.shape[0],
        feature_dim=features.shape[1],
        weights_sha256="0" * 64,
        images_sha256=stats.images_digest(images),
    )


def test_the_reference_frechet_factor_is_cached_with_the_statistics(reals, tmp_path):
    """N > d: the Cholesky factor is saved beside mu and sigma; an entry written without it
    gets it on its first read (and keeps it); the distances from it match pytorch-fid's."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    from fetalgan.metrics import stats
    from fetalgan.metrics.frechet import fid_to_reference, mean_and_covariance

    rng = np.random.default_rng(0)
    features = rng.standard_normal((40, 16)) @ rng.standard_normal((16, 16)) + 1.0
    path = stats.stats_path("k", "0" * 64, 16, tmp_path / "stats")
    old = _stats_of(features, reals)  # no frechet part: as an older cache entry
    stats._save_stats(old, path)
    with np.load(path) as f:
        assert "frechet_factor" not in f.files

    def no_network():
        raise AssertionError("the FID network was loaded on a cache hit")

    common = dict(key="k", weights_sha256="0" * 64, dims=16, stats_dir=tmp_path / "stats")
    common |= dict(get_model=no_network, batch_size=8, device="cpu", progress=False)
    loaded = stats._cached_real_statistics(reals, **common)
    assert loaded.frechet is not None and loaded.frechet.triangular
    with np.load(path) as f:
        np.testing.assert_array_equal(f["frechet_factor"], loaded.frechet.factor)
    again = stats._cached_real_statistics(reals, **common)
    np.testing.assert_array_equal(again.frechet.factor, loaded.frechet.factor)
    fake = rng.standard_normal((30, 16)) + 1.2
    expected = calculate_frechet_distance(
        *mean_and_covariance(features), *mean_and_covariance(fake)
    )
    assert fid_to_reference(again.frechet, fake)["fid"] == pytest.approx(expected, rel=1e-6)


def test_few_reference_images_keep_no_extra_factor(reals, tmp_path):
    """N <= d: the factor is the centred features themselves, rebuilt on read, not stored."""
    from fetalgan.metrics import stats

    features = np.random.default_rng(1).standard_normal((12, 64))
    entry = _stats_of(features, reals)
    entry.frechet = stats.frechet_part(entry)
    path = tmp_path / "entry.npz"
    stats._save_stats(entry, path)
    with np.load(path) as f:
        assert "frechet_factor" not in f.files
    loaded = stats._load_stats(path)
    assert loaded.frechet.factor.shape == (64, 12)
    np.testing.assert_allclose(loaded.frechet.factor, entry.frechet.factor, rtol=1e-6)
