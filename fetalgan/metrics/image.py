"""Pixel-level metrics between unpaired sets of 8-bit grey images: PSNR, MI, SSIM, LBPv.

Inputs are ``(N, 1, H, W)`` or ``(N, H, W)`` uint8 tensors or arrays (grey levels 0..255).

A synthetic image has no real counterpart, so PSNR, normalised mutual information and SSIM
compare each fake image with ``pairs_per_fake`` real images drawn at random without
replacement (``numpy.random.default_rng(seed)``; every real image when ``pairs_per_fake`` is
None or at least ``N_real``) and average over all those pairs. Both sets must then have the
same height and width.

LBPv (local binary pattern vector): scikit-image ``local_binary_pattern(P=8, R=1,
method='default')`` per image, its codes' normalised 256-bin histogram, averaged over the set.
rLBPv comes from the real (non-augmented) images and sLBPv from the fakes; the fetal head
study found elements V8, V20, V143 and V240 of |sLBPv - rLBPv| to track clinicians' scores.
"""

from __future__ import annotations

import numpy as np

PAIRED_METRICS = ("psnr", "mi", "ssim", "mi_bits")  # mi: normalised; mi_bits: raw, in bits
LBPV_ELEMENTS = (8, 20, 143, 240)
LBPV_ELEMENT_KEYS = tuple(f"lbpv_v{k}" for k in LBPV_ELEMENTS)  # |sLBPv - rLBPv| at each element
LBPV_KEYS = ("lbpv_l1", "lbpv_l2", *LBPV_ELEMENT_KEYS)  # what lbpv_distance returns
DATA_RANGE = 255  # 8-bit grey
MI_BINS = 100  # scikit-image's default, stated so it cannot drift


def as_grey_array(images, name: str = "images") -> np.ndarray:
    """``(N, 1, H, W)`` / ``(N, H, W)`` uint8 tensor or array -> ``(N, H, W) uint8`` numpy."""
    arr = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise ValueError(
            f"{name}: expected (N, 1, H, W) or (N, H, W) uint8 images, got {arr.shape} {arr.dtype}"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: no images")
    return arr


def pair_indices(
    n_real: int, n_fake: int, *, pairs_per_fake: int | None = 10, seed: int = 0
) -> np.ndarray:
    """``(n_fake, k)`` indices of the real images each fake is compared with.

    ``k = min(pairs_per_fake, n_real)``; each row is a seeded draw without replacement (all
    reals, in order, when ``pairs_per_fake`` is None or ``>= n_real``).
    """
    if pairs_per_fake is not None and pairs_per_fake < 1:
        raise ValueError(f"pairs_per_fake must be >= 1 or None (every real), got {pairs_per_fake}")
    if pairs_per_fake is None or pairs_per_fake >= n_real:
        return np.tile(np.arange(n_real), (n_fake, 1))
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((n_fake, n_real)), axis=1)[:, :pairs_per_fake]


