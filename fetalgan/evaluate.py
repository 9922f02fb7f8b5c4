"""``fetalgan evaluate``: FID, KID, PSNR, MI, SSIM and LBPv between a real set and a fake folder.

The fakes are a folder of 8-bit grey images of one size (``fetalgan.data.load_folder``). The
real set is a dataset as training reads it (``fetalgan.data.real_data``): an HC18 folder (its
``*_Annotation.png`` masks left out), FETAL_PLANES_DB (filtered rows), or a folder of images;
their sizes may differ. Every real image is brought to the fakes' size (square, R x R) by
``fit`` as the trainer prepares its data (``fetalgan.images.fit_square``: crop, squash or pad;
antialiased bilinear), so every metric compares the fakes with what the generator was trained
to imitate, and the FID is the one the trainer logs. The FID network then resizes both sets to
299x299 as pytorch-fid does (reals already at the fakes' size are used as they are, so the FID
matches pytorch-fid's on the same grey files). Fakes that are not square are compared only with
reals of their exact size.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fetalgan.metrics.image import LBPV_KEYS

if TYPE_CHECKING:
    import torch

    from fetalgan.config import DataConfig

ALL_METRICS = ("fid", "kid", "psnr", "mi", "ssim", "lbpv")
RESULT_KEYS = (
    "fid",
    "kid_mean",
    "kid_std",
    "psnr",
    "mi",  # normalised mutual information (1..2); the trainer logs it as mi_normalised
    "mi_bits",  # raw mutual information in bits
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


def load_reals_at(
    real: DataConfig, files: list[Path], size: tuple[int, int], *, progress: bool = False
) -> torch.Tensor:
    """The real images ``files`` of the set ``real`` at the fakes' ``size`` ``(H, W)``:
    ``(N, 1, H, W) uint8``, each brought there by ``real.fit`` when the fakes are square; else
    every real must already be ``H x W`` (``ValueError`` naming one that is not)."""
    import numpy as np
    import torch

    from fetalgan.data.datasets import decode_files

    h, w = size
    square = h == w
    images = decode_files(
        files, h if square else None, fit=real.fit, progress=progress, desc="read real"
    )
    if not square:
        for path, image in zip(files, images, strict=True):
            if image.shape != (h, w):
                raise ValueError(
                    f"--fake images are {w}x{h}, not square, and {path} is "
                    f"{image.shape[1]}x{image.shape[0]}: reals are brought to the fakes' size by "
                    f"--fit only for square fakes (R x R, as generators write them); give "
                    f"--real images of {w}x{h}"
                )
    return torch.from_numpy(np.stack(images))[:, None]


def evaluate_folders(
    real: str | Path | DataConfig,
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
    """Metrics of the images in ``fake_dir`` against the real set ``real``.

    ``real``: a :class:`~fetalgan.config.DataConfig` from :func:`fetalgan.data.real_data` (its
    kind, planes filters and ``fit``), or a folder, read as ``real_data(folder)`` reads it (kind
    detected, ``fit`` crop). Each real image is brought to the fakes' size by its ``fit``
    before every metric, FID and KID included.

    Returns a dict with the keys of :data:`RESULT_KEYS` that the requested ``metrics`` produce
    (``n_real`` and ``n_fake`` always; ``feature_dim`` and ``weights_sha256`` with fid/kid).
    ``seed`` drives the real/fake pairing of PSNR/MI/SSIM (``pairs_per_fake`` seeded reals per
    fake) and the KID subsets. ``device`` (``auto``, ``cpu``, ``cuda``) runs the FID network; see
    :func:`fetalgan.devices.pick_device`. Errors (``ValueError``/``FileNotFoundError``): a
    missing or empty folder, an unreadable file (named), fakes of different sizes (two named),
    ``cuda`` where torch sees no CUDA device (raised before any image is read).
    """
    from fetalgan.data import list_real_files, load_folder, real_data
    from fetalgan.devices import pick_device

    metrics = _check_metrics(metrics)
    needs_network = "fid" in metrics or "kid" in metrics
    torch_device = pick_device(device) if needs_network else None  # before reading any image
    if isinstance(real, (str, Path)):
        real = real_data(real)
    real_files = list_real_files(real)  # a wrong --real fails before any image is decoded
    fake_images = load_folder(fake_dir, progress=progress)
    real_images = load_reals_at(real, real_files, fake_images.shape[2:], progress=progress)
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
    if paired:
        from fetalgan.metrics.image import paired_metrics

        if "mi" in paired:
            paired.append("mi_bits")
        scores = paired_metrics(
            real_images,
            fake_images,
            metrics=paired,
            pairs_per_fake=pairs_per_fake,
            seed=seed,
            progress=progress,
        )
        result.update({m: scores[m] for m in paired})
    if "lbpv" in metrics:
        from fetalgan.metrics.image import lbpv, lbpv_distance

        result.update(lbpv_distance(lbpv(real_images), lbpv(fake_images)))

    result["n_real"] = int(real_images.shape[0])
    result["n_fake"] = int(fake_images.shape[0])
    return {k: result[k] for k in RESULT_KEYS if k in result}


_LABELS = {
    "fid": "FID",
    "kid_mean": "KID",
    "psnr": "PSNR (dB)",
    "mi": "MI (normalised)",
    "mi_bits": "MI (bits)",
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


# --------------------------------------------------------------------------------------------
# Paired evaluation: a translation against its own ground truth, file by file
# --------------------------------------------------------------------------------------------

PAIRED_KEYS = ("ssim", "psnr", "mi")  # per pair and averaged by evaluate_paired


def paired_scores(truth_images, fake_images) -> dict:
    """SSIM, PSNR and normalised MI of each (truth ``i``, fake ``i``) pair of two same-shape
    ``(N, 1, H, W)`` / ``(N, H, W)`` uint8 sets: ``{name: (N,) float64 array}``.

    The functions and settings of :func:`fetalgan.metrics.image.paired_metrics`: scikit-image's
    ``structural_similarity`` and ``peak_signal_noise_ratio`` with ``data_range=255`` (PSNR =
    10 log10(255^2 / MSE) dB, ``inf`` for identical images) and
    ``normalized_mutual_information`` with 100 bins ((H(A) + H(B)) / H(A, B), 1..2); only the
    pairing differs: by position, not seeded random pairs.
    """
    import numpy as np
    from skimage.metrics import (
        normalized_mutual_information,
        peak_signal_noise_ratio,
        structural_similarity,
    )

    from fetalgan.metrics.image import DATA_RANGE, MI_BINS, as_grey_array

    truth = as_grey_array(truth_images, "ground-truth images")
    fake = as_grey_array(fake_images, "translated images")
    if truth.shape != fake.shape:
        raise ValueError(
            f"paired metrics: ground truth is {truth.shape}, translations {fake.shape}; "
            "expected the same number of images of the same size"
        )
    out = {k: np.empty(len(truth)) for k in PAIRED_KEYS}
    with np.errstate(divide="ignore"):  # PSNR of an identical pair is inf, by definition
        for i, (a, b) in enumerate(zip(truth, fake, strict=True)):
            out["ssim"][i] = structural_similarity(a, b, data_range=DATA_RANGE)
            out["psnr"][i] = peak_signal_noise_ratio(a, b, data_range=DATA_RANGE)
            out["mi"][i] = normalized_mutual_information(a, b, bins=MI_BINS)
    return out


def evaluate_paired(truth_dir: str | Path, fake_dir: str | Path) -> dict:
    """SSIM, PSNR and normalised MI of each image in ``fake_dir`` against the image of the
    same name (stem) in ``truth_dir``, and their means.

    Returns ``{"pairs": [{"name", "ssim", "psnr", "mi"}, ...] (sorted by name), "ssim",
    "psnr", "mi" (means over pairs), "n_pairs"}``. ValueError when a fake has no ground truth
    of its name, or a pair differs in size; FileNotFoundError for a missing or empty folder.
    Ground-truth images without a fake are ignored (translate a subset, evaluate that).
    """
    import numpy as np

    from fetalgan.images import list_images, read_grey

    folders = {"--real": Path(truth_dir), "--fake": Path(fake_dir)}
    listed = {}
    for flag, folder in folders.items():
        if not folder.is_dir():
            raise FileNotFoundError(f"{flag}: {folder} is not a folder")
        listed[flag] = {p.stem: p for p in list_images(folder)}
        if not listed[flag]:
            raise FileNotFoundError(f"{flag}: no images in {folder}")
    truth, fakes = listed["--real"], listed["--fake"]
    missing = sorted(set(fakes) - set(truth))
    if missing:
        raise ValueError(
            f"--paired: {len(missing)} image(s) in {fake_dir} have no ground truth of the same "
            f"name in {truth_dir}, e.g. {fakes[missing[0]].name}"
        )
    names = sorted(fakes)
    pairs = [(read_grey(truth[n]), read_grey(fakes[n])) for n in names]
    for name, (a, b) in zip(names, pairs, strict=True):
        if a.shape != b.shape:
            raise ValueError(
                f"--paired: {name} is {a.shape[1]}x{a.shape[0]} in {truth_dir} but "
                f"{b.shape[1]}x{b.shape[0]} in {fake_dir}; pairs must have one size"
            )
    scores = {k: [] for k in PAIRED_KEYS}
    for a, b in pairs:  # one pair at a time: the images may differ in size between pairs
        for k, v in paired_scores(a[None], b[None]).items():
            scores[k].append(float(v[0]))
    result: dict = {
        "pairs": [
            {"name": n, **{k: scores[k][i] for k in PAIRED_KEYS}} for i, n in enumerate(names)
        ]
    }
    result |= {k: float(np.mean(scores[k])) for k in PAIRED_KEYS}
    result["n_pairs"] = len(names)
    return result


def format_paired(result: dict, *, max_rows: int = 20) -> str:
    """:func:`evaluate_paired`'s result as a terminal table: the first ``max_rows`` pairs and
    the mean."""
    lines = [f"{'image':<28} {'SSIM':>8} {'PSNR (dB)':>10} {'MI (norm.)':>10}"]
    for row in result["pairs"][:max_rows]:
        lines.append(
            f"{row['name']:<28} {row['ssim']:>8.4f} {row['psnr']:>10.3f} {row['mi']:>10.4f}"
        )
    if result["n_pairs"] > max_rows:
        lines.append(f"... {result['n_pairs'] - max_rows} more (all of them with --json)")
    mean = f"mean of {result['n_pairs']}"
    lines.append(f"{mean:<28} {result['ssim']:>8.4f} {result['psnr']:>10.3f} {result['mi']:>10.4f}")
    return "\n".join(lines)
