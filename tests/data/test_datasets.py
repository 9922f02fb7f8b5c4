"""Dataset listing and loading on small fabricated trees that copy the real layouts."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from real_trees import HC18_SIZES, KEPT, write_hc18, write_planes

from fetalgan.config import DataConfig
from fetalgan.data import datasets
from fetalgan.data.datasets import (
    dataset_key,
    detect_kind,
    list_files,
    list_hc18,
    list_planes,
    list_real_files,
    load_folder,
    load_training_images,
    real_data,
)
from fetalgan.data.phantom import phantom_images
from fetalgan.images import resize_crop, write_png


def _image(value: int, h: int = 27, w: int = 40) -> np.ndarray:
    """A landscape image like HC18's 800x540, scaled down, with a horizontal ramp + ``value``."""
    ramp = np.linspace(0, 60, w)[None, :].repeat(h, 0)
    return np.clip(ramp + value, 0, 255).astype(np.uint8)


def _write(path: Path, value: int, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(_image(value, **kw), path)
    return path


@pytest.fixture
def data_hc18(tmp_path) -> Path:
    root = tmp_path / "hc18"
    train = root / "training_set"
    for i, name in enumerate(["000_HC", "001_HC", "002_2HC", "003_HC"]):
        _write(train / f"{name}.png", 20 + 40 * i)
        _write(train / f"{name}_Annotation.png", 255)  # masks: must never be loaded
    _write(root / "test_set" / "900_HC.png", 7)
    return root


PLANES_HEADER = "Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train "
PLANES_ROWS = [
    ("Patient00001_Plane1_1_of_2", "1", "Other", "Not A Brain", "Op. 1", "Voluson E6", "1"),
    (
        "Patient00001_Plane3_1_of_3",
        "1",
        "Fetal brain",
        "Trans-thalamic",
        "Op. 1",
        "Voluson E6",
        "1",
    ),
    (
        "Patient00002_Plane3_1_of_3",
        "2",
        "Fetal brain",
        "Trans-cerebellum",
        "Op. 2",
        "Voluson E6",
        "1",
    ),
    ("Patient00002_Plane3_2_of_3", "2", "Fetal brain", "Trans-cerebellum", "Op. 2", "Aloka", "0"),
    (
        "Patient00003_Plane3_1_of_1",
        "3",
        "Fetal brain",
        "Trans-cerebellum",
        "Other",
        "Voluson S10",
        "0",
    ),
    ("Patient00004_Plane2_1_of_1", "4", "Fetal abdomen", "Not A Brain", "Op. 3", "Aloka", "1"),
]


def _planes_tree(root: Path, header: str = PLANES_HEADER) -> Path:
    lines = [header] + [";".join(row) for row in PLANES_ROWS]
    root.mkdir(parents=True)
    (root / "FETAL_PLANES_DB_data.csv").write_text("\r\n".join(lines) + "\r\n")
    for i, row in enumerate(PLANES_ROWS):
        _write(root / "Images" / f"{row[0]}.png", 10 * i)
    return root


@pytest.fixture
def data_planes(tmp_path) -> Path:
    return _planes_tree(tmp_path / "planes")


def _cfg(tmp_path, **kw) -> DataConfig:
    return DataConfig(cache_dir=str(tmp_path / "cache"), **kw)


# ---- listing ---------------------------------------------------------------------------------


def test_hc18_lists_images_not_annotations(data_hc18):
    names = [p.name for p in list_hc18(data_hc18)]
    assert names == ["000_HC.png", "001_HC.png", "002_2HC.png", "003_HC.png"]
    assert list_hc18(data_hc18 / "training_set") == list_hc18(data_hc18)  # root = the folder


def test_hc18_missing_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="1327317") as err:
        list_hc18(tmp_path / "nowhere")
    assert "nowhere" in str(err.value)
    (tmp_path / "empty" / "training_set").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"zenodo\.org/records/1327317"):
        list_hc18(tmp_path / "empty")


def test_planes_filters(data_planes):
    def names(**kw):
        return [p.stem for p in list_planes(data_planes, **kw)]

    assert len(names()) == 6
    cerebellum = names(plane="Fetal brain", brain_plane="Trans-cerebellum")
    assert cerebellum == [
        "Patient00002_Plane3_1_of_3",
        "Patient00002_Plane3_2_of_3",
        "Patient00003_Plane3_1_of_1",
    ]
    assert names(plane="Fetal brain", machine="Voluson E6") == [
        "Patient00001_Plane3_1_of_3",
        "Patient00002_Plane3_1_of_3",
    ]
    assert names(brain_plane="Trans-cerebellum", train_split=False) == [
        "Patient00002_Plane3_2_of_3",
        "Patient00003_Plane3_1_of_1",
    ]
    assert names(brain_plane="Trans-cerebellum", train_split=True) == ["Patient00002_Plane3_1_of_3"]
    assert all(p.parent.name == "Images" for p in list_planes(data_planes))


