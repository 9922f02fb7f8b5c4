import pytest
import torch
from model_helpers import TINY_UNET, tiny_config

from fetalgan.checkpoint import load_checkpoint
from fetalgan.config import ConfigError, TrainConfig, load_train, with_overrides
from fetalgan.generate import generate
from fetalgan.images import read_grey
from fetalgan.models import build
from fetalgan.models.ddpm import model as ddpm
from fetalgan.train import train


def tiny_ddpm(tmp_path, **overrides) -> TrainConfig:
    return tiny_config(tmp_path, "ddpm", TINY_UNET | {"ddpm.sample_steps": 4} | overrides)


def test_trains_two_intervals_resumes_exactly_and_generates(tmp_path):
    cfg = tiny_ddpm(tmp_path)
    straight = tmp_path / "straight"
    out = train(cfg, run_dir=straight, progress=False)
    assert out.epoch == 2 and out.losses["loss"] > 0
    assert len((straight / "metrics.jsonl").read_text().splitlines()) == 2

    first = tmp_path / "first"
    train(with_overrides(cfg, {"epochs": 1}), run_dir=first, progress=False)
    resumed = tmp_path / "resumed"
    train(cfg, resume=first / "checkpoints" / "last.pt", run_dir=resumed, progress=False)
    a = load_checkpoint(straight / "checkpoints" / "last.pt")["networks"]["unet"]
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")["networks"]["unet"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)

    paths = generate(straight / "checkpoints" / "last.pt", 5, tmp_path / "g", progress=False)
    assert len(paths) == 5 and read_grey(paths[-1]).shape == (32, 32)
    again = generate(
        straight / "checkpoints" / "last.pt", 5, tmp_path / "g2", batch_size=2, progress=False
    )
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]  # DDIM eta 0


def test_ddim_is_deterministic_and_steps_matter():
    torch.manual_seed(0)
    cfg = with_overrides(
        TrainConfig(),
        {
            "model": "ddpm",
            "resolution": 32,
            "ddpm.block_out_channels": [8, 16],
            "ddpm.layers_per_block": 1,
            "ddpm.num_train_timesteps": 50,
            "ddpm.sample_steps": 4,
        },
    )
    unet = build(cfg)["unet"].eval()
    noise = ddpm.latents(2, cfg, torch.Generator().manual_seed(1))
    with torch.no_grad():
        x4 = ddpm.ddim_sample(unet, noise, cfg, steps=4)
        assert torch.equal(x4, ddpm.ddim_sample(unet, noise, cfg, steps=4))
        x8 = ddpm.ddim_sample(unet, noise, cfg, steps=8)
        full = ddpm.ddpm_sample(unet, noise, cfg, generator=torch.Generator().manual_seed(2))
    assert x4.shape == x8.shape == full.shape == (2, 1, 32, 32)
    assert not torch.equal(x4, x8)
    assert x4.abs().max() <= 1 and full.abs().max() <= 1


def test_training_noise_schedule_is_linear_ddpm():
    cfg = TrainConfig(model="ddpm")
    sched = ddpm.train_scheduler(cfg)
    betas = sched.betas
    assert len(betas) == 1000
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    assert torch.allclose(betas[1:] - betas[:-1], betas[1:2] - betas[:1], atol=1e-9)


def test_strict_ddpm_section(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: ddpm\nddpm: {sample_step: 40}\n")
    with pytest.raises(
        ConfigError, match=r"ddpm\.sample_step: unknown key; expected one of .*sample_steps"
    ):
        load_train(bad)
    with pytest.raises(
        ConfigError, match=r"ddpm\.sample_steps: must be <= ddpm\.num_train_timesteps"
    ):
        with_overrides(TrainConfig(), {"model": "ddpm", "ddpm.sample_steps": 2000})
    with pytest.raises(
        ConfigError, match=r"ddpm\.block_out_channels: .*too many for resolution 32"
    ):
        with_overrides(
            TrainConfig(),
            {"model": "ddpm", "resolution": 32, "ddpm.block_out_channels": [8, 8, 8, 8, 8, 8, 8]},
        )


def test_pretrained_must_be_a_local_unet_directory(tmp_path):
    cfg = with_overrides(
        TrainConfig(), {"model": "ddpm", "ddpm.pretrained": str(tmp_path / "none")}
    )
    with pytest.raises(FileNotFoundError, match="ddpm.pretrained: .*none is not a diffusers"):
        build(cfg)
    # A directory written by save_pretrained loads offline.
    small = tiny_ddpm(tmp_path)
    unet = build(small)["unet"]
    unet.save_pretrained(tmp_path / "unet")
    again = build(with_overrides(small, {"ddpm.pretrained": str(tmp_path / "unet")}))["unet"]
    first = next(iter(unet.state_dict()))
    assert torch.equal(unet.state_dict()[first], again.state_dict()[first])
