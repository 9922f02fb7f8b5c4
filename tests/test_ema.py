"""EMA of the generator's weights (``ema_decay``): the update, exact resume, what sampling,
FID, checkpoints and ``generate`` use; and the per-evaluation time fraction."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny import tiny_train_config
from torch import nn

from fetalgan import sampling
from fetalgan.checkpoint import load_checkpoint, load_networks
from fetalgan.config import ConfigError, TrainConfig, validate_train, with_overrides
from fetalgan.ema import RECALIBRATION_N, RECALIBRATION_SEED, GeneratorEMA
from fetalgan.evaluation import eval_fraction
from fetalgan.generate import load_generator
from fetalgan.images import read_grey, write_grid
from fetalgan.models import build, ema_decay
from fetalgan.sampling import sample_images
from fetalgan.train import train


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    return tiny_train_config(tmp_path / "cache", **({"ema_decay": 0.9} | overrides))


def test_update_is_the_warmed_up_moving_average_and_copies_buffers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = GeneratorEMA({"g": net}, ["g"], decay=0.99)
    start = [p.detach().clone() for p in net.parameters()]
    expected = [p.clone() for p in start]
    for step in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)
            net[1].running_mean.add_(0.5)
        decay = min(0.99, (1 + step) / (10 + step))  # the warm-up: 0.1, 0.18, 0.25
        assert ema.current_decay() == pytest.approx(decay)
        ema.update()
        current = [p.detach() for p in net.parameters()]
        expected = [decay * e + (1 - decay) * c for e, c in zip(expected, current, strict=True)]
    for avg, want in zip(ema.averaged["g"].parameters(), expected, strict=True):
        torch.testing.assert_close(avg, want, rtol=1e-6, atol=1e-6)
        assert not avg.requires_grad
    assert torch.equal(ema.averaged["g"][1].running_mean, net[1].running_mean)
    assert ema.steps == 3
    # the trained network is untouched, and sampling swaps in the average only
    assert all(torch.equal(p, s + 3) for p, s in zip(net.parameters(), start, strict=True))
    sampling = ema.sampling_networks({"g": net, "d": "discriminator"})
    assert sampling["g"] is ema.averaged["g"] and sampling["d"] == "discriminator"


def test_batch_norm_statistics_of_the_average_are_its_own(tmp_path):
    """DCGAN's generator has batch norm: the statistics copied from the trained network are
    replaced by the average's own, so eval-mode sampling matches what the average does on a
    batch of its own latents; the trained network, the modes and the global RNG stay as they
    were."""
    cfg = tiny_config(tmp_path)
    torch.manual_seed(0)
    networks = build(cfg)
    ema = GeneratorEMA(networks, ["generator"], decay=0.5)
    trained = networks["generator"]
    with torch.no_grad():  # a trained network that has moved away from its average
        for p in trained.parameters():
            p.mul_(1.5).add_(0.05)
        for m in trained.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.fill_(0.5)
                m.running_var.fill_(4.0)
    ema.update()  # the average now carries the trained network's statistics
    average = ema.averaged["generator"]
    z = sampling.latents(RECALIBRATION_N, cfg, torch.Generator().manual_seed(RECALIBRATION_SEED))

    def mismatch() -> float:
        """How far eval-mode sampling is from the average's own batch statistics."""
        probe = copy.deepcopy(average)
        with torch.no_grad():
            own = probe.train()(z)
            return (probe.eval()(z) - own).abs().max().item()

    assert mismatch() > 0.1  # the copied statistics do not fit the average
    trained_state = {k: v.clone() for k, v in trained.state_dict().items()}
    modes = {name: net.training for name, net in networks.items()}
    average_mode, rng = average.training, torch.get_rng_state()
    ema.recalibrate(networks, cfg, torch.device("cpu"), batch_size=RECALIBRATION_N)
    assert mismatch() < 5e-3  # its own: only the unbiased variance's n/(n-1) differs
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, trained_state[k]) for k, v in trained.state_dict().items())
    assert {name: net.training for name, net in networks.items()} == modes
    assert average.training == average_mode
    assert all(m.momentum == 0.1 for m in average.modules() if isinstance(m, nn.BatchNorm2d))
    # in batches: nearly the same (later layers see earlier ones normalised batch-wise)
    means = [m.running_mean.clone() for m in average.modules() if isinstance(m, nn.BatchNorm2d)]
    ema.recalibrate(networks, cfg, torch.device("cpu"), batch_size=256)
    again = [m.running_mean for m in average.modules() if isinstance(m, nn.BatchNorm2d)]
    for a, b in zip(means, again, strict=True):
        torch.testing.assert_close(a, b, rtol=5e-3, atol=1e-3)


