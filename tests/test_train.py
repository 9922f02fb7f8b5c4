import json

import pytest
import torch
from tiny import tiny_train_config

from fetalgan import models
from fetalgan.checkpoint import load_checkpoint
from fetalgan.config import TrainConfig, with_overrides
from fetalgan.generate import generate
from fetalgan.images import list_images, read_grey
from fetalgan.train import train


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    # device cpu: the bit-exact tests are CPU tests (GPU: a tolerance, see below)
    return tiny_train_config(tmp_path / "cache", **overrides)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_resume_is_exact(tmp_path, precision):
    """2 epochs straight == 1 epoch, save, load, 1 more: bit-identical weights."""
    cfg = tiny_config(tmp_path, precision=precision)
    straight = tmp_path / "straight"
    train(cfg, run_dir=straight, progress=False)

    first = tmp_path / "first"
    train(with_overrides(cfg, {"epochs": 1}), run_dir=first, progress=False)
    resumed = tmp_path / "resumed"
    train(cfg, resume=first / "checkpoints" / "last.pt", run_dir=resumed, progress=False)

    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for name in ("generator", "discriminator"):
        assert_same_weights(a["networks"][name], b["networks"][name])
    assert a["optimizers"]["generator"]["state"][0]["exp_avg"].equal(
        b["optimizers"]["generator"]["state"][0]["exp_avg"]
    )
    assert a["history"][-1]["losses"]["loss_g"] == b["history"][-1]["losses"]["loss_g"]


def test_same_seed_same_losses_other_seed_differs(tmp_path):
    cfg = tiny_config(tmp_path, epochs=1)
    one = train(cfg, run_dir=tmp_path / "a", progress=False)
    two = train(cfg, run_dir=tmp_path / "b", progress=False)
    three = train(with_overrides(cfg, {"seed": 1}), run_dir=tmp_path / "c", progress=False)
    assert one.losses["loss_g"] == two.losses["loss_g"]
    assert one.losses["loss_g"] != three.losses["loss_g"]


def test_report_and_run_dir(tmp_path):
    calls = []
    cfg = tiny_config(tmp_path, epochs=3, eval_every=2)
    out = train(
        cfg,
        report=calls.append,
        run_dir=tmp_path / "run",
        progress=False,
        extra={"run_id": "abc"},
    )
    assert [e.epoch for e in calls] == [2, 3]  # every eval_every, and the last epoch
    assert out == calls[-1]
    assert calls[-1].checkpoint == str(tmp_path / "run" / "checkpoints" / "last.pt")
    assert load_checkpoint(calls[-1].checkpoint)["extra"] == {"run_id": "abc"}
    assert calls[-1].n_fake == 16 and set(calls[-1].losses) == {"loss_g", "loss_d"}
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [2, 3]
    grid = read_grey(tmp_path / "run" / "samples" / "epoch_0003.png")
    assert grid.shape == (2 * 34 + 2, 8 * 34 + 2)  # 16 images of 32 px, 8 per row
    # no eval_metrics and no objective: nothing says which evaluation is best, so no best.pt
    assert not (tmp_path / "run" / "checkpoints" / "best.pt").exists()


def test_non_finite_loss_stops_with_clear_error(tmp_path, monkeypatch):
    real_build = models.family("dcgan").build

    def nan_build(cfg):
        networks = real_build(cfg)
        with torch.no_grad():
            for p in networks["discriminator"].parameters():
                p.fill_(float("nan"))
        return networks

    monkeypatch.setattr(models.family("dcgan"), "build", nan_build)
    with pytest.raises(FloatingPointError, match="non-finite loss at epoch 1"):
        train(tiny_config(tmp_path, epochs=1), run_dir=tmp_path / "nan", progress=False)


def test_fail_at_epoch_knob_only_before_resume(tmp_path):
    cfg = tiny_config(tmp_path, epochs=2, fail_at_epoch=2)
    with pytest.raises(RuntimeError, match="simulated crash at epoch 2"):
        train(cfg, run_dir=tmp_path / "r", progress=False)
    out = train(
        cfg,
        resume=tmp_path / "r" / "checkpoints" / "last.pt",
        run_dir=tmp_path / "r",
        progress=False,
    )
    assert out.epoch == 2


def test_generate_count_size_and_determinism(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tmp_path, epochs=1), run_dir=run, progress=False)
    ckpt = run / "checkpoints" / "last.pt"
    paths = generate(ckpt, 10, tmp_path / "g1", seed=3, batch_size=4, progress=False)
    assert len(paths) == 10 and len(list((tmp_path / "g1").glob("img_*.png"))) == 10
    assert read_grey(paths[0]).shape == (32, 32)
    assert (tmp_path / "g1" / "grid.png").is_file()
    assert list_images(tmp_path / "g1") == paths  # the grid is not read back as a sample
    again = generate(ckpt, 10, tmp_path / "g2", seed=3, batch_size=7, progress=False)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    other = generate(ckpt, 2, tmp_path / "g3", seed=4, progress=False)
    assert other[0].read_bytes() != paths[0].read_bytes()


@pytest.mark.parametrize("mode", ["min", "max"])
def test_best_checkpoint_follows_the_objective(tmp_path, mode):
    """best.pt holds the evaluation with the best value of the given metric and mode (not the
    lowest FID whatever the sweep asks), and best_<metric> tracks the best so far."""
    from fetalgan.evaluation import Objective

    cfg = tiny_config(tmp_path, epochs=4, eval_every=1, eval_metrics=["lbpv"])
    objective = Objective("lbpv_l1", mode)
    calls = []
    train(cfg, report=calls.append, run_dir=tmp_path / mode, progress=False, objective=objective)
    values = [e.values["lbpv_l1"] for e in calls]
    assert len(set(values)) == 4  # distinct values: the choice below is not a tie
    pick = min if mode == "min" else max
    best_epoch = calls[values.index(pick(values))].epoch
    best = load_checkpoint(tmp_path / mode / "checkpoints" / "best.pt")
    assert best["epoch"] == best_epoch
    running = [pick(values[: i + 1]) for i in range(4)]
    assert [e.best_value for e in calls] == running
    assert [e.metrics()["best_lbpv_l1"] for e in calls] == running
    assert [e.is_best for e in calls] == [v == r for v, r in zip(values, running, strict=True)]


