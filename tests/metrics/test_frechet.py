"""Fréchet distance and KID: closed forms, and agreement with pytorch-fid's sqrtm version."""

from __future__ import annotations

import numpy as np
import pytest
from pytorch_fid.fid_score import calculate_frechet_distance as pytorch_fid_frechet

from fetalgan.metrics import frechet
from fetalgan.metrics.frechet import (
    fid_from_features,
    fid_to_reference,
    frechet_distance,
    frechet_distance_to,
    frechet_reference,
    kid,
    mean_and_covariance,
    reference_from_features,
    trace_sqrt_product,
)


def correlated_features(
    n: int, d: int, *, seed: int, shift: float = 0.0, scale: float = 1.0
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((d, d)) / np.sqrt(d)
    return scale * rng.standard_normal((n, d)) @ mixing + shift


def random_spd(d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_identical_gaussians_are_at_distance_zero():
    mu, sigma = np.arange(16.0), random_spd(16, seed=0)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_identical_feature_sets_are_at_distance_zero_in_gram_form():
    feats = correlated_features(20, 64, seed=1)  # N < d: Gram form
    result = fid_from_features(feats, feats)
    assert result["fid"] == pytest.approx(0.0, abs=1e-9)
    assert result == {"fid": result["fid"], "n_real": 20, "n_fake": 20, "feature_dim": 64}


def test_shifted_mean_with_same_covariance_is_squared_mean_distance():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.standard_normal(32), rng.standard_normal(32)
    sigma = random_spd(32, seed=3)
    expected = float(np.sum((mu1 - mu2) ** 2))
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(expected, rel=1e-9)


def test_diagonal_covariances_closed_form():
    a, b = np.linspace(0.5, 3.0, 10), np.linspace(2.0, 0.1, 10)
    mu = np.zeros(10)
    expected = float(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert frechet_distance(mu, np.diag(a), mu, np.diag(b)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_pytorch_fid_on_random_spd_matrices(seed):
    d = 48
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = random_spd(d, seed + 10), random_spd(d, seed + 20)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        pytorch_fid_frechet(mu1, s1, mu2, s2), abs=1e-3
    )


@pytest.mark.parametrize(
    ("n_real", "n_fake", "d"),
    [
        (300, 200, 64),  # N > d: covariance form, both positive definite
        (30, 40, 64),  # N < d: Gram form; singular covariances
        (30, 300, 64),  # one singular, one positive definite
        (20, 25, 256),
    ],
)
def test_agrees_with_pytorch_fid_from_features(n_real, n_fake, d):
    real = correlated_features(n_real, d, seed=4)
    fake = correlated_features(n_fake, d, seed=5, shift=0.3, scale=1.2)
    (mu_r, s_r), (mu_f, s_f) = mean_and_covariance(real), mean_and_covariance(fake)
    reference = pytorch_fid_frechet(mu_r, s_r, mu_f, s_f)
    assert reference > 1.0  # the sets really differ
    assert fid_from_features(real, fake)["fid"] == pytest.approx(reference, abs=1e-3)
    # and the covariance route gives the same number, singular matrices included
    assert frechet_distance(mu_r, s_r, mu_f, s_f) == pytest.approx(reference, abs=1e-3)


@pytest.mark.parametrize(
    ("n_real", "n_fake", "d"),
    [
        (300, 200, 64),  # both covariances positive definite: Cholesky reference
        (300, 40, 64),  # fakes fewer than d: singular values of the projected fakes
        (200, 500, 96),
    ],
)
def test_cached_reference_agrees_with_pytorch_fid_to_1e6(n_real, n_fake, d):
    """The cached path against pytorch-fid's formula (scipy sqrtm), relative 1e-6."""
    real = correlated_features(n_real, d, seed=4)
    fake = correlated_features(n_fake, d, seed=5, shift=0.3, scale=1.2)
    (mu_r, s_r), (mu_f, s_f) = mean_and_covariance(real), mean_and_covariance(fake)
    expected = pytorch_fid_frechet(mu_r, s_r, mu_f, s_f)
    reference = frechet_reference(mu_r, s_r)
    assert frechet_distance_to(reference, mu_f, s_f) == pytest.approx(expected, rel=1e-6)
    from_features = reference_from_features(real)
    result = fid_to_reference(from_features, fake)
    assert result["fid"] == pytest.approx(expected, rel=1e-6)
    assert (result["n_real"], result["n_fake"], result["feature_dim"]) == (n_real, n_fake, d)


def dense_frechet(mu1, s1, mu2, s2) -> float:
    """The formula written out with eigendecompositions: tr sqrt(sqrt(S1) S2 sqrt(S1))."""
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root @ s2 @ root)
    diff = mu1 - mu2
    return float(
        diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum()
    )


@pytest.mark.parametrize(("n_real", "n_fake"), [(30, 40), (30, 300), (20, 10)])
def test_cached_reference_of_few_samples_matches_the_dense_formula(n_real, n_fake):
    """Fewer reference samples than dimensions (a singular covariance, where sqrtm is itself
    inaccurate): the Gram-form reference against the formula written out densely."""
    d = 64
    real = correlated_features(n_real, d, seed=6)
    fake = correlated_features(n_fake, d, seed=7, shift=0.2)
    (mu_r, s_r), (mu_f, s_f) = mean_and_covariance(real), mean_and_covariance(fake)
    expected = dense_frechet(mu_r, s_r, mu_f, s_f)
    reference = reference_from_features(real)
    assert reference.factor.shape == (d, n_real)  # no d x d matrix of the reference
    assert fid_to_reference(reference, fake)["fid"] == pytest.approx(expected, rel=1e-7)
    assert frechet_distance_to(reference, mu_f, s_f) == pytest.approx(expected, rel=1e-7)
    # a semi-definite covariance given as a matrix: the eigendecomposition-based factor
    semi = frechet_reference(mu_r, s_r)
    assert not semi.triangular and semi.factor.shape[1] <= n_real
    assert frechet_distance_to(semi, mu_f, s_f) == pytest.approx(expected, rel=1e-7)


def test_a_distance_to_a_cached_reference_factorises_nothing_of_it(monkeypatch):
    """Per evaluation: no Cholesky or eigendecomposition of the reference, and exactly one
    symmetric eigenvalue solve of size d (at full covariance)."""
    d = 48
    real = correlated_features(400, d, seed=8)
    fake = correlated_features(300, d, seed=9, shift=0.1)
    mu_f, s_f = mean_and_covariance(fake)
    reference = reference_from_features(real)
    expected = frechet_distance(*mean_and_covariance(real), mu_f, s_f)
    sizes = []
    solve = frechet._symmetric_eigvalsh

    def counted(m):
        sizes.append(m.shape)
        return solve(m)

    def refuse(*args, **kwargs):
        raise AssertionError("the reference was factorised again")

    monkeypatch.setattr(frechet, "_symmetric_eigvalsh", counted)
    monkeypatch.setattr(frechet, "_cholesky_or_none", refuse)
    monkeypatch.setattr(frechet.scipy.linalg, "eigh", refuse)
    for _ in range(3):  # one reference, several evaluations
        assert frechet_distance_to(reference, mu_f, s_f) == pytest.approx(expected, rel=1e-9)
    assert sizes == [(d, d)] * 3
    assert fid_to_reference(reference, fake)["fid"] == pytest.approx(expected, rel=1e-9)


def test_distance_to_a_reference_of_another_dimension_is_refused():
    reference = frechet_reference(np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="reference has d = 4"):
        frechet_distance_to(reference, np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="same d"):
        fid_to_reference(reference, np.zeros((5, 3)))


def test_trace_sqrt_product_is_symmetric_and_matches_eigenvalues():
    s1, s2 = random_spd(20, 6), random_spd(20, 7)
    expected = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    assert trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-10)
    assert trace_sqrt_product(s2, s1) == pytest.approx(expected, rel=1e-10)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="same d"):
        fid_from_features(np.zeros((5, 4)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="mu"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="non-finite"):
        fid_from_features(np.full((5, 4), np.nan), np.zeros((5, 4)))


def naive_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel, written out with loops over pairs."""
    d, m = x.shape[1], x.shape[0]

    def k(a, b):
        return (a @ b / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / (m * m)


def test_kid_with_whole_sets_equals_the_unbiased_mmd_written_out():
    real = correlated_features(12, 8, seed=8)
    fake = correlated_features(12, 8, seed=9, shift=0.5)
    result = kid(real, fake, n_subsets=3, subset_size=50)  # subset clipped to all 12
    assert result["kid_mean"] == pytest.approx(naive_mmd2(real, fake), rel=1e-10)
    assert result["kid_std"] == pytest.approx(0.0, abs=1e-12)  # every subset is the whole set
    assert (result["n_real"], result["n_fake"], result["feature_dim"]) == (12, 12, 8)


def test_kid_subsets_are_seeded_and_unbiased_for_one_distribution():
    pool = correlated_features(600, 16, seed=10)  # one distribution, split in three
    real, same, shifted = pool[:200], pool[200:400], pool[400:] + 0.5
    a = kid(real, same, n_subsets=20, subset_size=50, seed=3)
    b = kid(real, same, n_subsets=20, subset_size=50, seed=3)
    c = kid(real, same, n_subsets=20, subset_size=50, seed=4)
    assert a == b
    assert a["kid_mean"] != c["kid_mean"]
    assert a["kid_std"] > 0
    assert abs(a["kid_mean"]) < 3 * a["kid_std"]  # unbiased: zero within its spread
    assert kid(real, shifted, n_subsets=20, subset_size=50)["kid_mean"] > 10 * a["kid_std"]


def test_kid_subset_means_match_a_loop_over_the_same_subsets():
    real = correlated_features(30, 6, seed=13)
    fake = correlated_features(25, 6, seed=14, shift=0.2)
    n_subsets, m, seed = 4, 10, 7
    rng = np.random.default_rng(seed)  # the draws kid() documents: argsort of uniforms per subset
    picks_real = np.argsort(rng.random((n_subsets, 30)), axis=1)[:, :m]
    picks_fake = np.argsort(rng.random((n_subsets, 25)), axis=1)[:, :m]
    expected = [naive_mmd2(real[r], fake[f]) for r, f in zip(picks_real, picks_fake, strict=True)]
    result = kid(real, fake, n_subsets=n_subsets, subset_size=m, seed=seed)
    assert result["kid_mean"] == pytest.approx(np.mean(expected), rel=1e-10)
    assert result["kid_std"] == pytest.approx(np.std(expected), rel=1e-8)
