"""Bad input at the command line ends in one line, ``fetalgan: error: FILE-or-OPTION: ...``
and exit 2, never a traceback: output paths of the wrong kind, checkpoints that lack a part or
hold another architecture, a run that would take no training step."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch
import yaml

from fetalgan.checkpoint import load_checkpoint, save_checkpoint
from fetalgan.cli import main
from fetalgan.config import load_train
from fetalgan.images import write_png
from fetalgan.train import train

TINY = {
    "resolution": 32,
    "data": {"kind": "phantom", "size": 16, "phantom_n": 16},
    "batch_size": 8,
    "ngf": 8,
    "ndf": 8,
    "nz": 16,
    "epochs": 1,
    "eval_every": 1,
    "eval_n": 8,
    "eval_metrics": ["lbpv"],
    "precision": "fp32",
    "device": "cpu",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(config file, run dir) of a one-epoch tiny run, trained under umask 077."""
    root = tmp_path_factory.mktemp("trained")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "data": {**TINY["data"], "cache_dir": str(root)}}))
    previous = os.umask(0o077)
    try:
        train(load_train(config), run_dir=root / "run", progress=False)
    finally:
        os.umask(previous)
    return config, root / "run"


def one_error(capsys) -> str:
    """The single `fetalgan: error:` line of stderr (progress bars aside); no traceback."""
    err = capsys.readouterr().err.replace("\r", "\n")
    lines = [line for line in err.splitlines() if line.startswith("fetalgan: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_best_checkpoint_is_written_like_the_last_one(trained):
    _, run = trained
    last, best = run / "checkpoints" / "last.pt", run / "checkpoints" / "best.pt"
    assert best.stat().st_mode & 0o777 == last.stat().st_mode & 0o777 == 0o644
    assert load_checkpoint(best)["epoch"] == 1
    assert not [p for p in last.parent.iterdir() if p.name.startswith(".")]  # no temp files


def test_evaluate_json_into_a_folder(tmp_path, capsys):
    for name in ("real", "fake"):
        (tmp_path / name).mkdir()
        write_png(torch.zeros(16, 16, dtype=torch.uint8).numpy(), tmp_path / name / "a.png")
    out = tmp_path / "results"
    out.mkdir()
    args = ["evaluate", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake")]
    assert main([*args, "--metrics", "psnr", "--json", str(out)]) == 2
    assert one_error(capsys).startswith(f"fetalgan: error: --json {out}: is a folder")


def test_generate_out_onto_a_file(trained, tmp_path, capsys):
    _, run = trained
    target = tmp_path / "images.png"
    target.write_bytes(b"not a folder")
    code = main(
        ["generate", "--checkpoint", str(run / "checkpoints" / "best.pt"), "--out", str(target)]
    )
    assert code == 2
    assert one_error(capsys).startswith(
        f"fetalgan: error: --out {target}: exists and is not a folder"
    )
    assert target.read_bytes() == b"not a folder"


@pytest.mark.parametrize("missing", ["config", "networks"])
def test_checkpoint_without_a_part(trained, tmp_path, capsys, missing):
    _, run = trained
    state = load_checkpoint(run / "checkpoints" / "best.pt")
    del state[missing]
    cut = save_checkpoint(tmp_path / "cut.pt", {k: v for k, v in state.items() if k != "format"})
    assert (
        main(["generate", "--checkpoint", str(cut), "-n", "2", "--out", str(tmp_path / "o")]) == 2
    )
    assert one_error(capsys).startswith(f"fetalgan: error: {cut}: {missing}: missing")


def test_resume_from_another_architecture(trained, tmp_path, capsys):
    config, run = trained
    last = run / "checkpoints" / "last.pt"
    args = ["train", str(config), "--resume", str(last), "--out", str(tmp_path / "r"), "--quiet"]
    assert main([*args, "--set", "ngf=16", "--set", "epochs=2"]) == 2
    line = one_error(capsys)
    assert line.startswith(f"fetalgan: error: {last}: networks.generator: another architecture")
    assert "ngf 8" in line  # what it was trained as


def test_an_epoch_without_a_training_step_is_an_error(trained, tmp_path):
    """batch_size 1 is refused when loading a config; a config that slips past (built by hand,
    or an old checkpoint's) stops at its first epoch instead of training nothing."""
    config, _ = trained
    cfg = dataclasses.replace(load_train(config), batch_size=1)
    with pytest.raises(ValueError, match=r"batch_size: epoch 1 took no training step: 16 image"):
        train(cfg, run_dir=tmp_path / "none", progress=False)
