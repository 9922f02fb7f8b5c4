"""``fetalgan evaluate --paired``: SSIM, PSNR and normalised MI of translations against their
ground truth, paired by file name, on fixtures with known values."""

import json
import math

import numpy as np
import pytest

from fetalgan.cli import main
from fetalgan.evaluate import evaluate_paired, paired_scores
from fetalgan.images import write_png


def _ramp(offset: int = 0) -> np.ndarray:
    return (np.add.outer(np.arange(32), np.arange(32)) * 3 + offset).clip(0, 255).astype(np.uint8)


def test_paired_scores_known_values():
    truth = np.stack([_ramp(), _ramp()])
    fake = np.stack([_ramp(), _ramp(5)])  # the ramp tops out at 186: no clipping
    scores = paired_scores(truth, fake)
    assert scores["ssim"][0] == pytest.approx(1.0)  # identical pair
    assert scores["psnr"][0] == math.inf
    assert scores["mi"][0] == pytest.approx(2.0)  # (H + H) / H
    # every pixel off by 5: MSE 25, PSNR = 10 log10(255^2 / 25); a shift keeps all information
    assert scores["psnr"][1] == pytest.approx(10 * math.log10(255**2 / 25))
    assert scores["mi"][1] == pytest.approx(2.0)
    assert 0.9 < scores["ssim"][1] < 1.0
    with pytest.raises(ValueError, match="expected the same number of images"):
        paired_scores(truth, fake[:1])


def test_pairs_by_name_and_averages(tmp_path):
    truth, fake = tmp_path / "truth", tmp_path / "fake"
    truth.mkdir(), fake.mkdir()
    write_png(_ramp(), truth / "b.png")
    write_png(_ramp(), truth / "a.png")
    write_png(_ramp(), truth / "unused.png")  # a ground truth without a fake is ignored
    write_png(_ramp(), fake / "a.png")
    shifted = (_ramp().astype(int) + 10).clip(0, 255).astype(np.uint8)
    write_png(shifted, fake / "b.png")
    result = evaluate_paired(truth, fake)
    assert [row["name"] for row in result["pairs"]] == ["a", "b"]
    assert result["n_pairs"] == 2
    b_psnr = paired_scores(_ramp()[None], shifted[None])["psnr"][0]
    assert result["pairs"][1]["psnr"] == pytest.approx(b_psnr)
    assert result["ssim"] == pytest.approx((1.0 + result["pairs"][1]["ssim"]) / 2)

    write_png(_ramp(), fake / "c.png")
    with pytest.raises(ValueError, match="1 image.* have no ground truth .* c.png"):
        evaluate_paired(truth, fake)


def test_cli_paired_writes_json_and_names_the_error(tmp_path, capsys):
    truth, fake = tmp_path / "truth", tmp_path / "fake"
    truth.mkdir(), fake.mkdir()
    write_png(_ramp(), truth / "x.png")
    write_png(np.zeros((32, 32), np.uint8), fake / "x.png")
    out = tmp_path / "paired.json"
    assert (
        main(
            ["evaluate", "--paired", "--real", str(truth), "--fake", str(fake), "--json", str(out)]
        )
        == 0
    )
    assert "mean of 1" in capsys.readouterr().out
    assert json.loads(out.read_text())["pairs"][0]["name"] == "x"
    write_png(np.zeros((16, 16), np.uint8), fake / "x.png")
    assert main(["evaluate", "--paired", "--real", str(truth), "--fake", str(fake)]) == 2
    assert "x is 32x32" in capsys.readouterr().err
