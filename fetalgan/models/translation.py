"""What the translation families (``us2mri``, ``cyclegan``) share: their inputs, the held-out
US images they are evaluated on, structure maps, a PatchGAN discriminator and the LSGAN loss.

A translator's "latents" are US images: ``latents(n, cfg, generator)`` gives ``n`` US inputs
``(n, C, R, R)`` in [-1, 1] and ``decode`` translates them to MR ``(n, 1, R, R)``, so the one
sampling path (training evaluation, ``generate``, the MLflow model) yields MR-like images that
FID/KID compare with the MR reference. On the phantom the inputs are held out: pool indices
past both training pools (``data`` and ``target_data``), so the same indices rendered as MR
(:func:`paired_truth`) are their ground truth. On other data they are the US training images
(nothing else is known to be US); ``fetalgan translate`` takes any folder.

Input channels (``C``): the US slice; with ``us2mri.aux3d`` also the slices ``-slice_step`` and
``+slice_step`` through the same phantom head and a constant location channel (the slice's
position / 0.9, in [-1, 1]) — read back at the centre pixel, which flips and rotations keep.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HELDOUT_SPAN = 100_000  # held-out phantom indices are drawn from this many past the pools
LOCATION_SCALE = 0.9  # the largest slice position (config's phantom_slices limit)


def aux3d(cfg) -> bool:
    return cfg.model == "us2mri" and cfg.us2mri.aux3d


def source_channels(cfg) -> int:
    """Channels of a translator's input: 1, or 4 with 3D auxiliary input."""
    return 4 if aux3d(cfg) else 1


def _pool_end(data) -> int:
    return data.phantom_n if data is not None and data.kind == "phantom" else 0


def heldout_indices(n: int, cfg, generator) -> list[int]:
    """``n`` phantom indices no training pool of ``cfg`` uses (distinct; seeded)."""
    start = max(_pool_end(cfg.data), _pool_end(cfg.target_data))
    if n > HELDOUT_SPAN:
        raise ValueError(f"at most {HELDOUT_SPAN} held-out phantom images, asked for {n}")
    return (start + torch.randperm(HELDOUT_SPAN, generator=generator)[:n]).tolist()


def slices_of(data, indices) -> list[float]:
    from fetalgan.data.phantom import slice_position

    return [slice_position(data.phantom_seed, i, data.phantom_slices) for i in indices]


def _as_float(images_uint8):
    return torch.from_numpy(images_uint8).float().div_(127.5).sub_(1.0)


def phantom_aux(cfg, indices, resolution: int):
    """Aux channels of phantom US images ``indices``: ``(n, 3, R, R) uint8`` (slice below,
    slice above, location)."""
    import numpy as np

    from fetalgan.data.phantom import phantom_images

    data, step = cfg.data, cfg.us2mri.slice_step
    z = slices_of(data, indices)
    below = phantom_images(indices, resolution, data.phantom_seed, slices=[s - step for s in z])
    above = phantom_images(indices, resolution, data.phantom_seed, slices=[s + step for s in z])
    location = np.clip((np.asarray(z) / LOCATION_SCALE + 1) * 127.5 + 0.5, 0, 255)
    location = np.broadcast_to(location.astype(np.uint8)[:, None, None], below.shape)
    return torch.from_numpy(np.stack([below, above, location], axis=1))


def phantom_source(cfg, indices, resolution: int):
    """Phantom US inputs ``indices``: ``(n, C, R, R) uint8`` (with aux channels when on)."""
    from fetalgan.data.phantom import phantom_images

    data = cfg.data
    centre = phantom_images(indices, resolution, data.phantom_seed, slices=slices_of(data, indices))
    centre = torch.from_numpy(centre)[:, None]
    if not aux3d(cfg):
        return centre
    return torch.cat([centre, phantom_aux(cfg, indices, resolution)], dim=1)


def paired_truth(cfg, indices, resolution: int):
    """The MR ground truth of phantom US inputs ``indices``: the same heads and slices
    rendered as MR, ``(n, 1, R, R) uint8``. Evaluation only: never seen in training."""
    from fetalgan.data.phantom import phantom_images

    data = cfg.data
    mr = phantom_images(
        indices, resolution, data.phantom_seed, modality="mri", slices=slices_of(data, indices)
    )
    return torch.from_numpy(mr)[:, None]