def test_planes_header_without_trailing_space(tmp_path):
    root = _planes_tree(tmp_path / "p", header=PLANES_HEADER.rstrip())
    assert len(list_planes(root, train_split=True)) == 4


def test_planes_unknown_filter_value_lists_the_values(data_planes):
    with pytest.raises(ValueError, match="brain_plane") as err:
        list_planes(data_planes, brain_plane="Trans-cerebelum")
    assert "'Trans-cerebellum'" in str(err.value) and "'Trans-thalamic'" in str(err.value)
    with pytest.raises(ValueError, match="'Aloka'"):
        list_planes(data_planes, machine="Voluson E8")


def test_planes_missing_csv_or_image(tmp_path, data_planes):
    with pytest.raises(FileNotFoundError, match="3904280"):
        list_planes(tmp_path / "nowhere")
    (data_planes / "Images" / "Patient00003_Plane3_1_of_1.png").unlink()
    with pytest.raises(FileNotFoundError, match="Patient00003_Plane3_1_of_1.png"):
        list_planes(data_planes, brain_plane="Trans-cerebellum")


def test_list_files_dispatch(tmp_path, data_hc18, data_planes):
    assert len(list_files(DataConfig(kind="hc18", root=str(data_hc18)))) == 4
    cfg = DataConfig(kind="planes", root=str(data_planes), plane="Fetal brain")
    assert len(list_files(cfg)) == 4
    folder = data_hc18 / "training_set"
    assert len(list_files(DataConfig(kind="folder", root=str(folder)))) == 8  # every image


# ---- decoding --------------------------------------------------------------------------------


def test_resize_short_side_then_centre_crop():
    wide = np.tile(np.arange(0, 240, 4, dtype=np.uint8), (40, 1))  # 40 x 60, value = 4 * column
    out = resize_crop(wide, 16)
    assert out.shape == (16, 16) and out.dtype == np.uint8
    # 60 -> 24 columns, 4 cropped each side: the crop spans original columns 10..50
    assert abs(int(out[0, 0]) - 4 * 11) <= 6 and abs(int(out[0, -1]) - 4 * 48) <= 6
    assert np.all(np.diff(out[0].astype(int)) > 0)
    tall = resize_crop(np.ascontiguousarray(wide.T), 16)
    assert tall.shape == (16, 16)
    assert np.all(np.diff(tall[:, 0].astype(int)) > 0)  # the ramp now runs down the rows
    assert resize_crop(np.full((20, 20), 9, np.uint8), 32).shape == (32, 32)  # upsampling


def test_load_folder_same_size_and_mismatch(tmp_path):
    folder = tmp_path / "fake"
    for i in range(3):
        _write(folder / f"img_{i}.png", 30 * i, h=16, w=16)
    images = load_folder(folder)
    assert images.shape == (3, 1, 16, 16) and images.dtype == torch.uint8
    assert int(images[2, 0, 0, 0]) == 60
    _write(folder / "odd.png", 0, h=20, w=16)
    with pytest.raises(ValueError, match="differ in size") as err:
        load_folder(folder)
    assert "img_0.png is 16x16" in str(err.value) and "odd.png is 16x20" in str(err.value)
    assert load_folder(folder, resolution=8).shape == (4, 1, 8, 8)


# ---- the training set ------------------------------------------------------------------------


def test_hc18_training_images_decoded_then_cached(tmp_path, data_hc18, monkeypatch):
    cfg = _cfg(tmp_path, kind="hc18", root=str(data_hc18))
    first = load_training_images(cfg, 16, seed=0, progress=False)
    assert first.images.shape == (4, 1, 16, 16) and first.images.dtype == torch.uint8
    assert first.names == ["000_HC.png", "001_HC.png", "002_2HC.png", "003_HC.png"]
    assert not first.from_cache and first.n_skipped == 0
    assert int(first.images.max()) < 250  # no annotation mask (all 255) slipped in
    assert (tmp_path / "cache" / "data" / f"{first.key}.pt").is_file()

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(datasets, "decode_files", no_decoding)
    second = load_training_images(cfg, 16, seed=0, progress=False)
    assert second.from_cache and second.key == first.key and second.names == first.names
    assert torch.equal(second.images, first.images)


