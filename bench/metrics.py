"""Metric speed: fetalgan's Fréchet distance and FID feature pipeline against pytorch-fid's.

Everything is measured in this run on this machine (shared and noisy, so only the ratios mean
anything; the sides run interleaved, A B A B ..., and each pair gives a ratio: the median ratio
and its range are printed):

(a) Fréchet distance at d = 2048 from covariances (N > d, both positive definite):
    ``pytorch_fid.fid_score.calculate_frechet_distance`` (``scipy.linalg.sqrtm``) against
    ``fetalgan.metrics.frechet.frechet_distance`` from scratch and ``frechet_distance_to`` a
    cached reference (what each evaluation of a sweep pays). Goal: >= 30x faster with the
    cached reference, |dFID| <= 1e-6 relative.
    Also the case this project lives in, 800 real and 800 fake features (N < d): pytorch-fid's
    ``np.cov`` + sqrtm against ``fid_from_features`` (Gram form).
(b) Feature extraction, image files -> mu, sigma, on the same phantom folder: pytorch-fid's
    own ``calculate_fid_given_paths`` pipeline (``calculate_activation_statistics``: PIL RGB
    through a DataLoader with 1 worker, contiguous fp32) against fetalgan's
    (``load_folder`` + ``extract_features``: grey uint8, channels_last fp32, 4 images per
    network call on a CPU). Goal: >= 1.8x.
    pytorch-fid reads our weights from a temporary torch hub cache, so nothing is downloaded.

(c) With ``--device cuda``: the FID between two halves of the folder with features computed
    on the GPU against the same with features on the CPU (the cached real statistics of a sweep
    come from the driver's CPU; trials' fakes from their GPU): the agreement figure.

Usage: ``python bench/metrics.py [--n 200] [--size 128] [--rounds 2] [--device auto|cpu|cuda]
[--json FILE]``; ``--device`` puts both sides of (b) on the same device.

Measured on 2026-12-01 on the 2-core CI machine with nothing else running (SciPy 1.17, whose
``sqrtm`` is far faster than the tens of seconds older SciPy took; README "Performance" has
the table): (a) 10.0 s vs 0.73 s -> 13.7x with the cached reference, 46x in the Gram form;
one eigenvalue solve of size 2048 alone takes ~0.4 s here, so no method that needs one can be
30x faster than this sqrtm on this CPU (the bench prints that floor); (b) 2.1x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import warnings
from pathlib import Path

import numpy as np
from interleave import interleave, ratios, summary, timed


def synthetic_features(n: int, d: int, *, seed: int, shift: float) -> np.ndarray:
    """Non-negative features with a decaying spectrum, roughly like Inception pool3."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.random.default_rng(0).standard_normal((d, d)))[0]
    scales = 1.0 / np.sqrt(1.0 + np.arange(d))
    return np.abs(rng.standard_normal((n, d)) * scales @ basis.T + shift)


