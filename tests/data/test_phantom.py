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


def _edges(images: np.ndarray) -> np.ndarray:
    import torch

    from fetalgan.models.translation import structure_map

    return structure_map(torch.from_numpy(images).float()[:, None] / 127.5 - 1)[:, 0].numpy()


def test_mri_renders_the_same_heads_as_the_ultrasound():
    us = phantom_images(list(range(6)), 64, 0)
    mr = phantom_images(list(range(6)), 64, 0, modality="mri")
    assert mr.shape == us.shape and mr.dtype == np.uint8
    assert np.array_equal(mr, make_phantom(6, 64, seed=0, modality="mri"))  # deterministic
    assert np.array_equal(us, make_phantom(6, 64, seed=0))  # the US phantom is unchanged
    edges_us, edges_mr = _edges(us), _edges(mr)
    corr = np.array(
        [
            [np.corrcoef(edges_us[i].ravel(), edges_mr[j].ravel())[0, 1] for j in range(6)]
            for i in range(6)
        ]
    )
    for i in range(6):  # each US image's edges match its own head's MR best
        assert corr[i, i] > 0.15 and corr[i, i] == corr[i].max(), corr.round(2)


def test_mri_looks_like_mr_not_a_fan_scan():
    mr = make_phantom(8, 64, seed=0, modality="mri").astype(float)
    assert mr[:, :6, :6].min() > 0  # no fan: the field of view is the whole image
    assert mr.max() > 200  # bright fluid (amniotic fluid, CSF)


def test_slices_through_the_head():
    mid = phantom_images([3, 4], 64, 1)
    assert np.array_equal(phantom_images([3, 4], 64, 1, slices=[0.0, 0.0]), mid)
    near = phantom_images([3, 4], 64, 1, slices=[0.1, 0.1], modality="mri")
    far = phantom_images([3, 4], 64, 1, slices=[0.8, 0.8], modality="mri")
    centre = phantom_images([3, 4], 64, 1, modality="mri")
    d_near = np.abs(near.astype(float) - centre).mean()
    d_far = np.abs(far.astype(float) - centre).mean()
    assert 0 < d_near < d_far  # neighbouring slices are close, distant ones differ more
    with pytest.raises(ValueError, match="phantom modality: expected one of us, mri"):
        phantom_images([0], 32, 0, modality="ct")


def test_write_phantom_dir_pairs_modalities_by_name(tmp_path):
    us = write_phantom_dir(tmp_path / "us", n=2, size=32, seed=0, first=10, progress=False)
    mr = write_phantom_dir(
        tmp_path / "mr", n=2, size=32, seed=0, first=10, modality="mri", progress=False
    )
    assert (
        [p.name for p in us] == [p.name for p in mr] == ["phantom_00010.png", "phantom_00011.png"]
    )
    from fetalgan.images import read_grey

    assert np.array_equal(read_grey(mr[1]), phantom_images([11], 32, 0, modality="mri")[0])
