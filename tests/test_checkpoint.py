import pytest
import torch

from fetalgan.checkpoint import load_checkpoint, save_checkpoint


def test_roundtrip_and_atomic(tmp_path):
    path = save_checkpoint(
        tmp_path / "c" / "last.pt", {"epoch": 3, "w": torch.arange(4.0), "extra": {"run": "x"}}
    )
    state = load_checkpoint(path)
    assert state["epoch"] == 3 and torch.equal(state["w"], torch.arange(4.0))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"epoch": 1})
    with pytest.raises(Exception, match="pickle|lambda"):  # torch.save fails midway
        save_checkpoint(path, {"epoch": 2, "callback": lambda: None})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_weights_only_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "x": Evil()}, path)
    with pytest.raises(ValueError, match="not a readable fetalgan checkpoint"):
        load_checkpoint(path)


def test_missing_and_foreign(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a fetalgan checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_one_key_list_writes_last_and_best(tmp_path):
    """last.pt holds the keys of checkpoint.KEYS in their order, best.pt the weights subset;
    the subsets are those every existing checkpoint has (the format is unchanged)."""
    from tiny import tiny_train_config

    from fetalgan.checkpoint import KEYS, RESUME_KEYS, WEIGHTS_KEYS
    from fetalgan.evaluation import Objective
    from fetalgan.train import train

    assert WEIGHTS_KEYS == (
        "model", "config", "epoch", "networks", "ema", "history", "objective", "best_value",
        "extra",
    )  # fmt: skip
    assert set(RESUME_KEYS) == {"networks", "optimizers", "epoch", "rng"}
    cfg = tiny_train_config(tmp_path / "cache", epochs=2, ema_decay=0.9, eval_metrics=["lbpv"])
    run = tmp_path / "run"
    train(cfg, run_dir=run, progress=False, objective=Objective("lbpv_l1"), keep_candidates=2)
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    written = [key.name for key in KEYS if key.name != "rng_ranks"]  # rng_ranks: DDP only
    assert list(last) == ["format", *written]
    assert len(last["candidates"]) == 2 and last["epoch"] == 2
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert list(best) == ["format", *WEIGHTS_KEYS, "kind"]
