"""``fetalgan evaluate``: FID, KID, PSNR, MI, SSIM and LBPv between a real and a fake image folder.

Images are read as 8-bit grey (``fetalgan.data.load_folder``); within a folder they must share
one size. FID and KID use each folder as it is (the network resizes every image to 299x299, as
pytorch-fid does, so the FID matches pytorch-fid's on the same grey files). PSNR, MI, SSIM and
LBPv compare pixels, so when the real images are larger than the (square, R x R) fakes, the
reals are brought to R x R the way the trainer prepares its data (short side resized to R,
antialiased bilinear, centre crop) before those metrics; fakes that are not square and not the
reals' size are an error.
"""

from __future__ import annotations

from pathlib import Path

from fetalgan.metrics.image import LBPV_KEYS

ALL_METRICS = ("fid", "kid", "psnr", "mi", "ssim", "lbpv")
RESULT_KEYS = (
    "fid",
    "kid_mean",
    "kid_std",
    "psnr",
    "mi",
    "ssim",
    *LBPV_KEYS,
    "n_real",
    "n_fake",
    "feature_dim",
    "weights_sha256",
)


def _check_metrics(metrics) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    metrics = tuple(dict.fromkeys(metrics))
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise ValueError(
            f"unknown metric(s) {', '.join(unknown)}; expected some of {', '.join(ALL_METRICS)}"
        )
    if not metrics:
        raise ValueError(f"no metrics requested; expected some of {', '.join(ALL_METRICS)}")
    return metrics


def _reals_at_fake_size(real_images, fake_images, real_dir):
    """The real ``(N, 1, H, W)`` set at the fakes' size (resize short side + centre crop)."""
    import numpy as np
    import torch

    from fetalgan.images import resize_crop

    (h_r, w_r), (h_f, w_f) = real_images.shape[2:], fake_images.shape[2:]
    if (h_r, w_r) == (h_f, w_f):
        return real_images
    if h_f != w_f:
        raise ValueError(
            f"PSNR/MI/SSIM/LBPv compare pixels: real images in {real_dir} are {w_r}x{h_r}, fakes "
            f"{w_f}x{h_f}; only square fakes are matched automatically (reals resized and centre-"
            "cropped): resize one set, or leave psnr,mi,ssim,lbpv out of --metrics"
        )
    arr = real_images[:, 0].numpy()
    return torch.from_numpy(np.stack([resize_crop(image, h_f) for image in arr]))[:, None]


def evaluate_folders(
    real_dir: str | Path,
    fake_dir: str | Path,
    *,
    metrics=ALL_METRICS,
    fid_weights: str | None = None,
    fid_dims: int = 2048,
    batch_size: int = 50,
    device: str = "auto",
    seed: int = 0,
    pairs_per_fake: int | None = 10,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    progress: bool = True,
) -> dict:
    """Metrics of the images in ``fake_dir`` against those in ``real_dir``.

    Returns a dict with the keys of :data:`RESULT_KEYS` that the requested ``metrics`` produce
    (``n_real`` and ``n_fake`` always; ``feature_dim`` and ``weights_sha256`` with fid/kid).
    ``seed`` drives the real/fake pairing of PSNR/MI/SSIM (``pairs_per_fake`` seeded reals per
    fake) and the KID subsets. ``device`` (``auto``, ``cpu``, ``cuda``) runs the FID network; see
    :func:`fetalgan.devices.pick_device`. Errors (``ValueError``/``FileNotFoundError``): a
    missing or empty folder, an unreadable file (named), images of different sizes in one folder
    (two named), ``cuda`` where torch sees no CUDA device (raised before any image is read).
    """
    from fetalgan.data import load_folder
    from fetalgan.devices import pick_device

    metrics = _check_metrics(metrics)
    needs_network = "fid" in metrics or "kid" in metrics
    torch_device = pick_device(device) if needs_network else None  # before reading any image
    real_images = load_folder(real_dir, progress=progress)
    fake_images = load_folder(fake_dir, progress=progress)
    result: dict = {}

    if needs_network:
        from fetalgan.metrics.frechet import fid_from_features, kid
        from fetalgan.metrics.inception import extract_features, load_fid_network

        model, sha = load_fid_network(fid_weights, dims=fid_dims, device=torch_device)
        common = {"batch_size": batch_size, "device": torch_device, "progress": progress}
        real_features = extract_features(real_images, model, desc="real features", **common)
        fake_features = extract_features(fake_images, model, desc="fake features", **common)
        if "fid" in metrics:
            result["fid"] = fid_from_features(real_features, fake_features)["fid"]
        if "kid" in metrics:
            scores = kid(
                real_features,
                fake_features,
                n_subsets=kid_subsets,
                subset_size=kid_subset_size,
                seed=seed,
            )
            result["kid_mean"], result["kid_std"] = scores["kid_mean"], scores["kid_std"]
        result["feature_dim"] = int(real_features.shape[1])
        result["weights_sha256"] = sha

    paired = [m for m in ("psnr", "mi", "ssim") if m in metrics]
    if paired or "lbpv" in metrics:
        reals_px = _reals_at_fake_size(real_images, fake_images, real_dir)
        if paired:
            from fetalgan.metrics.image import paired_metrics

            scores = paired_metrics(
                reals_px,
                fake_images,
                metrics=paired,
                pairs_per_fake=pairs_per_fake,
                seed=seed,
                progress=progress,
            )
            result.update({m: scores[m] for m in paired})
        if "lbpv" in metrics:
            from fetalgan.metrics.image import lbpv, lbpv_distance

            result.update(lbpv_distance(lbpv(reals_px), lbpv(fake_images)))

    result["n_real"] = int(real_images.shape[0])
    result["n_fake"] = int(fake_images.shape[0])
    return {k: result[k] for k in RESULT_KEYS if k in result}


_LABELS = {
    "fid": "FID",
    "kid_mean": "KID",
    "psnr": "PSNR (dB)",
    "mi": "MI (normalised)",
    "ssim": "SSIM",
    "lbpv_l1": "LBPv L1",
    "lbpv_l2": "LBPv L2",
    "lbpv_v8": "LBPv |dV8|",
    "lbpv_v20": "LBPv |dV20|",
    "lbpv_v143": "LBPv |dV143|",
    "lbpv_v240": "LBPv |dV240|",
}


def format_table(result: dict) -> str:
    """The result of :func:`evaluate_folders` as an aligned two-column table for the terminal."""
    rows: list[tuple[str, str]] = []
    for key, label in _LABELS.items():
        if key not in result:
            continue
        value = f"{result[key]:.6g}" if key != "fid" else f"{result[key]:.4f}"
        if key == "kid_mean" and "kid_std" in result:
            value += f" ± {result['kid_std']:.2g}"
        rows.append((label, value))
    if "n_real" in result:
        rows.append(("images real / fake", f"{result['n_real']} / {result.get('n_fake', '?')}"))
    if "feature_dim" in result:
        rows.append(("feature dim", str(result["feature_dim"])))
    if "weights_sha256" in result:
        rows.append(("FID weights sha256", result["weights_sha256"][:16] + "…"))
    width = max(len(label) for label, _ in rows) if rows else 0
    lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  {'-' * 12}"]
    lines += [f"{label.ljust(width)}  {value}" for label, value in rows]
    if "fid" in result and result.get("n_fake", 2048) < 2048:
        lines.append(
            "(FID is biased upwards with fewer than 2048 images: compare at equal N, or use KID)"
        )
    return "\n".join(lines)
