"""The inputs of the translation families (``us2mri``, ``cyclegan``), provided by the data
layer: a family declares what it needs (its spec's ``neighbour_step``: neighbour slices as
extra channels, or none) and these functions fetch it, so no model module reads a dataset.

A translator's "latents" are US images: :func:`latents` gives ``n`` US inputs ``(n, C, R, R)``
in [-1, 1] that the family's ``decode`` translates to MR. On the phantom the inputs are held
out: pool indices past both training pools (``data`` and ``target_data``), so the same indices
rendered as MR (:func:`paired_truth`) are their ground truth. On other data they are the US
training images (nothing else is known to be US); ``fetalgan translate`` takes any folder.

Input channels (``C``): the US slice; with a neighbour ``step`` (us2mri's ``aux3d``) also the
slices ``-step`` and ``+step`` through the same phantom head and a constant location channel
(the slice's position / 0.9, in [-1, 1]), read back at the centre pixel, which flips and
rotations keep.
"""

from __future__ import annotations

import numpy as np
import torch

from fetalgan.data.datasets import load_training_images
from fetalgan.data.phantom import phantom_images, slice_position

HELDOUT_SPAN = 100_000  # held-out phantom indices are drawn from this many past the pools
LOCATION_SCALE = 0.9  # the largest slice position (config's phantom_slices limit)


def _pool_end(data) -> int:
    return data.phantom_n if data is not None and data.kind == "phantom" else 0


def heldout_indices(n: int, cfg, generator) -> list[int]:
    """``n`` phantom indices no training pool of ``cfg`` uses (distinct; seeded)."""
    start = max(_pool_end(cfg.data), _pool_end(cfg.target_data))
    if n > HELDOUT_SPAN:
        raise ValueError(f"at most {HELDOUT_SPAN} held-out phantom images, asked for {n}")
    return (start + torch.randperm(HELDOUT_SPAN, generator=generator)[:n]).tolist()


def slices_of(data, indices) -> list[float]:
    return [slice_position(data.phantom_seed, i, data.phantom_slices) for i in indices]


def phantom_aux(cfg, indices, resolution: int, step: float):
    """Aux channels of phantom US images ``indices``: ``(n, 3, R, R) uint8`` (slice ``step``
    below, slice ``step`` above, location)."""
    data = cfg.data
    z = slices_of(data, indices)
    below = phantom_images(indices, resolution, data.phantom_seed, slices=[s - step for s in z])
    above = phantom_images(indices, resolution, data.phantom_seed, slices=[s + step for s in z])
    location = np.clip((np.asarray(z) / LOCATION_SCALE + 1) * 127.5 + 0.5, 0, 255)
    location = np.broadcast_to(location.astype(np.uint8)[:, None, None], below.shape)
    return torch.from_numpy(np.stack([below, above, location], axis=1))


def phantom_source(cfg, indices, resolution: int, step: float | None = None):
    """Phantom US inputs ``indices``: ``(n, C, R, R) uint8`` (with aux channels when a
    neighbour ``step`` is given)."""
    data = cfg.data
    centre = phantom_images(indices, resolution, data.phantom_seed, slices=slices_of(data, indices))
    centre = torch.from_numpy(centre)[:, None]
    if step is None:
        return centre
    return torch.cat([centre, phantom_aux(cfg, indices, resolution, step)], dim=1)


def paired_truth(cfg, indices, resolution: int):
    """The MR ground truth of phantom US inputs ``indices``: the same heads and slices
    rendered as MR, ``(n, 1, R, R) uint8``. Evaluation only: never seen in training."""
    data = cfg.data
    mr = phantom_images(
        indices, resolution, data.phantom_seed, modality="mri", slices=slices_of(data, indices)
    )
    return torch.from_numpy(mr)[:, None]


def source_images(cfg, dataset, step: float | None = None):
    """The training US set with the family's input channels, ``(N, C, R, R) uint8``: the
    loaded images, plus (a neighbour ``step``) their neighbour slices and location."""
    if step is None:
        return dataset.images
    indices = [int(name.rsplit("_", 1)[1]) for name in dataset.names]  # phantom_NNNNN
    resolution = dataset.images.shape[-1]
    return torch.cat([dataset.images, phantom_aux(cfg, indices, resolution, step)], dim=1)


def latents(n: int, cfg, generator, step: float | None = None):
    """US inputs to translate, ``(n, C, R, R)`` in [-1, 1] on the CPU: held-out phantom
    images, or (other data) a seeded draw of the US training images."""
    if cfg.data.kind == "phantom":
        return (
            phantom_source(cfg, heldout_indices(n, cfg, generator), cfg.resolution, step)
            .float()
            .div_(127.5)
            .sub_(1.0)
        )
    images = load_training_images(cfg.data, cfg.resolution, seed=cfg.seed, progress=False).images
    pick = torch.randint(0, images.shape[0], (n,), generator=generator)
    if n <= images.shape[0]:
        pick = torch.randperm(images.shape[0], generator=generator)[:n]
    return images[pick].float().div_(127.5).sub_(1.0)


def check_unpaired(cfg, source_names: list[str], target_names: list[str]) -> None:
    """ValueError when phantom ``data`` and ``target_data`` share a head (the domains must be
    unpaired: training never sees a US image's own MR)."""
    data, target = cfg.data, cfg.target_data
    if not (data.kind == target.kind == "phantom" and data.phantom_seed == target.phantom_seed):
        return
    shared = sorted(set(source_names) & set(target_names))
    if shared:
        raise ValueError(
            f"target_data: {len(shared)} phantom heads (e.g. {shared[0]}) are in both data and "
            "target_data, which would pair the domains; give target_data disjoint indices, "
            "e.g. data {order: listed, size: 400} and target_data {order: listed, skip: 400}"
        )


# --------------------------------------------------------------------------------------------
# Pieces of the networks and losses
# --------------------------------------------------------------------------------------------