def test_objective_metric_must_be_computed(tmp_path):
    from fetalgan.evaluation import Objective

    cfg = tiny_config(tmp_path, eval_metrics=["lbpv"])
    with pytest.raises(ValueError, match="'kid_mean' needs 'kid' in eval_metrics"):
        train(cfg, run_dir=tmp_path / "r", progress=False, objective=Objective("kid_mean"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_resume_on_gpu_matches_within_tolerance(tmp_path):
    """The GPU variant of test_resume_is_exact: with deterministic kernels, 2 epochs straight
    and 1 + resumed 1 agree within a tolerance (cuDNN/cuBLAS are not bit-exact by contract)."""
    cfg = tiny_config(tmp_path, device="cuda", deterministic=True)
    train(cfg, run_dir=tmp_path / "straight", progress=False)
    train(with_overrides(cfg, {"epochs": 1}), run_dir=tmp_path / "first", progress=False)
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    train(cfg, resume=last, run_dir=tmp_path / "resumed", progress=False)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    for name in ("generator", "discriminator"):
        for key, tensor in a["networks"][name].items():
            torch.testing.assert_close(tensor, b["networks"][name][key], rtol=1e-4, atol=1e-5)


def test_deterministic_is_set_per_run(tmp_path):
    """``deterministic`` sets torch's switch for the run; the next run without it clears it
    (a reused trial process must not inherit it)."""
    try:
        cfg = tiny_config(tmp_path, epochs=1, deterministic=True)
        train(cfg, run_dir=tmp_path / "d", progress=False)
        assert torch.are_deterministic_algorithms_enabled()
        train(tiny_config(tmp_path, epochs=1), run_dir=tmp_path / "n", progress=False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_auto_precision_takes_only_native_bf16_on_cuda(monkeypatch):
    """A pre-Ampere GPU emulates bf16 (torch's default answer counts emulation): ``auto``
    stays fp32 there; an explicit ``bf16`` is honoured."""
    from fetalgan.sampling import autocast_dtype

    def emulated_only(including_emulation=True):
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", emulated_only)
    cuda = torch.device("cuda")  # only the device object: nothing runs on it
    assert autocast_dtype("auto", cuda) is None
    assert autocast_dtype("bf16", cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert autocast_dtype("auto", cuda) is torch.bfloat16


def test_sampling_batch_size_by_resolution():
    from fetalgan.sampling import sampling_batch_size

    sizes = {
        r: sampling_batch_size(with_overrides(TrainConfig(), {"resolution": r}))
        for r in (32, 64, 128, 256)
    }
    assert sizes == {32: 256, 64: 256, 128: 64, 256: 16}
    assert sampling_batch_size(with_overrides(TrainConfig(), {"eval_batch_size": 5})) == 5


@pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no native bf16"
)
def test_evaluation_samples_in_eval_batches_under_the_training_autocast(tmp_path, monkeypatch):
    dcgan = models.family("dcgan")
    real_decode = dcgan.decode
    seen = []

    def recording_decode(networks, z, cfg):
        seen.append((z.shape[0], torch.is_autocast_enabled("cpu")))
        return real_decode(networks, z, cfg)

    monkeypatch.setattr(dcgan, "decode", recording_decode)
    cfg = tiny_config(tmp_path, epochs=1, eval_n=20, eval_batch_size=8, precision="bf16")
    train(cfg, run_dir=tmp_path / "run", progress=False)
    assert seen == [(8, True), (8, True), (4, True)]
    seen.clear()
    train(with_overrides(cfg, {"precision": "fp32"}), run_dir=tmp_path / "fp32", progress=False)
    assert [autocast for _, autocast in seen] == [False, False, False]


def test_best_is_weights_only_and_cannot_be_resumed(tmp_path):
    """best.pt keeps what generate needs (networks, config), not optimiser or RNG state; a
    resume from it is refused with a message saying what to resume from; last.pt resumes."""
    from fetalgan.checkpoint import is_full

    cfg = tiny_config(tmp_path, epochs=1, eval_metrics=["lbpv"])
    train(cfg, run_dir=tmp_path / "r", progress=False)
    best = load_checkpoint(tmp_path / "r" / "checkpoints" / "best.pt")
    last = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    assert not is_full(best) and is_full(last)
    assert "optimizers" not in best and "rng" not in best
    assert best["networks"].keys() == last["networks"].keys()
    assert_same_weights(best["networks"]["generator"], last["networks"]["generator"])
    best_size = (tmp_path / "r" / "checkpoints" / "best.pt").stat().st_size
    assert best_size < 0.6 * (tmp_path / "r" / "checkpoints" / "last.pt").stat().st_size
    with pytest.raises(ValueError, match="holds weights only .* resume from"):
        train(
            with_overrides(cfg, {"epochs": 2}),
            resume=tmp_path / "r" / "checkpoints" / "best.pt",
            run_dir=tmp_path / "again",
            progress=False,
        )
    from fetalgan.generate import generate

    assert (
        len(generate(tmp_path / "r" / "checkpoints" / "best.pt", 3, tmp_path / "g", progress=False))
        == 3
    )
