"""us2mri and cyclegan: two-domain training, each switch, exact resume, unpaired sampling,
held-out evaluation inputs and ``fetalgan translate``."""

import numpy as np
import pytest
import torch
from model_helpers import tiny_config

from fetalgan import sampling
from fetalgan.checkpoint import load_checkpoint
from fetalgan.config import ConfigError, TrainConfig, with_overrides
from fetalgan.data import translation_inputs
from fetalgan.data.phantom import phantom_images
from fetalgan.images import read_grey, write_png
from fetalgan.models import build, family, registry, translation
from fetalgan.train import StepContext, _target_batches, train
from fetalgan.translate import translate_folder

TWO_DOMAINS = {
    "ndf": 8,
    "data.order": "listed",  # US heads 0..11
    "target_data.kind": "phantom",
    "target_data.modality": "mri",
    "target_data.phantom_n": 16,
    "target_data.size": 4,
    "target_data.order": "listed",
    "target_data.skip": 12,  # MR heads 12..15
}
TINY_US2MRI = {"us2mri.width": 4, "us2mri.latent_blocks": 1}
TINY_CYCLEGAN = {"cyclegan.width": 4, "cyclegan.blocks": 1}


def tiny(tmp_path, model: str, **overrides) -> TrainConfig:
    sizes = TINY_US2MRI if model == "us2mri" else TINY_CYCLEGAN
    cfg = TWO_DOMAINS | {"target_data.cache_dir": str(tmp_path / "cache")} | sizes
    return tiny_config(tmp_path, model, cfg | overrides)


@pytest.mark.parametrize("model", ["us2mri", "cyclegan"])
def test_trains_resumes_exactly_and_translates_held_out_us(tmp_path, model):
    extra = {"us2mri.aux3d": True, "data.phantom_slices": 0.4} if model == "us2mri" else {}
    cfg = tiny(tmp_path, model, **extra)
    straight = tmp_path / "straight"
    out = train(cfg, run_dir=straight, progress=False)
    assert out.epoch == 2 and all(np.isfinite(v) and v > 0 for v in out.losses.values())
    first = tmp_path / "first"
    train(with_overrides(cfg, {"epochs": 1}), run_dir=first, progress=False)
    resumed = tmp_path / "resumed"
    train(cfg, resume=first / "checkpoints" / "last.pt", run_dir=resumed, progress=False)
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert a["networks"].keys() == b["networks"].keys()
    for name, sa in a["networks"].items():
        sb = b["networks"][name]
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name

    # the evaluation's "fakes": held-out US heads translated to MR at the model's size
    gen = torch.Generator().manual_seed(0)
    us = sampling.latents(3, cfg, gen)
    assert us.shape == (3, 4 if model == "us2mri" else 1, 32, 32)
    indices = translation_inputs.heldout_indices(3, cfg, torch.Generator().manual_seed(0))
    assert min(indices) >= 16  # past both training pools
    step = cfg.us2mri.slice_step if model == "us2mri" else None  # us2mri asks for neighbours
    assert registry.spec(model).source_step(cfg) == step
    source = translation_inputs.phantom_source(cfg, indices, 32, step)
    assert torch.equal(us, source.float().div(127.5).sub(1.0))


def test_target_batches_are_seeded_unpaired_and_cover_the_target(tmp_path):
    cfg = tiny(tmp_path, "cyclegan")
    images = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 1, 4, 4).contiguous()
    cfg = with_overrides(
        cfg, {"target_data.augment.hflip": False, "target_data.augment.rotate_deg": 0.0}
    )

    def levels(batch):
        return ((batch[:, 0, 0, 0] + 1) * 127.5).round().long().tolist()

    torch.manual_seed(0)
    take = _target_batches(images, cfg, epoch=3, rank=0, memory_format=torch.contiguous_format)
    first = levels(take(3)) + levels(take(4))
    assert sorted(first[:5]) == [0, 1, 2, 3, 4]  # a permutation, then it cycles
    assert first[5:] == first[:2]
    torch.manual_seed(123)  # the global RNG does not decide the order: a resume repeats it
    again = _target_batches(images, cfg, epoch=3, rank=0, memory_format=torch.contiguous_format)
    assert levels(again(7)) == first
    orders = {
        tuple(levels(_target_batches(images, cfg, e, 0, torch.contiguous_format)(5)))
        for e in range(6)
    }
    assert len(orders) > 1  # a new order each epoch


def test_overlapping_phantom_domains_are_refused(tmp_path):
    cfg = tiny(tmp_path, "cyclegan", **{"target_data.skip": 8})  # heads 8..11 in both
    with pytest.raises(ValueError, match="target_data: 4 phantom heads .* pair the domains"):
        train(cfg, run_dir=tmp_path / "run", progress=False)


