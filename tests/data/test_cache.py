"""Cache locations, keys and atomic files."""

import torch

from fetalgan.data.cache import cache_path, cache_root, load_cached, save_atomic, stable_key


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("FETALGAN_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(str(tmp_path / "cfg")) == tmp_path / "cfg"
    monkeypatch.delenv("FETALGAN_CACHE")
    assert cache_root().parts[-2:] == (".cache", "fetalgan")
    assert cache_path("data", "abc", str(tmp_path)) == tmp_path / "data" / "abc.pt"


def test_stable_key_ignores_dict_order_but_not_values():
    assert stable_key({"a": 1, "b": [1, 2]}) == stable_key({"b": [1, 2], "a": 1})
    assert stable_key({"a": 1}) != stable_key({"a": 2})
    assert len(stable_key({"a": 1})) == 20


def test_save_atomic_round_trip_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "entry.pt"
    obj = {"images": torch.arange(6, dtype=torch.uint8).view(1, 1, 2, 3), "names": ["a"]}
    save_atomic(obj, path)
    assert [p.name for p in path.parent.iterdir()] == ["entry.pt"]
    back = load_cached(path)
    assert torch.equal(back["images"], obj["images"]) and back["names"] == ["a"]


def test_missing_or_broken_entry_reads_as_none(tmp_path):
    assert load_cached(tmp_path / "absent.pt") is None
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a torch file")
    assert load_cached(broken) is None


def test_broken_data_cache_is_rebuilt(tmp_path):
    from fetalgan.config import DataConfig
    from fetalgan.data import load_training_images

    cfg = DataConfig(kind="phantom", phantom_n=4, cache_dir=str(tmp_path))
    first = load_training_images(cfg, 32, seed=0, progress=False)
    cache_path("data", first.key, str(tmp_path)).write_bytes(b"garbage")
    again = load_training_images(cfg, 32, seed=0, progress=False)
    assert not again.from_cache and torch.equal(again.images, first.images)
    assert load_training_images(cfg, 32, seed=0, progress=False).from_cache