def test_seeded_subset(tmp_path):
    folder = tmp_path / "imgs"
    for i in range(10):
        _write(folder / f"img_{i:02d}.png", 20 * i, h=8, w=8)

    def load(size, seed):
        return load_training_images(
            _cfg(tmp_path, kind="folder", root=str(folder), size=size), 8, seed=seed, progress=False
        )

    a = load(4, seed=1)
    assert len(a.names) == 4 and a.names == sorted(a.names)
    assert load(4, seed=1).names == a.names
    assert any(load(4, seed=s).names != a.names for s in (2, 3, 4))
    assert set(a.names) <= set(load(7, seed=1).names)  # subsets of one seed nest
    values = [int(a.images[i, 0, 0, 0]) for i in range(4)]
    assert values == [20 * int(n[4:6]) for n in a.names]  # images match their names
    everything = load(None, seed=0)
    assert everything.names == [f"img_{i:02d}.png" for i in range(10)]
    assert load(None, seed=5).key == everything.key  # no subset: the seed does not matter
    with pytest.raises(
        ValueError, match=r"data\.size: 11 is larger than the dataset \(10 images in"
    ):
        load(11, seed=0)


def test_planes_training_images(tmp_path, data_planes):
    cfg = _cfg(
        tmp_path,
        kind="planes",
        root=str(data_planes),
        plane="Fetal brain",
        brain_plane="Trans-cerebellum",
    )
    loaded = load_training_images(cfg, 16, seed=0, progress=False)
    assert loaded.images.shape == (3, 1, 16, 16)
    assert loaded.names[0] == "Patient00002_Plane3_1_of_3.png"


def test_key_tracks_everything_that_changes_the_tensor(tmp_path, data_hc18, data_planes):
    hc = DataConfig(kind="hc18", root=str(data_hc18))
    files = list_files(hc)
    base = dataset_key(hc, 64, 0, files)
    assert base == dataset_key(DataConfig(kind="hc18", root=str(data_hc18)), 64, 0, list_files(hc))
    assert len(base) >= 16 and int(base, 16) >= 0
    assert dataset_key(hc, 128, 0, files) != base
    assert dataset_key(DataConfig(kind="hc18", root=str(data_hc18), size=2), 64, 0, files) != base
    assert dataset_key(hc, 64, 0, files[:3]) != base
    sized = DataConfig(kind="hc18", root=str(data_hc18), size=2)
    assert dataset_key(sized, 64, 0, files) != dataset_key(sized, 64, 1, files)
    pl = DataConfig(kind="planes", root=str(data_planes), plane="Fetal brain")
    pl2 = DataConfig(kind="planes", root=str(data_planes), plane="Fetal brain", machine="Aloka")
    assert dataset_key(pl, 64, 0, files) != dataset_key(pl2, 64, 0, files)
    ph = DataConfig(kind="phantom")
    assert dataset_key(ph, 64, 0) != dataset_key(DataConfig(kind="phantom", phantom_seed=1), 64, 0)
    assert dataset_key(ph, 64, 0) != dataset_key(DataConfig(kind="phantom", phantom_n=50), 64, 0)


def test_phantom_training_images(tmp_path):
    cfg = _cfg(tmp_path, kind="phantom", phantom_n=40, size=6, phantom_seed=2)
    loaded = load_training_images(cfg, 32, seed=0, progress=False)
    assert loaded.images.shape == (6, 1, 32, 32)
    indices = [int(n.split("_")[1]) for n in loaded.names]
    assert indices == sorted(indices) and all(0 <= i < 40 for i in indices)
    expected = phantom_images(indices, 32, 2)
    assert np.array_equal(loaded.images[:, 0].numpy(), expected)
    assert load_training_images(cfg, 32, seed=0, progress=False).from_cache
    too_many = _cfg(tmp_path, kind="phantom", phantom_n=5, size=6)
    with pytest.raises(ValueError, match=r"data\.size: 6 is larger than the dataset \(5 images"):
        load_training_images(too_many, 32, seed=0, progress=False)


# ---- unreadable images -----------------------------------------------------------------------


