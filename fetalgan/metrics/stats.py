"""Real-image statistics cached on disk, and the metrics the trainer computes at each evaluation.

The real set's Inception features (and their mean and covariance) and its rLBPv are computed
once per dataset, resolution, size, FID weights, feature dimension and feature precision and
kept in ``stats_dir/{key}-{weights_sha256[:12]}-{dims}-{precision}.npz`` (the caller says where:
the data cache's ``fetalgan.data.cache.statistics_dir``; none: not cached); a
sweep fills the entry once and every trial reads it. Features are extracted in IEEE fp32 (TF32
off, ``inception.exact_fp32``) on every device, so an entry computed on the driver's CPU serves
trials on GPUs; ``precision`` (``fp32`` or ``bf16``) is the one setting that changes them. The entry also records a sha256 of the image bytes, so a key
reused for different images is recomputed rather than trusted.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fetalgan.files import atomic_write
from fetalgan.metric_names import EVAL_METRICS as TRAINING_METRICS  # the one list of them

if TYPE_CHECKING:
    from fetalgan.metrics.frechet import FrechetReference

log = logging.getLogger(__name__)


@dataclass
class RealStats:
    """Statistics of a real image set for FID, KID and LBPv."""

    features: np.ndarray  # (N, d) float32 Inception features (KID and the Gram-form FID)
    mu: np.ndarray  # (d,) float64 feature mean
    sigma: np.ndarray  # (d, d) float64 feature covariance (ddof 1)
    lbpv: np.ndarray  # (256,) float64 rLBPv
    n: int  # number of images
    feature_dim: int  # d
    weights_sha256: str  # sha256 of the FID weights file the features came from
    images_sha256: str  # sha256 of the (N, 1, H, W) uint8 image bytes and their shape
    # The reference's part of the Fréchet distance (mean, trace, covariance factor), computed
    # once with the statistics: an evaluation then pays one eigenvalue solve at most
    frechet: FrechetReference | None = None


def frechet_part(stats: RealStats) -> FrechetReference:
    """The :class:`~fetalgan.metrics.frechet.FrechetReference` of ``stats``: from the features
    themselves when N <= d (the Gram form: nothing to factorise), else from mu and sigma."""
    from fetalgan.metrics.frechet import frechet_reference, reference_from_features

    if stats.n <= stats.feature_dim:
        return reference_from_features(stats.features)
    return frechet_reference(stats.mu, stats.sigma, n=stats.n)


def images_digest(images) -> str:
    """sha256 of a ``(N, 1, H, W)`` uint8 set: its shape and bytes."""
    arr = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    arr = np.ascontiguousarray(arr)
    digest = hashlib.sha256(repr((arr.shape, str(arr.dtype))).encode())
    digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


def stats_path(
    key: str,
    weights_sha256: str,
    dims: int,
    stats_dir: str | Path,
    precision: str = "fp32",
) -> Path:
    """``stats_dir/{key}-{weights_sha256[:12]}-{dims}-{precision}.npz``."""
    if not key or "/" in key or os.sep in key:
        raise ValueError(f"statistics key must be a non-empty file-name part, got {key!r}")
    name = f"{key}-{weights_sha256[:12]}-{dims}-{precision}.npz"
    return Path(stats_dir) / name


def _save_stats(stats: RealStats, path: Path) -> None:
    # The Fréchet factor is kept when it is not the features themselves (N > d: a d x d
    # Cholesky or eigendecomposition factor, the one cubic step of a distance to this set).
    factor = {}
    if stats.frechet is not None and stats.n > stats.feature_dim:
        factor = {
            "frechet_factor": stats.frechet.factor,
            "frechet_triangular": np.bool_(stats.frechet.triangular),
        }
    atomic_write(
        path,
        lambda f: np.savez(
            f,
            **factor,
            features=stats.features,
            mu=stats.mu,
            sigma=stats.sigma,
            lbpv=stats.lbpv,
            n=np.int64(stats.n),
            feature_dim=np.int64(stats.feature_dim),
            weights_sha256=np.str_(stats.weights_sha256),
            images_sha256=np.str_(stats.images_sha256),
        ),
    )


def _load_stats(path: Path) -> RealStats | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            stats = RealStats(
                features=f["features"],
                mu=f["mu"],
                sigma=f["sigma"],
                lbpv=f["lbpv"],
                n=int(f["n"]),
                feature_dim=int(f["feature_dim"]),
                weights_sha256=str(f["weights_sha256"]),
                images_sha256=str(f["images_sha256"]),
            )
            if stats.n <= stats.feature_dim:
                stats.frechet = frechet_part(stats)  # the centred features: no solve
            elif "frechet_factor" in f.files:
                from fetalgan.metrics.frechet import FrechetReference

                stats.frechet = FrechetReference(
                    mu=stats.mu,
                    trace=float(np.trace(stats.sigma)),
                    factor=f["frechet_factor"],
                    triangular=bool(f["frechet_triangular"]),
                    n=stats.n,
                )
            return stats
    except (OSError, ValueError, KeyError, EOFError) as err:
        log.warning("%s: unreadable statistics cache entry, recomputing it (%s)", path, err)
        return None


def compute_real_statistics(
    images,
    model,
    weights_sha256: str,
    *,
    batch_size: int = 50,
    device=None,
    progress: bool = False,
    images_sha256: str | None = None,
    precision: str = "fp32",
) -> RealStats:
    """RealStats of ``(N, 1, H, W)`` uint8 ``images`` with an already loaded FID network
    (features in ``precision``: ``fp32`` or ``bf16``, as ``extract_features``)."""
    from fetalgan.metrics.frechet import mean_and_covariance
    from fetalgan.metrics.image import lbpv
    from fetalgan.metrics.inception import extract_features

    features = extract_features(
        images,
        model,
        batch_size=batch_size,
        device=device,
        precision=precision,
        progress=progress,
        desc="real features",
    )
    if features.shape[0] < 2:
        raise ValueError(f"real statistics need at least 2 images, got {features.shape[0]}")
    mu, sigma = mean_and_covariance(features)
    stats = RealStats(
        features=features.astype(np.float32),
        mu=mu,
        sigma=sigma,
        lbpv=lbpv(images),
        n=features.shape[0],
        feature_dim=features.shape[1],
        weights_sha256=weights_sha256,
        images_sha256=images_sha256 or images_digest(images),
    )
    stats.frechet = frechet_part(stats)
    return stats


def _cached_real_statistics(
    images,
    *,
    key,
    weights_sha256,
    dims,
    stats_dir,
    get_model,
    batch_size,
    device,
    progress,
    precision="fp32",
) -> RealStats:
    path = stats_path(key, weights_sha256, dims, stats_dir, precision) if stats_dir else None
    digest = images_digest(images)
    stats = _load_stats(path) if path is not None else None
    if stats is not None:
        if (
            stats.images_sha256 == digest
            and stats.weights_sha256 == weights_sha256
            and stats.feature_dim == dims
        ):
            log.info("real statistics from cache %s", path)
            if stats.frechet is None:  # an entry written before the factor was kept
                stats.frechet = frechet_part(stats)
                _save_stats(stats, path)
            return stats
        log.warning("%s: cached statistics are for other images or weights; recomputing", path)
    stats = compute_real_statistics(
        images,
        get_model(),
        weights_sha256,
        batch_size=batch_size,
        device=device,
        progress=progress,
        images_sha256=digest,
        precision=precision,
    )
    if path is not None:
        _save_stats(stats, path)
    return stats


def real_statistics(
    images,
    *,
    key: str,
    weights: str | None = None,
    dims: int = 2048,
    stats_dir: str | Path | None = None,
    device="cpu",
    batch_size: int = 50,
    progress: bool = False,
    precision: str = "fp32",
) -> RealStats:
    """Statistics of the real ``(N, 1, H, W)`` uint8 ``images``, from the on-disk cache if there.

    ``key`` names the set (dataset, resolution, size: e.g. the data cache's key); the file is
    :func:`stats_path` (``precision``: of the features, ``fp32`` or ``bf16``). The FID network is
    only loaded on a cache miss. Call it once per sweep to warm the cache for all trials.
    """
    from fetalgan.metrics.inception import find_fid_weights, load_fid_network, sha256_file

    weights_path = find_fid_weights(weights)
    sha = sha256_file(weights_path)
    return _cached_real_statistics(
        images,
        key=key,
        weights_sha256=sha,
        dims=dims,
        stats_dir=stats_dir,
        get_model=lambda: load_fid_network(weights_path, dims=dims, device=device)[0],
        batch_size=batch_size,
        device=device,
        progress=progress,
        precision=precision,
    )


def reference_key(images) -> str:
    """The key of a reference set's content: the first 20 hex digits of
    :func:`images_digest` (the same images give the same key however they were selected)."""
    return images_digest(images)[:20]


# eval_metrics entry -> {value name in fetalgan.metrics.image.paired_metrics: logged name}
PAIRED_NAMES = {
    "mi": {"mi": "mi_normalised", "mi_bits": "mi_bits"},
    "psnr": {"psnr": "psnr"},
    "ssim": {"ssim": "ssim"},
}


class TrainingMetrics:
    """The trainer's metrics of fake images against a fixed real reference set.

    Loads the FID network once and the reference statistics from the cache (computing them on
    a miss; the cache key is :func:`reference_key`, a digest of the images). Calling it with
    ``(N, 1, H, W)`` uint8 fake images returns plain floats/ints for the requested
    ``metrics``: ``fid`` (``dims``-d features, against the reference's cached Fréchet part:
    see ``fid_to_reference``),
    ``kid_mean``, ``kid_std``; ``lbpv_l1``, ``lbpv_l2``, ``lbpv_v8``, ``lbpv_v20``,
    ``lbpv_v143``, ``lbpv_v240``; ``mi_normalised`` (scikit-image's normalised mutual
    information, 1..2) and ``mi_bits`` (raw mutual information in bits), ``psnr`` (dB) and
    ``ssim``, each the mean over ``pairs_per_fake`` seeded reference images per fake, exactly
    as ``fetalgan evaluate`` pairs them (:func:`fetalgan.metrics.image.paired_metrics`, with
    ``seed``); plus ``n_real``, ``n_fake`` and ``feature_dim``. ``weights_sha256`` names the
    FID weights used, ``reference_key`` and ``n_real`` the reference.
    """

    def __init__(
        self,
        real_images,
        *,
        key: str | None = None,
        metrics=TRAINING_METRICS,
        fid_weights: str | None = None,
        device="cpu",
        stats_dir: str | Path | None = None,
        dims: int = 2048,
        batch_size: int = 50,
        precision: str = "fp32",
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
        pairs_per_fake: int | None = 10,
    ):
        from fetalgan.metrics.image import as_grey_array
        from fetalgan.metrics.inception import find_fid_weights, load_fid_network

        self.metrics = tuple(metrics)
        unknown = [m for m in self.metrics if m not in TRAINING_METRICS]
        if unknown:
            raise ValueError(
                f"unknown training metric(s) {unknown}; expected some of {list(TRAINING_METRICS)}"
            )
        if not self.metrics:
            raise ValueError(
                f"no training metrics requested; expected some of {list(TRAINING_METRICS)}"
            )
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self.seed = seed
        self.pairs_per_fake = pairs_per_fake
        self.model = None
        self.weights_sha256 = None
        self.reference_key = key or reference_key(real_images)
        key = self.reference_key
        self.paired = [m for m in PAIRED_NAMES if m in self.metrics]
        self.real_pixels = as_grey_array(real_images, "reference images") if self.paired else None
        if "fid" in self.metrics or "kid" in self.metrics:
            weights_path = find_fid_weights(fid_weights)
            self.model, self.weights_sha256 = load_fid_network(
                weights_path, dims=dims, device=device
            )
            self.real = _cached_real_statistics(
                real_images,
                key=key,
                weights_sha256=self.weights_sha256,
                dims=dims,
                stats_dir=stats_dir,
                get_model=lambda: self.model,
                batch_size=batch_size,
                device=device,
                progress=False,
                precision=precision,  # the fakes' precision: both sides the same arithmetic
            )
            self.real_lbpv = self.real.lbpv
            self.n_real = self.real.n
        else:  # LBPv and the paired metrics need no network
            from fetalgan.metrics.image import lbpv

            self.real = None
            self.real_lbpv = lbpv(real_images) if "lbpv" in self.metrics else None
            self.n_real = len(as_grey_array(real_images))

    def __call__(self, fake_images) -> dict[str, float]:
        """Metrics of ``(N, 1, H, W)`` uint8 fake images against the real set."""
        from fetalgan.metrics.frechet import fid_to_reference, kid
        from fetalgan.metrics.image import as_grey_array, lbpv, lbpv_distance
        from fetalgan.metrics.inception import extract_features

        out: dict[str, float] = {
            "n_real": self.n_real,
            "n_fake": len(as_grey_array(fake_images, "fake images")),
        }
        if self.model is not None:
            fake_features = extract_features(
                fake_images,
                self.model,
                batch_size=self.batch_size,
                device=self.device,
                precision=self.precision,
            )
            real_features = self.real.features
            if "fid" in self.metrics:
                out.update(fid_to_reference(self.real.frechet, fake_features))
            if "kid" in self.metrics:
                out.update(
                    kid(
                        real_features,
                        fake_features,
                        n_subsets=self.kid_subsets,
                        subset_size=self.kid_subset_size,
                        seed=self.seed,
                    )
                )
        if "lbpv" in self.metrics:
            out.update(lbpv_distance(self.real_lbpv, lbpv(fake_images)))
        if self.paired:
            from fetalgan.metrics.image import paired_metrics

            names = {k: v for m in self.paired for k, v in PAIRED_NAMES[m].items()}
            scores = paired_metrics(
                self.real_pixels,
                fake_images,
                metrics=tuple(names),
                pairs_per_fake=self.pairs_per_fake,
                seed=self.seed,
            )
            out.update({logged: scores[name] for name, logged in names.items()})
        return out
