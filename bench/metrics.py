"""Metric speed: fetalgan's Fréchet distance and FID feature pipeline against pytorch-fid's.

Everything is measured in this run on this machine (shared and noisy, so only the ratios mean
anything; the two sides alternate and each keeps its best time):

(a) Fréchet distance at d = 2048 from covariances (N > d, both positive definite):
    ``pytorch_fid.fid_score.calculate_frechet_distance`` (``scipy.linalg.sqrtm``) against
    ``fetalgan.metrics.frechet.frechet_distance``. Goal: >= 50x faster, |dFID| <= 1e-3.
    Also the case this project lives in, 800 real and 800 fake features (N < d): pytorch-fid's
    ``np.cov`` + sqrtm against ``fid_from_features`` (Gram form).
(b) Feature extraction, image files -> mu, sigma, on the same phantom folder: pytorch-fid's
    own ``calculate_fid_given_paths`` pipeline (``calculate_activation_statistics``: PIL RGB
    through a DataLoader with 1 worker, contiguous fp32) against fetalgan's
    (``load_folder`` + ``extract_features``: grey uint8, channels_last fp32, 4 images per
    network call on a CPU). Goal: >= 1.8x.
    pytorch-fid reads our weights from a temporary torch hub cache, so nothing is downloaded.

Usage: ``python bench/metrics.py [--n 200] [--size 128] [--rounds 2]``.

Measured here on a quiet moment (2 cores, SciPy 1.17): (a) 8.6 s vs 0.51 s -> 16.8x from
covariances (this SciPy's sqrtm is far faster than the tens of seconds older ones took; ours is
one Cholesky, two triangular products and one symmetric eigenvalue solve), 9.3 s vs 0.11 s ->
86x in the Gram form, |dFID| <= 3.4e-6; (b) 12.4 vs 33.8 img/s -> 2.7x.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def synthetic_features(n: int, d: int, *, seed: int, shift: float) -> np.ndarray:
    """Non-negative features with a decaying spectrum, roughly like Inception pool3."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.random.default_rng(0).standard_normal((d, d)))[0]
    scales = 1.0 / np.sqrt(1.0 + np.arange(d))
    return np.abs(rng.standard_normal((n, d)) * scales @ basis.T + shift)


def bench_frechet(repeats: int) -> None:
    from pytorch_fid.fid_score import calculate_frechet_distance

    from fetalgan.metrics.frechet import fid_from_features, frechet_distance, mean_and_covariance

    d = 2048
    print(f"(a) Fréchet distance, d = {d}")
    real = synthetic_features(4000, d, seed=1, shift=0.30)
    fake = synthetic_features(4000, d, seed=2, shift=0.33)
    stats = (*mean_and_covariance(real), *mean_and_covariance(fake))
    t_ref, fid_ref = best_time(lambda: calculate_frechet_distance(*stats), 1)
    t_ours, fid_ours = best_time(lambda: frechet_distance(*stats), repeats)
    print(
        f"    covariances (N = 4000 > d): pytorch-fid sqrtm {t_ref:.2f} s, fetalgan {t_ours:.3f} s"
        f" -> {t_ref / t_ours:.1f}x faster, FID {fid_ref:.4f} vs {fid_ours:.4f},"
        f" |dFID| = {abs(fid_ref - fid_ours):.1e}"
    )

    real, fake = real[:800], fake[:800]

    def reference():
        return calculate_frechet_distance(*mean_and_covariance(real), *mean_and_covariance(fake))

    t_ref, fid_ref = best_time(reference, 1)
    t_ours, fid_ours = best_time(lambda: fid_from_features(real, fake)["fid"], repeats)
    print(
        f"    features (800 vs 800 < d):  pytorch-fid cov+sqrtm {t_ref:.2f} s, fetalgan Gram {t_ours:.3f} s"
        f" -> {t_ref / t_ours:.1f}x faster, FID {fid_ref:.4f} vs {fid_ours:.4f},"
        f" |dFID| = {abs(fid_ref - fid_ours):.1e}"
    )


def make_folder(root: Path, n: int, size: int) -> Path:
    folder = root / "images"
    try:
        from fetalgan.data.phantom import write_phantom_dir

        write_phantom_dir(folder, n=n, size=size, seed=0, progress=False)
    except ImportError:  # any grey PNGs will do
        from fetalgan.images import write_png

        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for i in range(n):
            write_png(
                rng.integers(0, 256, (size, size), dtype=np.uint8), folder / f"img_{i:05d}.png"
            )
    return folder


def bench_features(n: int, size: int, rounds: int) -> None:
    import torch
    from pytorch_fid.fid_score import IMAGE_EXTENSIONS, calculate_activation_statistics
    from pytorch_fid.inception import InceptionV3

    from fetalgan.data import load_folder
    from fetalgan.metrics.frechet import mean_and_covariance
    from fetalgan.metrics.inception import (
        extract_features,
        find_fid_weights,
        hub_weights_path,
        load_fid_network,
        save_pytorch_fid_weights,
    )

    print(
        f"(b) feature extraction, files -> (mu, sigma): {n} phantom PNGs of {size}x{size}, batch 50, cpu"
    )
    print(f"    torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = make_folder(root, n, size)
        weights = find_fid_weights()
        os.environ["TORCH_HOME"] = str(root / "torch")
        save_pytorch_fid_weights(hub_weights_path(), weights)
        reference_model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
        files = sorted(f for ext in IMAGE_EXTENSIONS for f in folder.glob(f"*.{ext}"))
        ours_model, _ = load_fid_network(weights)

        def reference():
            return calculate_activation_statistics(
                files, reference_model, 50, 2048, "cpu", num_workers=1
            )

        def ours():
            images = load_folder(folder)
            return mean_and_covariance(extract_features(images, ours_model, batch_size=50))

        # one warm-up batch each (oneDNN primitive creation), then alternate
        with torch.inference_mode():
            reference_model(torch.rand(2, 3, 64, 64))
        extract_features(torch.zeros(2, 1, 64, 64, dtype=torch.uint8), ours_model)
        t_ref = t_ours = float("inf")
        for r in range(rounds):
            order = (
                (("ref", reference), ("ours", ours))
                if r % 2 == 0
                else (("ours", ours), ("ref", reference))
            )
            for name, fn in order:
                t, stats = best_time(fn, 1)
                if name == "ref":
                    t_ref, ref_stats = min(t_ref, t), stats
                else:
                    t_ours, our_stats = min(t_ours, t), stats
                print(f"    round {r + 1} {name:4s} {n / t:6.1f} img/s")
        mu_diff = float(np.abs(ref_stats[0] - our_stats[0]).max())
        print(
            f"    pytorch-fid {n / t_ref:.1f} img/s, fetalgan {n / t_ours:.1f} img/s"
            f" -> {t_ref / t_ours:.2f}x faster; max |d mu| = {mu_diff:.1e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="phantom images for (b)")
    parser.add_argument("--size", type=int, default=128, help="phantom image size for (b)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds for (b)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed repeats of fetalgan's Fréchet"
    )
    parser.add_argument("--skip-features", action="store_true", help="only (a)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # scipy's sqrtm(disp=...)
    bench_frechet(args.repeats)
    if not args.skip_features:
        bench_features(args.n, args.size, args.rounds)


if __name__ == "__main__":
    main()
