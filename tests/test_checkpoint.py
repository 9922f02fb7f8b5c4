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
