"""The procedural phantom: shape, determinism, independence of n, and an ultrasound-like layout."""

import numpy as np
import pytest

from fetalgan.data.phantom import make_phantom, phantom_images, write_phantom_dir


def test_shape_dtype_and_range():
    images = make_phantom(3, 32, seed=0)
    assert images.shape == (3, 32, 32)
    assert images.dtype == np.uint8
    assert images.max() > 150  # the skull is bright


def test_same_seed_same_images_different_seed_different():
    a = make_phantom(4, 32, seed=1)
    assert np.array_equal(a, make_phantom(4, 32, seed=1))
    b = make_phantom(4, 32, seed=2)
    assert not np.array_equal(a, b)
    assert all(not np.array_equal(a[i], b[i]) for i in range(4))
    assert not np.array_equal(a[0], a[1])  # images of one pool differ too


def test_image_depends_only_on_seed_index_size():
    many = make_phantom(70, 32, seed=3)  # more than one render batch
    assert np.array_equal(many[:5], make_phantom(5, 32, seed=3))
    assert np.array_equal(many[66], phantom_images([66], 32, 3)[0])
    assert np.array_equal(many[[40, 2]], phantom_images([40, 2], 32, 3))


def test_looks_like_a_fan_scan():
    images = make_phantom(8, 64, seed=0).astype(float)
    top_corners = np.concatenate([images[:, :6, :6], images[:, :6, -6:]])
    assert top_corners.max() == 0  # black outside the sector
    centre = images[:, 16:48, 24:40]
    assert centre.mean() > 20  # tissue inside the sector
    assert images[:, :, 32].std() > 10  # structure, not a flat fill


def test_same_head_at_every_size():
    small = make_phantom(2, 32, seed=5).astype(float)
    large = make_phantom(2, 128, seed=5).astype(float)
    pooled = large.reshape(2, 32, 4, 32, 4).mean(axis=(2, 4))
    same = np.corrcoef(small[0].ravel(), pooled[0].ravel())[0, 1]
    other = np.corrcoef(small[0].ravel(), pooled[1].ravel())[0, 1]
    assert same > 0.8 and same > other


def test_write_phantom_dir_is_byte_identical(tmp_path):
    a = write_phantom_dir(tmp_path / "a", n=3, size=32, seed=7, progress=False)
    b = write_phantom_dir(tmp_path / "b", n=3, size=32, seed=7, progress=False)
    c = write_phantom_dir(tmp_path / "c", n=3, size=32, seed=8, progress=False)
    assert [p.name for p in a] == ["phantom_00000.png", "phantom_00001.png", "phantom_00002.png"]
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert all(pa.read_bytes() != pc.read_bytes() for pa, pc in zip(a, c, strict=True))

    from fetalgan.images import read_grey

    assert np.array_equal(read_grey(a[1]), make_phantom(2, 32, seed=7)[1])


@pytest.mark.parametrize(("n", "size", "seed"), [(-1, 32, 0), (2, 8, 0), (2, 32, -1)])
def test_bad_arguments(n, size, seed):
    with pytest.raises(ValueError, match="phantom"):
        make_phantom(n, size, seed)
