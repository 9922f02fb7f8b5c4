"""Images from a trained checkpoint: ``generate(checkpoint, n, out_dir) -> list of PNG paths``.

:func:`sample_images_from` is the one sampling path: ``generate`` writes its batches as PNGs,
the MLflow model (:mod:`fetalgan.tracking.model`) returns them as an array, so both give the
same images for the same checkpoint and seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def load_generator(checkpoint: str | Path, device: str = "auto"):
    """``(networks, cfg)`` from a fetalgan checkpoint, in eval mode on ``device``; the
    generators hold the checkpoint's averaged (EMA) weights when it has them, the weights
    training sampled and scored."""
    from fetalgan import models
    from fetalgan.checkpoint import (
        SAMPLING_ONLY,
        load_checkpoint,
        load_networks,
        load_sampling_weights,
        require,
    )
    from fetalgan.config import train_config_from_dict
    from fetalgan.devices import pick_device

    state = load_checkpoint(checkpoint)
    require(state, checkpoint, ("config", "networks"))
    try:
        cfg = train_config_from_dict(state["config"])
    except ValueError as err:
        raise ValueError(f"{checkpoint}: config: {err}") from None
    networks = models.build(cfg)
    target = pick_device(device if device != "auto" else cfg.device)
    if state.get(SAMPLING_ONLY):  # a selection candidate: the sampling networks alone
        load_networks({name: networks[name] for name in state["networks"]}, state, checkpoint)
    else:
        load_sampling_weights(networks, state, checkpoint)  # the EMA generator when it has one
    for net in networks.values():
        net.to(target).eval()
    return networks, cfg


def _check_counts(n: int, batch_size: int) -> None:
    if n <= 0:
        raise ValueError(f"-n: must be > 0, got {n}")
    if batch_size <= 0:
        raise ValueError(f"--batch-size: must be > 0, got {batch_size}")


def iter_image_batches(
    networks, cfg, n: int, *, seed: int, batch_size: int = 256
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, images)`` for ``start = 0, batch_size, ...``: images ``start ..`` as a
    ``(b, 1, R, R) uint8`` CPU tensor, decoded on the networks' device (as loaded by
    :func:`load_generator`). All ``n`` latents come from one CPU generator seeded with
    ``seed``, so the images do not depend on ``batch_size`` or the device's RNG.
    ValueError for ``n`` or ``batch_size`` <= 0 (raised on the call, not on first use)."""
    _check_counts(n, batch_size)
    return _image_batches(networks, cfg, n, seed=seed, batch_size=batch_size)


def _image_batches(networks, cfg, n: int, *, seed: int, batch_size: int):
    import torch

    from fetalgan.models import family
    from fetalgan.train import to_uint8_tensor

    model = family(cfg.model)
    target = next(networks[next(iter(networks))].parameters()).device
    latents = model.latents(n, cfg, torch.Generator().manual_seed(seed))
    for start in range(0, n, batch_size):
        z = latents[start : start + batch_size].to(target)
        with torch.inference_mode():  # entered per batch: the mode must not leak past a yield
            images = to_uint8_tensor(model.decode(networks, z, cfg))
        yield start, images


def sample_images_from(networks, cfg, n: int, *, seed: int, batch_size: int = 256) -> torch.Tensor:
    """All ``n`` images of :func:`iter_image_batches` as one ``(n, 1, R, R) uint8`` CPU
    tensor: exactly the images ``generate`` writes for the same checkpoint and seed."""
    import torch

    return torch.cat(
        [
            images
            for _, images in iter_image_batches(networks, cfg, n, seed=seed, batch_size=batch_size)
        ]
    )


def generate(
    checkpoint: str | Path,
    n: int,
    out_dir: str | Path,
    *,
    seed: int = 0,
    batch_size: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """Write ``n`` images ``out_dir/img_00000.png ...`` at the model's resolution, and
    ``out_dir/grid.png`` (the first 64). The same checkpoint and seed give the same images,
    whatever the batch size (default: the evaluation's, ``train.sampling_batch_size``)."""
    from fetalgan.images import GRID_NAME, write_grid, write_images
    from fetalgan.train import sampling_batch_size

    _check_counts(n, 1 if batch_size is None else batch_size)
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ValueError(
            f"--out {out_dir}: exists and is not a folder; give a folder for the images"
        )
    networks, cfg = load_generator(checkpoint, device)
    batch_size = batch_size or sampling_batch_size(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="generate", unit="img", disable=None)  # off if no TTY
    for start, images in iter_image_batches(networks, cfg, n, seed=seed, batch_size=batch_size):
        paths += write_images(images, out_dir, start=start)
        if start == 0:
            write_grid(images[:64], out_dir / GRID_NAME)
        if bar is not None:
            bar.update(images.shape[0])
    if bar is not None:
        bar.close()
    return paths