@pytest.fixture
def data_corrupt(tmp_path) -> Path:
    folder = tmp_path / "mixed"
    for i in range(5):
        _write(folder / f"img_{i}.png", 40 * i, h=8, w=8)
    (folder / "img_2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


def test_unreadable_image_names_the_file(tmp_path, data_corrupt):
    cfg = _cfg(tmp_path, kind="folder", root=str(data_corrupt))
    with pytest.raises(ValueError, match=r"img_2\.png"):
        load_training_images(cfg, 8, seed=0, progress=False)
    with pytest.raises(ValueError, match=r"img_2\.png"):
        load_folder(data_corrupt)


def test_skip_corrupt_warns_with_the_count(tmp_path, data_corrupt):
    cfg = _cfg(tmp_path, kind="folder", root=str(data_corrupt), skip_corrupt=True)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        loaded = load_training_images(cfg, 8, seed=0, progress=False)
    assert loaded.n_skipped == 1 and loaded.images.shape[0] == 4
    assert "img_2.png" not in loaded.names
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        again = load_training_images(cfg, 8, seed=0, progress=False)
    assert again.from_cache and again.n_skipped == 1
    strict = _cfg(tmp_path, kind="folder", root=str(data_corrupt))  # same cache entry, no skipping
    with pytest.raises(ValueError, match=r"img_2\.png"):
        load_training_images(strict, 8, seed=0, progress=False)


def test_skip_corrupt_refills_the_subset(tmp_path, data_corrupt):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_training_images(
            _cfg(tmp_path, kind="folder", root=str(data_corrupt), skip_corrupt=True, size=4),
            8,
            seed=0,
            progress=False,
        )
        assert loaded.names == ["img_0.png", "img_1.png", "img_3.png", "img_4.png"]
        with pytest.raises(ValueError, match="readable"):
            load_training_images(
                _cfg(tmp_path, kind="folder", root=str(data_corrupt), skip_corrupt=True, size=5),
                8,
                seed=0,
                progress=False,
            )


def test_an_image_replaced_in_place_is_decoded_again(tmp_path):
    """Same name, same byte size, new pixels: the cache key follows the modification time."""
    import os

    folder = tmp_path / "imgs"
    paths = [_write(folder / f"img_{i}.png", 30 * i, h=8, w=8) for i in range(3)]
    cfg = _cfg(tmp_path, kind="folder", root=str(folder))
    first = load_training_images(cfg, 8, seed=0, progress=False)
    assert load_training_images(cfg, 8, seed=0, progress=False).from_cache
    size = paths[0].stat().st_size
    _write(paths[0], 200, h=8, w=8)  # another flat-plus-ramp image: the same PNG byte size
    assert paths[0].stat().st_size == size
    stat = paths[0].stat()
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = load_training_images(cfg, 8, seed=0, progress=False)
    assert not second.from_cache and second.key != first.key
    assert int(second.images[0, 0, 0, 0]) == 200 != int(first.images[0, 0, 0, 0])


# ---- a real set named on the command line (--real) -------------------------------------------


def test_real_kind_is_detected_from_the_folder(tmp_path):
    hc18 = write_hc18(tmp_path / "hc18")
    assert detect_kind(hc18) == detect_kind(hc18 / "training_set") == "hc18"
    assert detect_kind(write_planes(tmp_path / "planes")) == "planes"
    assert detect_kind(hc18 / "test_set") == "folder"  # *_HC.png without masks beside
    plain = tmp_path / "plain"
    _write(plain / "a.png", 10)
    assert detect_kind(plain) == "folder"


def test_real_sets_leave_masks_and_filtered_rows_out(tmp_path):
    hc18 = real_data(write_hc18(tmp_path / "hc18"))
    assert (hc18.kind, hc18.fit) == ("hc18", "crop")
    assert [p.stem for p in list_real_files(hc18)] == list(HC18_SIZES)
    folder = real_data(tmp_path / "hc18" / "training_set", kind="folder", fit="squash")
    assert [p.stem for p in list_real_files(folder)] == list(HC18_SIZES)  # masks dropped too
    planes_root = write_planes(tmp_path / "planes")
    planes = real_data(planes_root, **KEPT)
    assert planes.kind == "planes" and len(list_real_files(planes)) == 3
    train = real_data(planes_root, train_split=True, **KEPT)
    assert [p.stem for p in list_real_files(train)] == ["Patient00002_Plane3_1_of_3"]


def test_real_set_errors_name_options_that_exist(tmp_path):
    hc18 = write_hc18(tmp_path / "hc18")
    with pytest.raises(
        ValueError, match=r"--real-kind: unknown value 'hc19'; .*auto, hc18, planes"
    ):
        real_data(hc18, kind="hc19")
    with pytest.raises(ValueError, match=r"--fit: unknown value 'stretch'; .*crop, squash, pad"):
        real_data(hc18, fit="stretch")
    with pytest.raises(ValueError, match=r"--plane: .* is hc18 \(detected.*FETAL_PLANES_DB folder"):
        real_data(hc18, plane="Fetal brain")
    with pytest.raises(FileNotFoundError, match=r"--real .*nowhere: not found"):
        real_data(tmp_path / "nowhere")
    planes = write_planes(tmp_path / "planes")
    with pytest.raises(ValueError, match=r"^--brain-plane: no Brain_plane 'Trans-cerebelum'"):
        list_real_files(real_data(planes, brain_plane="Trans-cerebelum"))
    with pytest.raises(FileNotFoundError, match=r"^--real: no HC18 images .*1327317"):
        list_real_files(real_data(planes, kind="hc18"))