@pytest.mark.parametrize(
    "switches, present, absent",
    [
        ({}, {"latent_disc", "structure_disc"}, set()),
        ({"us2mri.latent_adversarial": False}, {"structure_disc"}, {"latent_disc"}),
        ({"us2mri.structural": False}, {"latent_disc"}, {"structure_disc"}),
        ({"us2mri.attention": False}, set(), set()),
        ({"us2mri.aux3d": True}, set(), set()),
    ],
)
def test_each_switch_changes_the_model_and_a_step_runs(tmp_path, switches, present, absent):
    torch.manual_seed(0)
    cfg = tiny(tmp_path, "us2mri", **switches)
    nets = build(cfg)
    assert present <= nets.keys() and not absent & nets.keys()
    has_attention = nets["mr_decoder"].attention is not None
    assert has_attention == cfg.us2mri.attention
    channels = nets["us_encoder"].down[0][0].in_channels
    assert channels == (4 if cfg.us2mri.aux3d else 1)
    model = family("us2mri")
    opts = model.make_optimizers(cfg, nets)
    ctx = StepContext(torch.device("cpu"), None, nets)
    ctx.target = torch.rand(2, 1, 32, 32) * 2 - 1
    before = {k: v.clone() for k, v in nets["us_encoder"].state_dict().items()}
    losses = model.train_step(nets, opts, torch.rand(2, channels, 32, 32) * 2 - 1, cfg, ctx)
    assert losses.shape == (3,) and torch.isfinite(losses).all()
    after = nets["us_encoder"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the US encoder learnt
    out = model.translate(nets, torch.zeros(1, channels, 32, 32), cfg)
    assert out.shape == (1, 1, 32, 32)


def test_cross_modal_attention_reads_the_other_modality():
    from fetalgan.models.us2mri.model import CrossModalAttention

    torch.manual_seed(0)
    block = CrossModalAttention(16)
    query = torch.randn(1, 16, 8, 8)
    assert torch.equal(block(query, torch.randn(1, 16, 8, 8)), query)  # gamma 0: identity
    block.gamma.data.fill_(1.0)
    a, b = block(query, torch.randn(1, 16, 8, 8)), block(query, torch.randn(1, 16, 8, 8))
    assert not torch.allclose(a, b)  # the output depends on the context


def test_structure_map_ignores_contrast_and_follows_edges():
    image = torch.full((1, 1, 32, 32), -0.5)
    image[..., 10:20, 10:20] = 0.5
    edges = translation.structure_map(image)
    assert torch.allclose(edges, translation.structure_map(image * 0.3), atol=1e-4)  # no contrast
    assert edges[0, 0, 15, 10] > 2 * edges[0, 0, 15, 15]  # strong on the square's edge


def test_config_needs_a_target_domain_for_translators_only(tmp_path):
    base = tiny(tmp_path, "us2mri")
    with pytest.raises(ConfigError, match="target_data: model us2mri translates"):
        with_overrides(TrainConfig(), {"model": "us2mri"})
    with pytest.raises(ConfigError, match="target_data: only us2mri, cyclegan"):
        with_overrides(base, {"model": "dcgan"})
    with pytest.raises(ConfigError, match="us2mri.aux3d: needs neighbouring slices"):
        with_overrides(base, {"us2mri.aux3d": True, "data.kind": "folder", "data.root": "x"})
    with pytest.raises(ConfigError, match="target_data.modality: unknown value 'ct'"):
        with_overrides(base, {"target_data.modality": "ct"})


def test_translate_writes_one_png_per_input_same_name_and_size(tmp_path):
    cfg = tiny(tmp_path, "cyclegan", epochs=1, eval_n=2)
    train(cfg, run_dir=tmp_path / "run", progress=False)
    us_dir = tmp_path / "us"
    us_dir.mkdir()
    write_png(phantom_images([900], 32, 0)[0], us_dir / "square.png")
    write_png(phantom_images([901], 48, 0)[0][:, :40], us_dir / "wide.png")  # 40 x 48
    (us_dir / "notes.txt").write_text("not an image")
    paths = translate_folder(
        tmp_path / "run" / "checkpoints" / "last.pt", us_dir, tmp_path / "mr", progress=False
    )
    assert [p.name for p in paths] == ["square.png", "wide.png"]
    assert read_grey(paths[0]).shape == (32, 32)
    assert read_grey(paths[1]).shape == (48, 40)
    with pytest.raises(FileNotFoundError, match="--in: .* is not a folder"):
        translate_folder(tmp_path / "run" / "checkpoints" / "last.pt", tmp_path / "no", tmp_path)
