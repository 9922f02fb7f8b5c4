"""``evaluate_folders``: keys, errors on bad folders, real sets (HC18 without its masks,
filtered FETAL_PLANES_DB rows, mixed sizes, the fit), and agreement with pytorch-fid (slow)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from real_trees import BRIGHTEST, KEPT, write_fakes, write_hc18, write_planes

from fetalgan.cli import main
from fetalgan.data import real_data
from fetalgan.evaluate import RESULT_KEYS, evaluate_folders, format_table
from fetalgan.images import fit_square, read_grey, write_png
from fetalgan.metrics import image as image_metrics
from fetalgan.metrics import inception


def write_blobs(
    directory: Path, n: int, size: tuple[int, int], *, seed: int, noise: float = 20.0
) -> Path:
    """``n`` grey PNGs of ``size`` (H, W): a bright blob on a noisy background each."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    yy, xx = yy / h, xx / w
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cx, cy = rng.uniform(0.3, 0.7, 2)
        radius = rng.uniform(0.15, 0.3)
        image = 30 + 200 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / radius**2)
        image = image + rng.normal(0, noise, (h, w))
        write_png(np.clip(image, 0, 255).astype(np.uint8), directory / f"img_{i:03d}.png")
    return directory


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    real = write_blobs(root / "real", 8, (32, 32), seed=0)
    fake = write_blobs(root / "fake", 6, (32, 32), seed=1, noise=40.0)
    return real, fake


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the FID network was loaded")

    monkeypatch.setattr(inception, "load_fid_network", refuse)


def test_all_metrics_give_exactly_the_documented_keys(folders):
    try:
        weights = inception.find_fid_weights()
    except FileNotFoundError as err:
        pytest.skip(f"no FID weights: {err}")
    result = evaluate_folders(*folders, progress=False)
    assert list(result) == list(RESULT_KEYS)
    assert (result["n_real"], result["n_fake"], result["feature_dim"]) == (8, 6, 2048)
    assert result["weights_sha256"] == inception.sha256_file(weights)
    assert result["fid"] > 1.0
    assert 1.0 <= result["mi"] <= 2.0 and -1.0 <= result["ssim"] <= 1.0
    table = format_table(result)
    assert "FID" in table and f"{result['fid']:.4f}" in table and "8 / 6" in table


def test_a_subset_of_metrics_gives_only_its_keys_and_skips_the_network(folders, no_network):
    result = evaluate_folders(*folders, metrics=("psnr", "lbpv"), progress=False)
    assert list(result) == [
        "psnr",
        "lbpv_l1",
        "lbpv_l2",
        "lbpv_v8",
        "lbpv_v20",
        "lbpv_v143",
        "lbpv_v240",
        "n_real",
        "n_fake",
    ]
    assert "FID" not in format_table(result)


def test_larger_reals_are_resized_to_square_fakes_for_pixel_metrics(tmp_path, folders, no_network):
    real = write_blobs(tmp_path / "big", 4, (48, 64), seed=2)
    result = evaluate_folders(real, folders[1], metrics="ssim,mi", progress=False)
    assert np.isfinite(result["ssim"]) and np.isfinite(result["mi"])
    odd = write_blobs(tmp_path / "odd", 3, (20, 30), seed=3)
    with pytest.raises(ValueError, match="30x20"):
        evaluate_folders(real, odd, metrics=("ssim",), progress=False)


def test_empty_and_missing_folders_are_clear_errors(tmp_path, folders, no_network):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.*no images"):
        evaluate_folders(folders[0], tmp_path / "empty", metrics=("psnr",), progress=False)
    with pytest.raises(FileNotFoundError, match="absent"):
        evaluate_folders(tmp_path / "absent", folders[1], metrics=("psnr",), progress=False)


