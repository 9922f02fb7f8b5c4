"""Images from a trained checkpoint: ``generate(checkpoint, n, out_dir) -> list of PNG paths``.

:func:`load_generator` loads a checkpoint's sampling networks; the images come from the one
sampler, :mod:`fetalgan.sampling` (``generate`` writes its batches as PNGs, the MLflow model
:mod:`fetalgan.tracking.model` returns them as an array, training's evaluation scores them),
so all give the same images for the same weights, seed and batch size.
"""

from __future__ import annotations

from pathlib import Path

from fetalgan.sampling import check_counts, iter_samples

# The names this module offered before the sampler had a module of its own.


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
    whatever the batch size (default: the evaluation's, ``sampling.sampling_batch_size``)."""
    from fetalgan.images import GRID_NAME, write_grid, write_images
    from fetalgan.sampling import sampling_batch_size

    check_counts(n, 1 if batch_size is None else batch_size)
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
    for start, images in iter_samples(networks, cfg, n, seed=seed, batch_size=batch_size):
        paths += write_images(images, out_dir, start=start)
        if start == 0:
            write_grid(images[:64], out_dir / GRID_NAME)
        if bar is not None:
            bar.update(images.shape[0])
    if bar is not None:
        bar.close()
    return paths