def paired_metrics(
    real_images,
    fake_images,
    *,
    metrics=PAIRED_METRICS,
    pairs_per_fake: int | None = 10,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Mean and standard deviation over real/fake pairs of PSNR, MI and SSIM.

    - ``psnr``: ``skimage.metrics.peak_signal_noise_ratio(real, fake, data_range=255)`` in dB
      (``inf`` for an identical pair, which makes the mean ``inf``).
    - ``mi``: ``skimage.metrics.normalized_mutual_information(real, fake, bins=100)``,
      (H(real) + H(fake)) / H(real, fake), from 1 (independent) to 2 (identical).
    - ``mi_bits``: raw mutual information H(real) + H(fake) - H(real, fake) in bits from the
      same 100 x 100 joint histogram (:func:`mutual_information_bits`), 0 (independent) up to
      H(real).
    - ``ssim``: ``skimage.metrics.structural_similarity(real, fake, data_range=255)``
      (7x7 uniform window, sample covariance), in [-1, 1].

    Pairs are chosen by :func:`pair_indices` (each fake with ``pairs_per_fake`` seeded random
    reals). Returns ``{name: mean, name + "_std": std (ddof 0), "n_pairs": int}`` for the
    requested names.
    """
    from skimage.metrics import (
        normalized_mutual_information,
        peak_signal_noise_ratio,
        structural_similarity,
    )
    from tqdm.auto import tqdm

    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in PAIRED_METRICS]
    if unknown:
        raise ValueError(
            f"unknown paired metric(s) {unknown}; expected some of {list(PAIRED_METRICS)}"
        )
    real = as_grey_array(real_images, "real images")
    fake = as_grey_array(fake_images, "fake images")
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(
            f"PSNR/MI/SSIM compare pixels: real images are {real.shape[2]}x{real.shape[1]}, "
            f"fake images {fake.shape[2]}x{fake.shape[1]}; resize one set to the other's size"
        )
    functions = {
        "psnr": lambda a, b: peak_signal_noise_ratio(a, b, data_range=DATA_RANGE),
        "mi": lambda a, b: normalized_mutual_information(a, b, bins=MI_BINS),
        "ssim": lambda a, b: structural_similarity(a, b, data_range=DATA_RANGE),
        "mi_bits": lambda a, b: mutual_information_bits(a, b, bins=MI_BINS),
    }
    pairs = pair_indices(len(real), len(fake), pairs_per_fake=pairs_per_fake, seed=seed)
    values = {m: np.empty(pairs.size) for m in metrics}
    k = 0
    with np.errstate(divide="ignore"):  # PSNR of an identical pair is inf, by definition
        bar = tqdm(
            pairs,
            desc="/".join(metrics),
            unit="fake",
            disable=None if progress else True,
            leave=False,
        )
        for fake_index, real_indices in enumerate(bar):
            for real_index in real_indices:
                for m in metrics:
                    values[m][k] = functions[m](real[real_index], fake[fake_index])
                k += 1
    out: dict = {}
    for m in metrics:
        with np.errstate(invalid="ignore"):  # std of values containing inf is nan
            out[m] = float(values[m].mean())
            out[f"{m}_std"] = float(values[m].std())
    out["n_pairs"] = int(pairs.size)
    return out


def mutual_information_bits(
    image0: np.ndarray, image1: np.ndarray, *, bins: int = MI_BINS
) -> float:
    """Mutual information I(X; Y) = H(X) + H(Y) - H(X, Y) of two same-shape images, in bits.

    Shannon's definition (Cover & Thomas, *Elements of Information Theory*, eq. 2.45) on the
    joint grey-level histogram that scikit-image's ``normalized_mutual_information`` uses
    (``numpy.histogramdd`` with ``bins`` bins per image over its own range), with base-2
    logarithms; the normalised form of the same histogram is (H(X) + H(Y)) / H(X, Y)
    (Studholme et al., 1999). 0 for independent images, H(X) for identical ones.
    """
    from scipy.stats import entropy

    if image0.shape != image1.shape:
        raise ValueError(f"images must have the same shape, got {image0.shape} and {image1.shape}")
    hist, _ = np.histogramdd(
        [np.reshape(image0, -1), np.reshape(image1, -1)], bins=bins, density=True
    )
    h0 = entropy(np.sum(hist, axis=0), base=2)
    h1 = entropy(np.sum(hist, axis=1), base=2)
    h01 = entropy(np.reshape(hist, -1), base=2)
    return float(h0 + h1 - h01)


def psnr(real_images, fake_images, *, pairs_per_fake: int | None = 10, seed: int = 0) -> dict:
    """Mean PSNR (dB, data_range 255) over seeded real/fake pairs: ``{psnr, psnr_std, n_pairs}``."""
    return paired_metrics(
        real_images, fake_images, metrics=("psnr",), pairs_per_fake=pairs_per_fake, seed=seed
    )


def mutual_information(
    real_images, fake_images, *, pairs_per_fake: int | None = 10, seed: int = 0
) -> dict:
    """Mean normalised mutual information over seeded real/fake pairs: ``{mi, mi_std, n_pairs}``."""
    return paired_metrics(
        real_images, fake_images, metrics=("mi",), pairs_per_fake=pairs_per_fake, seed=seed
    )


def ssim(real_images, fake_images, *, pairs_per_fake: int | None = 10, seed: int = 0) -> dict:
    """Mean SSIM (data_range 255) over seeded real/fake pairs: ``{ssim, ssim_std, n_pairs}``."""
    return paired_metrics(
        real_images, fake_images, metrics=("ssim",), pairs_per_fake=pairs_per_fake, seed=seed
    )


def lbp_histogram(image: np.ndarray) -> np.ndarray:
    """``(H, W) uint8`` -> ``(256,)`` float64 histogram of its LBP(P=8, R=1) codes, summing to 1."""
    from skimage.feature import local_binary_pattern

    codes = local_binary_pattern(image, P=8, R=1, method="default").astype(np.int64)
    return np.bincount(codes.ravel(), minlength=256) / codes.size


def lbpv(images) -> np.ndarray:
    """LBPv of a set: the mean of the per-image normalised LBP histograms, ``(256,)`` float64."""
    arr = as_grey_array(images)
    total = np.zeros(256)
    for image in arr:
        total += lbp_histogram(image)
    return total / len(arr)


def lbpv_distance(real_lbpv, fake_lbpv) -> dict:
    """Distance between rLBPv (real) and sLBPv (fake), both ``(256,)``.

    ``lbpv_l1`` = sum |s - r|, ``lbpv_l2`` = sqrt(sum (s - r)^2), ``lbpv_vK`` = |s[K] - r[K]|
    for K in 8, 20, 143, 240.
    """
    real = np.asarray(real_lbpv, dtype=np.float64)
    fake = np.asarray(fake_lbpv, dtype=np.float64)
    if real.shape != (256,) or fake.shape != (256,):
        raise ValueError(f"LBPv vectors must be (256,), got real {real.shape}, fake {fake.shape}")
    diff = np.abs(fake - real)
    out = {"lbpv_l1": float(diff.sum()), "lbpv_l2": float(np.sqrt((diff * diff).sum()))}
    out.update(
        {key: float(diff[k]) for key, k in zip(LBPV_ELEMENT_KEYS, LBPV_ELEMENTS, strict=True)}
    )
    return out
