"""Batched flip and rotation on tensors."""

import math

import pytest
import torch

from fetalgan.data.augment import augment_batch


def _batch(b=16, size=16):
    torch.manual_seed(123)
    return torch.rand(b, 1, size, size) * 2 - 1


def test_shape_dtype_kept():
    x = _batch()
    y = augment_batch(x, hflip=True, rotate_deg=15)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device


def test_flip_only_gives_exact_flips_of_both_kinds():
    x = _batch(64)
    y = augment_batch(x, hflip=True, rotate_deg=0)
    same = (y == x).flatten(1).all(1)
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    assert bool((same | flipped).all())
    assert 10 < int(flipped.sum()) < 54  # p = 0.5


def test_nothing_on_is_identity_and_rotate_zero_is_identity():
    x = _batch()
    assert torch.equal(augment_batch(x, hflip=False, rotate_deg=0), x)
    assert torch.equal(augment_batch(x, hflip=False, rotate_deg=0.0), x)


def test_rotation_of_a_centred_disc_is_nearly_unchanged():
    size = 32
    c = (torch.arange(size) + 0.5 - size / 2) / (size / 2)
    r = torch.sqrt(c[:, None] ** 2 + c[None, :] ** 2)
    disc = torch.where(r < 0.6, 1.0, -1.0).expand(8, 1, size, size).contiguous()
    y = augment_batch(disc, hflip=True, rotate_deg=45)
    assert (y - disc).abs().mean() < 0.05


def test_rotation_moves_content_and_pads_black():
    white = torch.ones(16, 1, 16, 16)
    torch.manual_seed(0)
    y = augment_batch(white, hflip=False, rotate_deg=30)
    assert bool((y[:, 0, 0, 0] < 0.999).all())  # corners come from outside: mixed with -1
    assert torch.allclose(y[:, 0, 8, 8], torch.ones(16))  # the centre stays
    bar = torch.full((8, 1, 17, 17), -1.0)
    bar[:, :, 8, :] = 1.0  # a horizontal line rotated by a random angle is no longer the same
    torch.manual_seed(0)
    rotated = augment_batch(bar, hflip=False, rotate_deg=40)
    assert (rotated - bar).abs().mean() > 0.02


def test_deterministic_under_manual_seed_and_generator():
    x = _batch()
    torch.manual_seed(5)
    a = augment_batch(x, hflip=True, rotate_deg=10)
    torch.manual_seed(5)
    b = augment_batch(x, hflip=True, rotate_deg=10)
    assert torch.equal(a, b)
    c = augment_batch(x, hflip=True, rotate_deg=10, generator=torch.Generator().manual_seed(1))
    d = augment_batch(x, hflip=True, rotate_deg=10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(c, d)
    assert not torch.equal(a, c)


def test_uses_the_global_rng():
    x = _batch()
    torch.manual_seed(9)
    augment_batch(x, hflip=True, rotate_deg=10)
    after = torch.rand(1)
    torch.manual_seed(9)
    assert not torch.equal(after, torch.rand(1))  # the global stream advanced


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="B, C, H, W"):
        augment_batch(torch.zeros(3, 8, 8), hflip=True, rotate_deg=0)
    with pytest.raises(ValueError, match="rotate_deg"):
        augment_batch(torch.zeros(1, 1, 8, 8), hflip=False, rotate_deg=-math.pi)


def test_flip_and_rotation_together():
    x = _batch(64)
    y = augment_batch(x, hflip=True, rotate_deg=1e-4)  # tiny angle: flips must still show
    same = (y - x).abs().flatten(1).amax(1) < 1e-3
    flipped = (y - x.flip(-1)).abs().flatten(1).amax(1) < 1e-3
    assert bool((same ^ flipped).all())
    assert 10 < int(flipped.sum()) < 54