def bench_frechet(pairs: int) -> None:
    from pytorch_fid.fid_score import calculate_frechet_distance

    from fetalgan.metrics.frechet import (
        fid_from_features,
        fid_to_reference,
        frechet_distance,
        frechet_distance_to,
        frechet_reference,
        mean_and_covariance,
        reference_from_features,
    )

    d = 2048
    print(f"(a) Fréchet distance, d = {d}, {pairs} interleaved pairs (pytorch-fid, fetalgan, ...)")
    real = synthetic_features(4000, d, seed=1, shift=0.30)
    fake = synthetic_features(4000, d, seed=2, shift=0.33)
    stats = (*mean_and_covariance(real), *mean_and_covariance(fake))
    # What a sweep pays once: the reference's part (here its Cholesky factor).
    t_setup, reference = timed(lambda: frechet_reference(*stats[:2]))
    # The floor of any method that needs one symmetric eigenvalue solve of size d: the solve
    # alone, on a symmetric matrix like the one the cached path factorises.
    import torch

    solve_input = torch.from_numpy(np.ascontiguousarray(stats[3]))
    times, results = interleave(
        {
            "pytorch-fid sqrtm": lambda: calculate_frechet_distance(*stats),
            "fetalgan, cached reference": lambda: frechet_distance_to(reference, *stats[2:]),
            "fetalgan, from scratch": lambda: frechet_distance(*stats),
            "one eigvalsh of size d alone": lambda: torch.linalg.eigvalsh(solve_input),
        },
        pairs,
    )
    fid_ref = results["pytorch-fid sqrtm"]
    for name in ("fetalgan, cached reference", "fetalgan, from scratch"):
        print(
            f"    covariances (N = 4000 > d), {name}: median {statistics.median(times[name]):.3f} s"
            f" vs {statistics.median(times['pytorch-fid sqrtm']):.2f} s -> "
            f"{summary(ratios(times['pytorch-fid sqrtm'], times[name]))} faster, "
            f"|dFID| / FID = {abs(fid_ref - results[name]) / fid_ref:.1e}"
        )
    print(f"    (the cached reference's one-off factorisation: {t_setup:.3f} s)")
    print(
        f"    the floor, one symmetric eigenvalue solve of size d alone: median "
        f"{statistics.median(times['one eigvalsh of size d alone']):.3f} s -> at most "
        f"{summary(ratios(times['pytorch-fid sqrtm'], times['one eigvalsh of size d alone']))}"
        " faster for any method that needs one"
    )

    real, fake = real[:800], fake[:800]
    reference = reference_from_features(real)

    def pytorch_fid():
        return calculate_frechet_distance(*mean_and_covariance(real), *mean_and_covariance(fake))

    times, results = interleave(
        {
            "pytorch-fid cov+sqrtm": pytorch_fid,
            "fetalgan Gram, cached reference": lambda: fid_to_reference(reference, fake)["fid"],
            "fetalgan Gram, from scratch": lambda: fid_from_features(real, fake)["fid"],
        },
        pairs,
    )
    fid_ref = results["pytorch-fid cov+sqrtm"]
    for name in ("fetalgan Gram, cached reference", "fetalgan Gram, from scratch"):
        print(
            f"    features (800 vs 800 < d), {name}: median {statistics.median(times[name]):.3f} s"
            f" vs {statistics.median(times['pytorch-fid cov+sqrtm']):.2f} s -> "
            f"{summary(ratios(times['pytorch-fid cov+sqrtm'], times[name]))} faster, "
            f"|dFID| / FID = {abs(fid_ref - results[name]) / fid_ref:.1e}"
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


def bench_features(n: int, size: int, rounds: int, device) -> dict:
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
        f"(b) feature extraction, files -> (mu, sigma): {n} phantom PNGs of {size}x{size}, "
        f"batch 50, {device}"
    )
    print(f"    torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = make_folder(root, n, size)
        weights = find_fid_weights()
        os.environ["TORCH_HOME"] = str(root / "torch")
        save_pytorch_fid_weights(hub_weights_path(), weights)
        reference_model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval().to(device)
        files = sorted(f for ext in IMAGE_EXTENSIONS for f in folder.glob(f"*.{ext}"))
        ours_model, _ = load_fid_network(weights, device=device)

        def reference():
            return calculate_activation_statistics(
                files, reference_model, 50, 2048, str(device), num_workers=1
            )

        def ours():
            images = load_folder(folder)
            return mean_and_covariance(extract_features(images, ours_model, batch_size=50))

        # one warm-up batch each (oneDNN primitive creation), then alternate
        with torch.inference_mode():
            reference_model(torch.rand(2, 3, 64, 64, device=device))
        extract_features(torch.zeros(2, 1, 64, 64, dtype=torch.uint8), ours_model)
        times, results = interleave({"ref": reference, "ours": ours}, rounds)
        ref_stats, our_stats = results["ref"], results["ours"]
        t_ref, t_ours = statistics.median(times["ref"]), statistics.median(times["ours"])
        mu_diff = float(np.abs(ref_stats[0] - our_stats[0]).max())
        print(
            f"    pytorch-fid {n / t_ref:.1f} img/s, fetalgan {n / t_ours:.1f} img/s (medians)"
            f" -> {summary(ratios(times['ref'], times['ours']))} faster; max |d mu| = {mu_diff:.1e}"
        )
        figures = {"reference_img_per_s": n / t_ref, "fetalgan_img_per_s": n / t_ours}
        if device.type != "cpu":
            figures.update(fid_agreement(folder, weights, device))
        return figures


def fid_agreement(folder: Path, weights, device) -> dict:
    """(c) FID between the folder's two halves, features on ``device`` vs on the CPU."""
    from fetalgan.data import load_folder
    from fetalgan.metrics.frechet import fid_from_features
    from fetalgan.metrics.inception import extract_features, load_fid_network

    images = load_folder(folder)
    half = images.shape[0] // 2
    fids = {}
    for where in ("cpu", device):
        model, _ = load_fid_network(weights, device=where)
        feats = extract_features(images, model, batch_size=50)
        fids[str(where)] = fid_from_features(feats[:half], feats[half:])["fid"]
    on_cpu, on_device = fids["cpu"], fids[str(device)]
    difference = abs(on_device - on_cpu)
    print(
        f"(c) FID of {half} vs {half} phantoms: features on cpu {on_cpu:.4f}, on {device} "
        f"{on_device:.4f}: |dFID| = {difference:.2e} ({difference / on_cpu:.1e} relative)"
    )
    return {"fid_cpu": on_cpu, "fid_device": on_device, "fid_abs_difference": difference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="phantom images for (b)")
    parser.add_argument("--size", type=int, default=128, help="phantom image size for (b)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved pairs for (b)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved pairs for (a)")
    parser.add_argument("--skip-features", action="store_true", help="only (a)")
    parser.add_argument("--skip-frechet", action="store_true", help="only (b) and (c)")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda: (b) on it")
    parser.add_argument("--json", type=Path, help="also write (b)'s figures to this JSON file")
    args = parser.parse_args()
    from fetalgan.devices import pick_device

    device = pick_device(args.device)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # scipy's sqrtm(disp=...)
    if not args.skip_frechet:
        bench_frechet(args.repeats)
    if not args.skip_features:
        figures = bench_features(args.n, args.size, args.rounds, device)
        if args.json:
            args.json.write_text(json.dumps({"device": str(device), **figures}, indent=2))


if __name__ == "__main__":
    main()
