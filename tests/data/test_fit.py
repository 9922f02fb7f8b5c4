"""``data.fit``: how a non-square image becomes R x R (crop, squash, pad), in the one resize,
the config, the cache key and the training data."""

import os
from pathlib import Path

import numpy as np
import pytest
from real_trees import HC18_SIZES, write_hc18

from fetalgan.config import (
    ConfigError,
    DataConfig,
    ReferenceConfig,
    TrainConfig,
    load_sweep,
    reference_data,
    validate_train,
)
from fetalgan.data.cache import stable_key
from fetalgan.data.datasets import CACHE_VERSION, dataset_key, list_files, load_training_images
from fetalgan.images import fit_square, read_grey


def _left_quarter_white(h: int = 100, w: int = 200) -> np.ndarray:
    """A 200x100 (W x H) image, white in its left quarter (columns 0..49), black elsewhere."""
    image = np.zeros((h, w), np.uint8)
    image[:, : w // 4] = 255
    return image


def test_each_fit_gives_its_geometry():
    image = _left_quarter_white()
    crop, squash, pad = (fit_square(image, 40, fit) for fit in ("crop", "squash", "pad"))
    assert crop.shape == squash.shape == pad.shape == (40, 40)
    crop_cols, squash_cols, pad_cols = (a.mean(axis=0) for a in (crop, squash, pad))
    # crop: 80x40 after the resize, columns 20..59 kept: the white quarter (0..19) is cut away
    assert crop_cols[2:].max() == 0 and crop.mean() < 5
    # squash: 200 -> 40 columns, the white quarter is columns 0..9, every row of them
    assert squash_cols[:9].min() == 255 and squash_cols[11:].max() == 0
    assert squash.mean() == pytest.approx(255 / 4, abs=4)
    # pad: a 200x200 square (50 black rows above and below) -> 40: rows 10..29 hold the image,
    # so the white columns 0..9 are white in half the rows and the bars are black
    assert np.allclose(pad_cols[:9], 255 / 2, atol=4) and pad_cols[11:].max() == 0
    assert pad[:9].max() == 0 and pad[31:].max() == 0
    assert pad[11:29, :9].min() == 255
    tall = fit_square(np.ascontiguousarray(image.T), 40, "pad")  # 100x200: bars left and right
    assert tall[:, :9].max() == 0 and tall[:, 31:].max() == 0 and tall[:9, 11:29].min() == 255


def test_a_square_image_at_the_size_is_left_as_it_is():
    image = np.random.default_rng(0).integers(0, 256, (32, 32)).astype(np.uint8)
    for fit in ("crop", "squash", "pad"):
        assert np.array_equal(fit_square(image, 32, fit), image)


def test_an_unknown_fit_names_the_choices():
    with pytest.raises(ValueError, match=r"fit: unknown value 'stretch'; .*crop, squash, pad"):
        fit_square(_left_quarter_white(), 16, "stretch")


def test_config_checks_fit_and_the_reference_inherits_it():
    with pytest.raises(ConfigError, match=r"data\.fit: unknown value 'stretch'.*crop, squash, pad"):
        validate_train(TrainConfig(data=DataConfig(fit="stretch")))
    bad_ref = TrainConfig(eval_reference=ReferenceConfig(fit="letterbox"))
    with pytest.raises(ConfigError, match=r"eval_reference\.fit: unknown value 'letterbox'"):
        validate_train(bad_ref)
    assert DataConfig().fit == "crop"
    cfg = validate_train(TrainConfig(data=DataConfig(fit="squash")))
    assert reference_data(cfg).fit == "squash"  # null = data.fit, like the other fields
    own = ReferenceConfig(fit="pad")
    cfg = validate_train(TrainConfig(data=DataConfig(fit="squash"), eval_reference=own))
    assert reference_data(cfg).fit == "pad"


def test_cache_key_is_unchanged_for_crop_and_differs_for_the_others(tmp_path):
    root = write_hc18(tmp_path / "hc18")
    crop = DataConfig(kind="hc18", root=str(root))
    files = list_files(crop)
    # the payload dataset_key hashed before data.fit existed: crop must still give its key
    before = {
        "version": CACHE_VERSION,
        "kind": "hc18",
        "resolution": 16,
        "size": None,
        "seed": None,
        "root": str(root.resolve()),
        "files": [
            [os.path.relpath(p, root.resolve()), p.stat().st_size, p.stat().st_mtime_ns]
            for p in files
        ],
    }
    assert dataset_key(crop, 16, 0, files) == stable_key(before)
    keys = {
        fit: dataset_key(DataConfig(kind="hc18", root=str(root), fit=fit), 16, 0, files)
        for fit in ("crop", "squash", "pad")
    }
    assert len(set(keys.values())) == 3
    phantom = DataConfig(kind="phantom")  # rendered square: no fit, one key
    assert dataset_key(phantom, 16, 0) == dataset_key(DataConfig(kind="phantom", fit="pad"), 16, 0)


def test_training_images_go_through_the_fit(tmp_path):
    root = write_hc18(tmp_path / "hc18")
    loaded = {
        fit: load_training_images(
            DataConfig(kind="hc18", root=str(root), fit=fit, cache_dir=str(tmp_path / "c")),
            16,
            seed=0,
            progress=False,
        )
        for fit in ("crop", "squash", "pad")
    }
    files = sorted((root / "training_set").glob("*HC.png"))
    assert [p.stem for p in files] == list(HC18_SIZES)
    for fit, images in loaded.items():
        assert images.images.shape == (4, 1, 16, 16)
        expected = np.stack([fit_square(read_grey(p), 16, fit) for p in files])
        assert np.array_equal(images.images[:, 0].numpy(), expected)
    assert not np.array_equal(loaded["crop"].images, loaded["squash"].images)
    assert loaded["pad"].images[:, 0, 0].max() == 0  # the letterbox's black bar on top


@pytest.mark.parametrize(
    "name", ["paper_grid", "dcgan_lr", "resolution", "ddpm", "dsrgan", "tbgan"]
)
def test_sweeps_reproducing_a_study_squash_as_it_did(name):
    cfg = load_sweep(Path(__file__).parents[2] / "sweeps" / f"{name}.yaml")
    assert cfg.base.data.kind in ("hc18", "planes") and cfg.base.data.fit == "squash"
    assert reference_data(cfg.base).fit == "squash"  # the FID reference is squashed alike