def source_images(cfg, dataset):
    """The training US set with the family's input channels, ``(N, C, R, R) uint8``: the
    loaded images, plus (3D auxiliary input) their neighbour slices and location."""
    if not aux3d(cfg):
        return dataset.images
    indices = [int(name.rsplit("_", 1)[1]) for name in dataset.names]  # phantom_NNNNN
    resolution = dataset.images.shape[-1]
    return torch.cat([dataset.images, phantom_aux(cfg, indices, resolution)], dim=1)


def latents(n: int, cfg, generator):
    """US inputs to translate, ``(n, C, R, R)`` in [-1, 1] on the CPU: held-out phantom
    images, or (other data) a seeded draw of the US training images."""
    if cfg.data.kind == "phantom":
        return (
            phantom_source(cfg, heldout_indices(n, cfg, generator), cfg.resolution)
            .float()
            .div_(127.5)
            .sub_(1.0)
        )
    from fetalgan.data import load_training_images

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


def structure_map(images):
    """Edges of ``(B, 1, H, W)`` images in [-1, 1]: the gradient magnitude of a 3x3-blurred
    copy (Sobel), divided by its per-image mean -> ``(B, 1, H, W)``, about 1 on average.
    Dividing by the mean makes the map independent of the modality's contrast scale."""
    x = F.avg_pool2d(images.float(), 3, stride=1, padding=1, count_include_pad=False)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=x.device)
    kernels = torch.stack([kx, kx.t()])[:, None]
    grad = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels)
    magnitude = grad.pow(2).sum(1, keepdim=True).add(1e-12).sqrt()  # finite gradient at 0
    return magnitude / magnitude.mean(dim=(2, 3), keepdim=True)


def fan_mask(us_images):
    """1 inside the US field of view, 0 outside and on its border (the fan's edge is
    acquisition, not anatomy): ``(B, 1, H, W)``."""
    inside = (us_images.float() > -0.97).float()
    return -F.max_pool2d(-inside, 7, stride=1, padding=3)  # erosion by a 7x7 square


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017): ``(B, C, S, S)`` -> ``(B, 1, S/8, S/8)`` real/fake scores
    of overlapping patches; strided 4x4 convolutions, instance norm, leaky ReLU."""

    def __init__(self, channels: int, width: int, layers: int = 3):
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        w = width
        for _ in range(1, layers):
            seq += [
                nn.Conv2d(w, min(w * 2, 512), 4, 2, 1),
                nn.InstanceNorm2d(min(w * 2, 512), affine=True),
                nn.LeakyReLU(0.2),
            ]
            w = min(w * 2, 512)
        seq += [nn.Conv2d(w, 1, 3, 1, 1)]
        self.main = nn.Sequential(*seq)

    def forward(self, x):
        return self.main(x)


class ResidualBlock(nn.Module):
    """``x + conv(norm(relu(conv(norm(x)))))`` with instance norm (CycleGAN's block)."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, 1, 1, padding_mode="reflect"),
            nn.InstanceNorm2d(width, affine=True),
            nn.ReLU(True),
            nn.Conv2d(width, width, 3, 1, 1, padding_mode="reflect"),
            nn.InstanceNorm2d(width, affine=True),
        )

    def forward(self, x):
        return x + self.body(x)


def down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, 2, 1), nn.InstanceNorm2d(c_out, affine=True), nn.ReLU(True)
    )


def up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(c_in, c_out, 3, 1, 1),
        nn.InstanceNorm2d(c_out, affine=True),
        nn.ReLU(True),
    )


def stem(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 7, 1, 3, padding_mode="reflect"),
        nn.InstanceNorm2d(c_out, affine=True),
        nn.ReLU(True),
    )


def head(c_in: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, 1, 7, 1, 3, padding_mode="reflect"), nn.Tanh())


def init_weights(module: nn.Module) -> None:
    """Convolutions N(0, 0.02), biases 0 (CycleGAN's ``normal`` init)."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def lsgan(scores, target: float):
    """Least-squares GAN loss (Mao et al. 2017): mean of (score - target)^2, in fp32."""
    scores = scores.float()
    return (scores - target).pow(2).mean()


def unwrap(net):
    """The plain module under DDP (``.module``) and torch.compile (``._orig_mod``)."""
    net = getattr(net, "module", net)
    return getattr(net, "_orig_mod", net)