def test_unreadable_file_is_named(tmp_path, folders, no_network):
    broken = write_blobs(tmp_path / "broken", 2, (32, 32), seed=4)
    (broken / "img_999.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="img_999.png"):
        evaluate_folders(folders[0], broken, metrics=("psnr",), progress=False)


def test_mixed_sizes_in_a_folder_name_two_files(tmp_path, folders, no_network):
    mixed = write_blobs(tmp_path / "mixed", 2, (32, 32), seed=5)
    write_png(np.zeros((16, 24), np.uint8), mixed / "z_small.png")
    with pytest.raises(ValueError, match=r"img_000.png is 32x32.*z_small.png is 24x16"):
        evaluate_folders(folders[0], mixed, metrics=("psnr",), progress=False)


def test_unknown_metric_lists_the_valid_ones(folders, no_network):
    with pytest.raises(ValueError, match="fdi.*fid, kid, psnr, mi, ssim, lbpv"):
        evaluate_folders(*folders, metrics=("fdi",), progress=False)


def test_cuda_without_cuda_fails_before_reading_images(tmp_path, no_network, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'cuda' requested but torch sees no CUDA device"):
        evaluate_folders(tmp_path / "absent", tmp_path / "absent", device="cuda", progress=False)
    # pixel metrics need no device: the same request is fine without fid/kid
    with pytest.raises(FileNotFoundError, match="absent"):
        evaluate_folders(
            tmp_path / "absent", tmp_path / "absent", metrics="psnr", device="cuda", progress=False
        )


@pytest.fixture
def seen_reals(monkeypatch) -> list:
    """The real images ``(N, 1, H, W)`` evaluate hands to the paired metrics, one per call."""
    seen = []
    paired_metrics = image_metrics.paired_metrics

    def spy(reals, fakes, **kwargs):
        seen.append(reals)
        return paired_metrics(reals, fakes, **kwargs)

    monkeypatch.setattr(image_metrics, "paired_metrics", spy)
    return seen


def _fitted(files, side: int, fit: str) -> np.ndarray:
    return np.stack([fit_square(read_grey(p), side, fit) for p in files])


def test_hc18_reals_leave_masks_out_and_differ_in_size(tmp_path, no_network, seen_reals):
    root = write_hc18(tmp_path / "hc18")
    fakes = write_fakes(tmp_path / "fake", n=6, size=16)
    result = evaluate_folders(root, fakes, metrics="psnr", progress=False)
    assert (result["n_real"], result["n_fake"]) == (4, 6)  # not the 4 masks, not test_set
    reals = seen_reals[-1][:, 0].numpy()
    assert reals.shape == (4, 16, 16) and reals.max() <= BRIGHTEST  # no white mask pixel
    files = sorted((root / "training_set").glob("*HC.png"))
    assert np.array_equal(reals, _fitted(files, 16, "crop"))  # the training fit, by default
    inner = evaluate_folders(root / "training_set", fakes, metrics="psnr", progress=False)
    assert inner["n_real"] == 4 and np.array_equal(seen_reals[-1], seen_reals[0])


def test_planes_reals_are_the_filtered_rows_at_the_fit(tmp_path, no_network, seen_reals):
    root = write_planes(tmp_path / "planes")
    fakes = write_fakes(tmp_path / "fake", n=5, size=16)
    real = real_data(root, fit="squash", **KEPT)
    result = evaluate_folders(real, fakes, metrics="psnr,ssim", progress=False)
    assert result["n_real"] == 3
    reals = seen_reals[-1][:, 0].numpy()
    assert reals.max() <= BRIGHTEST  # every filtered-out row's image is white
    files = sorted((root / "Images").glob("Patient0000[23]_Plane3_*.png"))
    assert np.array_equal(reals, _fitted(files, 16, "squash"))
    test_rows = real_data(root, fit="pad", train_split=False, **KEPT)
    assert evaluate_folders(test_rows, fakes, metrics="psnr", progress=False)["n_real"] == 2
    assert seen_reals[-1][:, 0, 0].max() == 0  # pad: the letterbox's black bar on top


def test_cli_says_which_kind_it_picked(tmp_path, no_network, capsys):
    hc18 = write_hc18(tmp_path / "hc18")
    planes = write_planes(tmp_path / "planes")
    fakes = write_fakes(tmp_path / "fake", n=6, size=16)
    assert main(["evaluate", "--real", str(hc18), "--fake", str(fakes), "--metrics", "psnr"]) == 0
    out = capsys.readouterr()
    assert re.search(r"--real \S+hc18: hc18 \(.*masks left out", out.err)
    assert "4 / 6" in out.out
    args = ["evaluate", "--real", str(planes), "--fake", str(fakes), "--metrics", "psnr",
            "--plane", "Fetal brain", "--brain-plane", "Trans-cerebellum", "--train-split", "1",
            "--fit", "pad"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr()
    assert ": planes (" in out.err and "1 / 6" in out.out
    assert main([*args[:-2], "--real-kind", "planes"]) == 0
    assert "fetalgan: --real" not in capsys.readouterr().err  # nothing picked, nothing to say


@pytest.mark.parametrize(
    "option, value, choices",
    [
        ("--fit", "stretch", ("crop", "squash", "pad")),
        ("--real-kind", "hc19", ("auto", "hc18", "planes", "folder")),
        ("--train-split", "yes", ("1", "0")),
    ],
)
def test_cli_bad_values_name_the_choices(tmp_path, capsys, option, value, choices):
    with pytest.raises(SystemExit) as exited:
        main(["evaluate", "--real", str(tmp_path), "--fake", str(tmp_path), option, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert option in err and value in err and all(choice in err for choice in choices)


def test_every_error_names_options_that_exist(tmp_path, no_network, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    options = set(re.findall(r"--[a-z][a-z-]*", capsys.readouterr().out))
    hc18 = write_hc18(tmp_path / "hc18")
    planes = write_planes(tmp_path / "planes")
    fakes = write_fakes(tmp_path / "fake", n=4, size=16)
    masks = tmp_path / "masks"
    masks.mkdir()
    write_png(np.zeros((8, 8), np.uint8), masks / "000_HC_Annotation.png")
    wide = tmp_path / "wide"
    wide.mkdir()
    write_png(np.zeros((16, 24), np.uint8), wide / "a.png")
    mixed = write_fakes(tmp_path / "mixed", n=2, size=16)
    write_png(np.zeros((8, 8), np.uint8), mixed / "z.png")
    cases = [
        ["--real", str(hc18), "--fake", str(fakes), "--plane", "Fetal brain"],
        ["--real", str(tmp_path / "nowhere"), "--fake", str(fakes)],
        ["--real", str(planes), "--fake", str(fakes), "--brain-plane", "Trans-cerebelum"],
        ["--real", str(planes), "--fake", str(fakes), "--real-kind", "hc18"],
        ["--real", str(masks), "--fake", str(fakes)],
        ["--real", str(hc18), "--fake", str(wide)],
        ["--real", str(hc18), "--fake", str(mixed)],
        ["--real", str(hc18), "--fake", str(fakes), "--paired"],
        ["--real", str(hc18), "--fake", str(fakes), "--fit", "pad", "--paired"],
    ]
    for args in cases:
        assert main(["evaluate", "--metrics", "psnr", *args]) == 2, args
        err = capsys.readouterr().err
        assert "fetalgan: error: " in err, args
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", err))
        assert named <= options, (args, err)
        assert "resolution" not in err  # the old advice: an option evaluate never had


@pytest.mark.slow
def test_fid_agrees_with_pytorch_fid_on_the_same_folders(tmp_path, monkeypatch):
    """pytorch-fid, run offline on our weights placed in its hub cache, is the reference. The
    reals are at the fakes' size, so evaluate uses them as they are, as pytorch-fid does."""
    from pytorch_fid.fid_score import calculate_fid_given_paths

    weights = inception.find_fid_weights()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    inception.save_pytorch_fid_weights(inception.hub_weights_path(), weights)
    real = write_blobs(tmp_path / "real", 20, (32, 32), seed=0)
    fake = write_blobs(tmp_path / "fake", 16, (32, 32), seed=1, noise=35.0)
    reference = calculate_fid_given_paths([str(real), str(fake)], 50, "cpu", 2048, num_workers=0)
    ours = evaluate_folders(real, fake, metrics=("fid",), device="cpu", progress=False)
    assert reference > 1.0
    assert ours["fid"] == pytest.approx(reference, abs=0.01)
    assert ours["weights_sha256"] == inception.sha256_file(inception.hub_weights_path())
