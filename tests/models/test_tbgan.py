import contextlib

import pytest
import torch
from model_helpers import tiny_config

from fetalgan.checkpoint import load_checkpoint
from fetalgan.config import ConfigError, TrainConfig, load_train, with_overrides
from fetalgan.generate import generate
from fetalgan.images import read_grey
from fetalgan.models import build, diffaugment
from fetalgan.models.tbgan import model as tbgan
from fetalgan.train import train


def tiny_tbgan(tmp_path, **overrides) -> TrainConfig:
    return tiny_config(
        tmp_path,
        "tbgan",
        {
            "nz": 16,
            "ngf": 8,
            "ndf": 8,
            "betas": [0.0, 0.99],
            "tbgan.w_dim": 16,
            "tbgan.mapping_layers": 2,
            "tbgan.max_width": 32,
            "tbgan.window_size": 4,
            "tbgan.head_dim": 8,
        }
        | overrides,
    )


def test_trains_two_intervals_resumes_exactly_and_generates(tmp_path):
    cfg = tiny_tbgan(tmp_path)
    straight = tmp_path / "straight"
    out = train(cfg, run_dir=straight, progress=False)
    assert out.epoch == 2 and out.losses["r1"] > 0
    first = tmp_path / "first"
    train(with_overrides(cfg, {"epochs": 1}), run_dir=first, progress=False)
    resumed = tmp_path / "resumed"
    train(cfg, resume=first / "checkpoints" / "last.pt", run_dir=resumed, progress=False)
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")
    for name in ("generator", "discriminator"):
        sa, sb = a["networks"][name], b["networks"][name]
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name

    paths = generate(straight / "checkpoints" / "last.pt", 3, tmp_path / "g", progress=False)
    assert len(paths) == 3 and read_grey(paths[0]).shape == (32, 32)


def test_generator_shapes_and_style_dependence(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_tbgan(tmp_path, resolution=64, **{"tbgan.start_resolution": 8})
    nets = build(cfg)
    g, d = nets["generator"], nets["discriminator"]
    assert len(g.stages) == 4  # 8, 16, 32, 64
    # Style layers start at zero (plain LN); give them weights so w matters.
    for m in g.modules():
        if isinstance(m, tbgan.ModulatedLayerNorm):
            torch.nn.init.normal_(m.style.weight, std=0.1)
    z = torch.randn(3, 16)
    x = g(z)
    assert x.shape == (3, 1, 64, 64)
    assert d(x).shape == (3,)
    assert not torch.allclose(x[0], x[1])  # different z, different image


def test_diffaugment_keeps_shape_and_changes_images():
    torch.manual_seed(0)
    x = torch.rand(5, 1, 32, 32) * 2 - 1
    for policies in (["translation"], ["cutout"], ["translation", "cutout"]):
        y = diffaugment.diff_augment(x, policies)
        assert y.shape == x.shape
        assert not torch.equal(y, x)
        assert y.min() >= -1 and y.max() <= 1
    cut = diffaugment.cutout(x)
    cut_area = (cut == -1).float().mean(dim=(1, 2, 3))  # a half-side square, clipped at edges
    assert ((cut_area >= 1 / 16) & (cut_area <= 1 / 4)).all()
    assert torch.equal(diffaugment.diff_augment(x, []), x)
    with pytest.raises(ValueError, match="unknown policy 'colour'"):
        diffaugment.diff_augment(x, ["colour"])


def test_diffaugment_passes_gradients():
    x = torch.randn(2, 1, 16, 16, requires_grad=True)
    diffaugment.diff_augment(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


class _Ctx:
    def autocast(self):
        return contextlib.nullcontext()

    def no_sync(self, name):
        return contextlib.nullcontext()


def test_diffaugment_is_applied_to_real_and_fake_alike(tmp_path, monkeypatch):
    cfg = tiny_tbgan(tmp_path)
    nets = build(cfg)
    opts = tbgan.make_optimizers(cfg, nets)
    calls = []
    original = diffaugment.diff_augment

    def recording(x, policies, **kw):
        calls.append((x, list(policies)))
        return original(x, policies, **kw)

    monkeypatch.setattr(diffaugment, "diff_augment", recording)
    real = torch.rand(4, 1, 32, 32) * 2 - 1
    losses = tbgan.train_step(nets, opts, real, cfg, _Ctx())
    assert losses.shape == (3,) and torch.isfinite(losses).all()
    assert [p for _, p in calls] == [["translation", "cutout"]] * 3
    assert calls[0][0] is real  # D on real
    assert not calls[1][0].requires_grad  # D on fake (detached)
    assert calls[2][0].requires_grad  # G's loss through D on fake
    assert calls[1][0].shape == calls[2][0].shape == real.shape


def test_strict_tbgan_section(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: tbgan\ntbgan: {r1gamma: 1}\n")
    with pytest.raises(
        ConfigError, match=r"tbgan\.r1gamma: unknown key; expected one of .*r1_gamma"
    ):
        load_train(bad)
    with pytest.raises(ConfigError, match=r"tbgan\.diffaugment\[0\]: unknown value 'color'"):
        with_overrides(TrainConfig(), {"model": "tbgan", "tbgan.diffaugment": ["color"]})
    with pytest.raises(ConfigError, match=r"tbgan\.start_resolution: must be a power of two"):
        with_overrides(TrainConfig(), {"model": "tbgan", "tbgan.start_resolution": 6})
