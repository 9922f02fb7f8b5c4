"""Images from a trained checkpoint: ``generate(checkpoint, n, out_dir) -> list of PNG paths``."""

from __future__ import annotations

from pathlib import Path


def load_generator(checkpoint: str | Path, device: str = "auto"):
    """``(networks, cfg)`` from a fetalgan checkpoint, in eval mode on ``device``."""
    from fetalgan import models
    from fetalgan.checkpoint import load_checkpoint
    from fetalgan.config import train_config_from_dict
    from fetalgan.train import pick_device

    state = load_checkpoint(checkpoint)
    cfg = train_config_from_dict(state["config"])
    networks = models.build(cfg)
    target = pick_device(device if device != "auto" else cfg.device)
    for name, net in networks.items():
        net.load_state_dict(state["networks"][name])
        net.to(target).eval()
    return networks, cfg


def generate(
    checkpoint: str | Path,
    n: int,
    out_dir: str | Path,
    *,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """Write ``n`` images ``out_dir/img_00000.png ...`` at the model's resolution, and
    ``out_dir/grid.png`` (the first 64). The same checkpoint and seed give the same images,
    whatever the batch size."""
    import torch

    from fetalgan.images import GRID_NAME, write_grid, write_images
    from fetalgan.models import family
    from fetalgan.train import to_uint8_tensor

    if n <= 0:
        raise ValueError(f"-n: must be > 0, got {n}")
    if batch_size <= 0:
        raise ValueError(f"--batch-size: must be > 0, got {batch_size}")
    networks, cfg = load_generator(checkpoint, device)
    model = family(cfg.model)
    target = next(networks[next(iter(networks))].parameters()).device
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="generate", unit="img")
    # All latents from one seeded CPU stream, so the images do not depend on batch_size.
    latents = model.latents(n, cfg, torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            z = latents[start : start + batch_size].to(target)
            images = to_uint8_tensor(model.decode(networks, z, cfg))
            paths += write_images(images, out_dir, start=start)
            if start == 0:
                write_grid(images[:64], out_dir / GRID_NAME)
            if bar is not None:
                bar.update(z.shape[0])
    if bar is not None:
        bar.close()
    return paths
