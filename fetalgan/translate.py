"""``fetalgan translate``: one MR-like PNG per US image, from a translation checkpoint
(``us2mri``, ``cyclegan``).

Each input is read as 8-bit grey, resized (bilinear, antialiased; the whole image, no crop) to
the model's ``R x R``, translated, and the result resized back to the input's size and
written as ``OUT/<input stem>.png``.
"""

from __future__ import annotations

from pathlib import Path


def translate_folder(
    checkpoint: str | Path,
    in_dir: str | Path,
    out_dir: str | Path,
    *,
    batch_size: int = 64,
    device: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """Translate every image in ``in_dir`` (``fetalgan.images.IMAGE_SUFFIXES``) into
    ``out_dir``; return the written paths, in input order. ValueError for a checkpoint of a
    model that does not translate, for a 3D-auxiliary model (it needs neighbour slices, which
    a folder of single images does not have), or for two inputs with one stem;
    FileNotFoundError for a missing or empty ``in_dir``."""
    import numpy as np
    import torch
    from PIL import Image

    from fetalgan.generate import load_generator
    from fetalgan.images import list_images, read_grey, write_png
    from fetalgan.models import registry
    from fetalgan.sampling import decode_uint8, network_device

    if batch_size <= 0:
        raise ValueError(f"--batch-size: must be > 0, got {batch_size}")
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise FileNotFoundError(f"--in: {in_dir} is not a folder of US images")
    paths = list_images(in_dir)
    if not paths:
        raise FileNotFoundError(f"--in: no images in {in_dir}")
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        twice = next(s for s in stems if stems.count(s) > 1)
        raise ValueError(f"--in: two images named {twice} in {in_dir}; outputs are <stem>.png")

    networks, cfg = load_generator(checkpoint, device)
    spec = registry.spec(cfg.model)
    if not spec.target_domain:
        raise ValueError(
            f"{checkpoint}: model {cfg.model} generates images from noise; translate needs a "
            "translation checkpoint (model us2mri or cyclegan); use fetalgan generate"
        )
    if cfg.model == "us2mri" and cfg.us2mri.aux3d:
        raise ValueError(
            f"{checkpoint}: this us2mri model takes 3D auxiliary input (neighbour slices and a "
            "location index), which single images do not carry; translate with a model "
            "trained with us2mri.aux3d: false"
        )
    translate = spec.implementation().translate  # the family's US -> MR
    target = network_device(networks)
    r = cfg.resolution
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(paths), desc="translate", unit="img", disable=None)  # off if no TTY
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        images = [read_grey(p) for p in chunk]
        small = np.stack(
            [np.asarray(Image.fromarray(im).resize((r, r), Image.BILINEAR)) for im in images]
        )
        us = torch.from_numpy(small)[:, None].float().div_(127.5).sub_(1.0).to(target)
        mr = decode_uint8(translate, networks, us, cfg)[:, 0].numpy()
        for path, image, out in zip(chunk, images, mr, strict=True):
            h, w = image.shape
            full = out if (h, w) == (r, r) else Image.fromarray(out).resize((w, h), Image.BILINEAR)
            dest = out_dir / f"{path.stem}.png"
            write_png(np.asarray(full), dest)
            written.append(dest)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return written