def test_recalibration_is_a_no_op_without_batch_norm():
    net = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))
    ema = GeneratorEMA({"g": net}, ["g"], decay=0.9)
    before = {k: v.clone() for k, v in ema.averaged["g"].state_dict().items()}
    ema.recalibrate({"g": net}, TrainConfig(), torch.device("cpu"))  # no decode is called
    assert all(torch.equal(v, before[k]) for k, v in ema.averaged["g"].state_dict().items())


def test_defaults_by_model_and_checks():
    assert ema_decay(TrainConfig(model="dcgan")) == 0.0  # the paper's DCGAN: raw weights
    for model in ("ddpm", "dsrgan", "tbgan"):
        assert ema_decay(TrainConfig(model=model)) == 0.999
    assert ema_decay(TrainConfig(model="ddpm", ema_decay=0.0)) == 0.0
    assert ema_decay(TrainConfig(model="dcgan", ema_decay=0.95)) == 0.95
    with pytest.raises(ConfigError, match=r"ema_decay: must be in \[0, 1\)"):
        validate_train(TrainConfig(ema_decay=1.0))
    with pytest.raises(ConfigError, match="ema_decay: model cyclegan has no generator"):
        validate_train(with_overrides(TrainConfig(), {"model": "cyclegan", "ema_decay": 0.9}))


def test_resume_continues_the_average_exactly(tmp_path):
    """2 epochs straight == 1 epoch, save, load, 1 more: the same EMA weights, bit for bit."""
    cfg = tiny_config(tmp_path)
    train(cfg, run_dir=tmp_path / "straight", progress=False)
    train(with_overrides(cfg, {"epochs": 1}), run_dir=tmp_path / "first", progress=False)
    first = tmp_path / "first" / "checkpoints" / "last.pt"
    train(cfg, resume=first, run_dir=tmp_path / "resumed", progress=False)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert a["ema"]["steps"] == b["ema"]["steps"] == 2 * 3  # 24 images in batches of 8
    assert a["ema"]["networks"].keys() == {"generator"}  # never the discriminator
    for key, tensor in a["ema"]["networks"]["generator"].items():
        assert torch.equal(tensor, b["ema"]["networks"]["generator"][key]), key
    raw = a["networks"]["generator"]
    averaged = a["ema"]["networks"]["generator"]
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw)  # checkpoints keep both


def test_samples_best_checkpoint_and_generate_use_the_average(tmp_path):
    cfg = tiny_config(tmp_path, eval_metrics=["lbpv"])
    run = tmp_path / "run"
    train(cfg, run_dir=run, progress=False)
    last_file, best_file = run / "checkpoints" / "last.pt", run / "checkpoints" / "best.pt"
    best = load_checkpoint(best_file)
    assert best["kind"] == "weights" and "generator" in best["ema"]["networks"]
    networks, loaded_cfg = load_generator(best_file, device="cpu")
    for key, tensor in networks["generator"].state_dict().items():
        assert torch.equal(tensor, best["ema"]["networks"]["generator"][key]), key

    # the last evaluation's sample grid is the EMA generator's images, not the raw one's
    seed, n = cfg.seed + 1_000_003, cfg.eval_n
    grid = read_grey(run / "samples" / "epoch_0002.png")
    networks, loaded_cfg = load_generator(last_file, device="cpu")
    write_grid(sample_images(networks, loaded_cfg, n, seed=seed), tmp_path / "ema.png", 8)
    assert (read_grey(tmp_path / "ema.png") == grid).all()
    raw = build(loaded_cfg)
    load_networks(raw, load_checkpoint(last_file), last_file)
    for net in raw.values():
        net.eval()
    write_grid(sample_images(raw, loaded_cfg, n, seed=seed), tmp_path / "raw.png", 8)
    assert not (read_grey(tmp_path / "raw.png") == grid).all()


def test_without_ema_checkpoints_hold_no_average(tmp_path):
    cfg = tiny_config(tmp_path, epochs=1, ema_decay=None)  # dcgan's default: off
    train(cfg, run_dir=tmp_path / "run", progress=False)
    assert "ema" not in load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")


def test_each_evaluation_records_its_share_of_the_run_time(tmp_path):
    records = []
    cfg = tiny_config(tmp_path, epochs=3, eval_every=2, ema_decay=None)
    train(cfg, report=records.append, run_dir=tmp_path / "run", progress=False)
    assert [r.epoch for r in records] == [2, 3]
    for i, record in enumerate(records):
        assert record.train_seconds > 0 and record.eval_seconds > 0
        history = [r.to_dict() for r in records[: i + 1]]
        assert record.eval_fraction == pytest.approx(eval_fraction(history))
        assert 0 < record.eval_fraction < 1
        assert record.metrics()["eval_fraction"] == record.eval_fraction
    assert eval_fraction([]) is None
    assert eval_fraction([{"eval_seconds": 1.0, "train_seconds": 3.0}]) == 0.25
