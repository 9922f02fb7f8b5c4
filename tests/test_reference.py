"""The evaluation reference (``eval_reference``): one fixed real set for every trial, and
in-training metrics that equal ``fetalgan evaluate`` on the same fakes and reference."""

from __future__ import annotations

import pytest
from tiny import tiny_train_config

from fetalgan.config import (
    ConfigError,
    TrainConfig,
    load_sweep,
    reference_data,
    with_overrides,
)
from fetalgan.data import load_reference_images, load_training_images
from fetalgan.train import train


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    defaults = {
        "data.size": 16,
        "data.phantom_n": 40,
        "eval_reference.size": 20,
        "eval_reference.seed": 3,
        "epochs": 1,
        "eval_n": 12,
        "eval_metrics": ["lbpv", "mi", "psnr", "ssim"],
    }
    return tiny_train_config(tmp_path / "cache", **(defaults | overrides))


def test_reference_defaults_to_the_whole_dataset_data_names(tmp_path):
    cfg = with_overrides(
        TrainConfig(),
        {"data.size": 10, "data.phantom_n": 30, "data.cache_dir": str(tmp_path), "resolution": 32},
    )
    ref = reference_data(cfg)
    assert (ref.kind, ref.size, ref.phantom_n, ref.cache_dir) == (
        "phantom",
        None,
        30,
        str(tmp_path),
    )
    assert (ref.augment.hflip, ref.augment.rotate_deg) == (False, 0.0)  # never augmented
    reference = load_reference_images(cfg, 32)
    training = load_training_images(cfg.data, 32, seed=cfg.seed, progress=False)
    assert reference.images.shape[0] == 30 and training.images.shape[0] == 10


def test_reference_fields_override_data_and_are_checked():
    cfg = with_overrides(
        TrainConfig(),
        {"data.kind": "planes", "data.root": "data/planes", "data.machine": "Voluson E6",
         "eval_reference.machine": "Aloka", "eval_reference.skip": 5},
    )  # fmt: skip
    ref = reference_data(cfg)
    assert (ref.kind, ref.root, ref.machine, ref.skip) == ("planes", "data/planes", "Aloka", 5)
    with pytest.raises(ConfigError, match=r"eval_reference\.size: 50 is larger .*phantom_n = 40"):
        with_overrides(TrainConfig(), {"data.phantom_n": 40, "eval_reference.size": 50})
    with pytest.raises(ConfigError, match=r"eval_reference\.kind: unknown value 'hc19'"):
        with_overrides(TrainConfig(), {"eval_reference.kind": "hc19"})
    with pytest.raises(ConfigError, match=r"fid_dims: expected one of 64, 192, 768, 2048, got 100"):
        with_overrides(TrainConfig(), {"fid_dims": 100})
    with pytest.raises(ConfigError, match=r"data\.order: unknown value 'first'"):
        with_overrides(TrainConfig(), {"data.order": "first"})


def test_sweep_metric_names_for_the_study_metrics(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\nbase: {eval_metrics: [fid, mi, psnr, lbpv]}\n")
    for metric in ("psnr", "mi_normalised", "mi_bits", "lbpv_v8"):
        assert load_sweep(sweep, [f"metric={metric}", "mode=max"]).metric == metric
    with pytest.raises(ConfigError, match="'mi' is not a logged value; expected mi_normalised"):
        load_sweep(sweep, ["metric=mi"])
    with pytest.raises(ConfigError, match="metric: 'ssim' needs 'ssim' in base.eval_metrics"):
        load_sweep(sweep, ["metric=ssim"])


def test_trials_of_different_data_size_record_the_same_reference(tmp_path):
    small = train(tiny_config(tmp_path), run_dir=tmp_path / "a", progress=False)
    large = train(
        tiny_config(tmp_path, **{"data.size": 24}), run_dir=tmp_path / "b", progress=False
    )
    assert small.reference_n == large.reference_n == small.n_real == 20  # not 16 or 24
    assert small.reference_key == large.reference_key and len(small.reference_key) == 20
    assert small.reference == large.reference
    other = train(
        tiny_config(tmp_path, **{"eval_reference.seed": 4}), run_dir=tmp_path / "c", progress=False
    )
    assert other.reference_key != small.reference_key  # the key follows the images
    assert {"mi_normalised", "mi_bits", "psnr", "ssim", "lbpv_v8"} <= set(small.values)
    assert 1.0 <= small.values["mi_normalised"] <= 2.0 and small.values["mi_bits"] >= 0.0
    assert "reference_n" not in small.metrics() and "reference_key" not in small.metrics()


def _evaluate_like_the_trainer(tmp_path, cfg: TrainConfig, run_dir, metrics) -> tuple[dict, dict]:
    """The trainer's last evaluation, and ``fetalgan evaluate`` on its fakes (regenerated from
    the checkpoint written at that evaluation, with the trainer's sampling seed) against its
    reference written as PNG files."""
    from fetalgan.evaluate import evaluate_folders
    from fetalgan.generate import load_generator
    from fetalgan.images import write_images
    from fetalgan.sampling import sample_images

    evaluation = train(cfg, run_dir=run_dir, progress=False)
    networks, saved_cfg = load_generator(run_dir / "checkpoints" / "last.pt", device="cpu")
    fakes = sample_images(networks, saved_cfg, cfg.eval_n, seed=cfg.seed + 1_000_003)
    write_images(fakes, tmp_path / "fakes")
    reference = load_reference_images(cfg, cfg.resolution)
    write_images(reference.images, tmp_path / "reference")
    result = evaluate_folders(
        tmp_path / "reference",
        tmp_path / "fakes",
        metrics=metrics,
        fid_dims=cfg.fid_dims,
        fid_weights=cfg.fid_weights,
        device="cpu",
        progress=False,
    )
    return evaluation, result


def test_in_training_mi_psnr_ssim_lbpv_equal_evaluate(tmp_path):
    cfg = tiny_config(tmp_path)
    evaluation, result = _evaluate_like_the_trainer(
        tmp_path, cfg, tmp_path / "run", ("mi", "psnr", "ssim", "lbpv")
    )
    got = evaluation.values
    assert result["n_real"] == evaluation.reference_n == 20
    assert result["n_fake"] == evaluation.n_fake == 12
    assert got["mi_normalised"] == result["mi"]  # evaluate's mi is the normalised one
    for key in ("mi_bits", "psnr", "ssim", "lbpv_l1", "lbpv_v8", "lbpv_v240"):
        assert got[key] == result[key], key


def test_in_training_fid_equals_evaluate_at_the_logged_dims(tmp_path):
    from fetalgan.metrics.inception import find_fid_weights

    try:
        weights = str(find_fid_weights())
    except FileNotFoundError as err:
        pytest.skip(f"no FID weights on this machine: {err}")
    cfg = tiny_config(tmp_path, eval_metrics=["fid", "kid"], fid_dims=64, fid_weights=weights)
    evaluation, result = _evaluate_like_the_trainer(tmp_path, cfg, tmp_path / "run", ("fid", "kid"))
    assert evaluation.feature_dim == result["feature_dim"] == 64
    assert evaluation.weights_sha256 == result["weights_sha256"]
    assert evaluation.values["fid"] == pytest.approx(result["fid"], rel=1e-9, abs=1e-9)
    assert evaluation.values["kid_mean"] == pytest.approx(result["kid_mean"], rel=1e-9, abs=1e-12)
    assert evaluation.n_real == result["n_real"] == 20
