"""The one sampler (fetalgan.sampling): the same images whatever the batch size, from every
caller, without touching the global RNG or the networks' modes; no import circle."""

import subprocess
import sys

import pytest
import torch
from tiny import tiny_train_config

from fetalgan import models
from fetalgan.sampling import (
    EVAL_SEED_OFFSET,
    decode_uint8,
    iter_samples,
    sample_images,
    sampling_batch_size,
)


def test_batches_do_not_change_the_images_the_rng_or_the_modes(tmp_path):
    cfg = tiny_train_config(tmp_path / "cache")
    networks = models.build(cfg)
    networks["generator"].train()
    networks["discriminator"].eval()
    rng = torch.get_rng_state()
    whole = sample_images(networks, cfg, 7, seed=5, batch_size=7)
    batches = list(iter_samples(networks, cfg, 7, seed=5, batch_size=3))
    assert [start for start, _ in batches] == [0, 3, 6]
    assert whole.dtype == torch.uint8 and whole.shape == (7, 1, 32, 32)
    assert torch.equal(torch.cat([images for _, images in batches]), whole)
    assert not torch.equal(sample_images(networks, cfg, 7, seed=6), whole)
    assert torch.equal(torch.get_rng_state(), rng)
    assert networks["generator"].training and not networks["discriminator"].training


def test_counts_are_checked_on_the_call():
    with pytest.raises(ValueError, match="-n: must be > 0"):
        iter_samples({}, None, 0, seed=0)
    with pytest.raises(ValueError, match="--batch-size: must be > 0"):
        iter_samples({}, None, 3, seed=0, batch_size=0)


def test_decode_uint8_runs_in_eval_and_inference_mode(tmp_path):
    cfg = tiny_train_config(tmp_path / "cache")
    networks = models.build(cfg)
    seen = []

    def decode(nets, inputs, cfg):
        seen.append((nets["generator"].training, torch.is_inference_mode_enabled()))
        return torch.zeros(2, 1, 4, 4)

    out = decode_uint8(decode, networks, torch.zeros(2), cfg)
    assert seen == [(False, True)] and networks["generator"].training
    assert out.dtype == torch.uint8 and bool((out == 128).all())


def test_training_evaluates_the_images_generate_gives(tmp_path):
    """The grid of an evaluation is the first images of the sampler at the evaluation seed, on
    the checkpoint's weights (EMA on: the average, recalibrated)."""
    from fetalgan.generate import load_generator
    from fetalgan.images import make_grid, read_grey
    from fetalgan.train import train

    cfg = tiny_train_config(tmp_path / "cache", epochs=1, ema_decay=0.9)
    train(cfg, run_dir=tmp_path / "run", progress=False)
    networks, saved = load_generator(tmp_path / "run" / "checkpoints" / "last.pt", "cpu")
    fakes = sample_images(
        networks, saved, cfg.eval_n, seed=cfg.seed + EVAL_SEED_OFFSET,
        batch_size=sampling_batch_size(saved),
    )  # fmt: skip
    grid = read_grey(tmp_path / "run" / "samples" / "epoch_0001.png")
    assert (grid == make_grid(fakes[:64], nrow=8)).all()


def test_no_import_circle_and_no_torch_on_import():
    code = (
        "import sys, fetalgan.ema, fetalgan.sampling, fetalgan.generate; "
        "print('fetalgan.train' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
