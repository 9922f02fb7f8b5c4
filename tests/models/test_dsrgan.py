import contextlib
import json

import numpy as np
import pytest
import torch
from model_helpers import TINY_UNET, tiny_config
from skimage.exposure import match_histograms

from fetalgan.checkpoint import load_checkpoint
from fetalgan.config import ConfigError, TrainConfig, load_train, with_overrides
from fetalgan.generate import generate
from fetalgan.images import read_grey
from fetalgan.models import build, registry
from fetalgan.models.dsrgan import model as dsrgan
from fetalgan.train import train


def tiny_dsrgan(tmp_path, **overrides) -> TrainConfig:
    return tiny_config(
        tmp_path,
        "dsrgan",
        TINY_UNET
        | {
            "batch_size": 5,  # 12 images: batches of 5, 5, 2 -> 3 steps per epoch
            "epochs": 3,
            "eval_n": 3,
            "ndf": 8,
            "ddpm.sample_steps": 3,
            "dsrgan.epochs_a": 1,
            "dsrgan.sr_blocks": 2,
            "dsrgan.sr_width": 8,
        }
        | overrides,
    )


def test_stages_resume_exactly_across_the_boundary_and_generate_twice_the_size(tmp_path):
    cfg = tiny_dsrgan(tmp_path)
    straight = tmp_path / "straight"
    train(cfg, run_dir=straight, progress=False)
    lines = (straight / "metrics.jsonl").read_text().splitlines()
    history = [json.loads(line) for line in lines]
    # Epoch 1 is stage A (diffusion only), epochs 2-3 stage B (SR GAN only).
    assert history[0]["losses"]["loss_diffusion"] > 0 and history[0]["losses"]["loss_sr_g"] == 0
    assert history[1]["losses"]["loss_diffusion"] == 0 and history[1]["losses"]["loss_sr_g"] > 0
    state = load_checkpoint(straight / "checkpoints" / "last.pt")
    sr_state = state["networks"]["sr_generator"]
    assert int(sr_state["steps"]) == 9 and int(sr_state["sr_steps"]) == 6
    assert sr_state["real_hist"].sum() == 3 * 12 * 32 * 32  # 3 epochs x 12 images

    # Resume at the stage boundary: epoch 1 (stage A) saved, epochs 2-3 (stage B) resumed.
    part = tmp_path / "part"
    train(with_overrides(cfg, {"epochs": 1}), run_dir=part, progress=False)
    resumed = tmp_path / "resumed"
    train(cfg, resume=part / "checkpoints" / "last.pt", run_dir=resumed, progress=False)
    other = load_checkpoint(resumed / "checkpoints" / "last.pt")["networks"]
    for name, ref in state["networks"].items():
        assert all(torch.equal(ref[k], other[name][k]) for k in ref), name

    paths = generate(straight / "checkpoints" / "last.pt", 4, tmp_path / "g", progress=False)
    assert len(paths) == 4 and read_grey(paths[0]).shape == (64, 64)


def test_sr_generator_doubles_the_size_and_its_blocks_add_their_input():
    torch.manual_seed(0)
    sr = dsrgan.SRGenerator(blocks=2, width=8)
    x = torch.rand(3, 1, 16, 24) * 2 - 1
    assert sr(x).shape == (3, 1, 32, 48)
    block = sr.body[0]
    h = torch.randn(2, 8, 10, 10)
    assert not torch.allclose(block(h), h)
    with torch.no_grad():
        for conv in (block.conv1, block.conv2):
            conv.weight.zero_()
            conv.bias.zero_()
    assert torch.equal(block(h), h)  # zeroed convs: the skip alone, input unchanged


def test_histogram_matching_equals_skimage():
    rng = np.random.default_rng(0)
    reference = rng.normal(60, 20, (64, 32)).clip(0, 255).astype(np.uint8)
    counts = torch.from_numpy(np.bincount(reference.reshape(-1), minlength=256)).double()
    source = rng.normal(150, 40, (3, 1, 32, 32)).clip(0, 255).astype(np.uint8)
    images = torch.from_numpy(source).float() / 127.5 - 1
    matched = dsrgan.match_histogram(images, counts)
    for i in range(3):
        expected = match_histograms(source[i, 0], reference)  # the same CDF mapping
        got = (matched[i, 0].double() + 1) * 127.5
        assert np.allclose(got.numpy(), expected, atol=1e-4)
    assert abs(((matched + 1) * 127.5).mean().item() - reference.mean()) < 3


def test_steps_per_epoch_follows_the_loop():
    cfg = with_overrides(TrainConfig(), {"model": "dsrgan", "batch_size": 5, "data.size": 12})
    assert dsrgan.steps_per_epoch(cfg) == 3  # 5, 5, 2
    cfg.data.size = 11  # 5, 5, 1 (a batch of one is skipped)
    assert dsrgan.steps_per_epoch(cfg) == 2
    cfg.data.kind, cfg.data.size = "folder", None
    with pytest.raises(ValueError, match="dsrgan: set data.size"):
        dsrgan.steps_per_epoch(cfg)


def test_strict_dsrgan_section(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: dsrgan\nepochs: 5\ndsrgan: {epoch_a: 2}\n")
    with pytest.raises(
        ConfigError, match=r"dsrgan\.epoch_a: unknown key; expected one of .*epochs_a"
    ):
        load_train(bad)
    with pytest.raises(
        ConfigError, match=r"dsrgan\.epochs_a: stage A cannot be longer than the run"
    ):
        with_overrides(TrainConfig(), {"model": "dsrgan", "epochs": 5, "dsrgan.epochs_a": 6})
    with pytest.raises(ConfigError, match=r"dsrgan\.adv_weight: must be >= 0"):
        with_overrides(TrainConfig(), {"model": "dsrgan", "dsrgan.adv_weight": -1.0})


def test_build_output_size_is_twice_resolution(tmp_path):
    cfg = tiny_dsrgan(tmp_path)
    nets = build(cfg)
    for net in nets.values():
        net.eval()
    z = dsrgan.latents(2, cfg, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = dsrgan.decode(nets, z, cfg)  # before stage B: bilinear x2, no histogram yet
    assert out.shape == (2, 1, 64, 64) and out.abs().max() <= 1


class _Ctx:
    """A loop context that gives the epoch and real images at 2 x resolution."""

    def __init__(self, epoch):
        self.epoch = epoch

    def autocast(self):
        return contextlib.nullcontext()

    def no_sync(self, name):
        return contextlib.nullcontext()


def test_real_at_twice_resolution_and_epoch_from_the_loop(tmp_path):
    cfg = tiny_dsrgan(tmp_path)
    assert registry.spec("dsrgan").real_resolution(cfg) == 64
    nets = build(cfg)
    opts = dsrgan.make_optimizers(cfg, nets)
    real = torch.rand(4, 1, 64, 64) * 2 - 1
    stage_a = dsrgan.train_step(nets, opts, real, cfg, _Ctx(epoch=0))
    assert stage_a[0] > 0 and stage_a[2] == 0
    before = nets["sr_generator"].tail.weight.clone()
    stage_b = dsrgan.train_step(nets, opts, real, cfg, _Ctx(epoch=1))  # ctx.epoch wins
    assert stage_b[0] == 0 and stage_b[2] > 0
    assert not torch.equal(before, nets["sr_generator"].tail.weight)
    assert nets["sr_generator"].real_hist.sum() == 2 * 4 * 32 * 32  # counted at resolution
