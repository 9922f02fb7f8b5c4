"""The one image reader and writer: 8-bit grey PNGs and sample grids, and the one resize
(:func:`fit_square`: crop, squash or pad to a square).

Arrays are ``(H, W) uint8`` for one image and ``(N, 1, H, W) uint8`` tensors for sets.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GRID_NAME = "grid.png"  # the contact sheet `generate` writes beside its images; not one of them


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")  # PIL's 16-bit grey (PNG, TIFF)


def read_grey(path: str | Path) -> np.ndarray:
    """Decode one image file to ``(H, W) uint8`` grey, by its bit depth: 8-bit grey as it is,
    colour through PIL's luma, 16-bit grey scaled to 0..255 (``round(v * 255 / 65535)``, so a
    full-range 16-bit scan keeps its contrast instead of clipping to white). ``ValueError``
    naming the file when it is unreadable, 32-bit integer or floating-point (no known range),
    or larger than PIL's ``MAX_IMAGE_PIXELS`` (a decompression bomb: a small file whose header
    claims an image that would fill the memory)."""
    try:
        with Image.open(path) as im:
            _check_pixels(im, path)
            if im.mode in SIXTEEN_BIT_MODES:
                wide = np.asarray(im).astype(np.uint32)
                return ((wide * 255 + 32767) // 65535).astype(np.uint8)
            if im.mode in ("I", "F"):
                kind = "32-bit integer" if im.mode == "I" else "floating-point"
                raise ValueError(
                    f"{path}: {kind} image (PIL mode {im.mode}) has no fixed range to read as "
                    "grey; convert it to an 8- or 16-bit PNG"
                )
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except Image.DecompressionBombError as err:  # over twice the limit: raised by open()
        raise ValueError(f"{path}: image too large to decode safely ({err})") from None
    except (OSError, SyntaxError) as err:  # PIL raises these for broken files
        raise ValueError(f"{path}: cannot read image ({err})") from None
    except ValueError as err:
        if str(err).startswith(f"{path}: "):
            raise
        raise ValueError(f"{path}: cannot read image ({err})") from None


def _check_pixels(im: Image.Image, path: str | Path) -> None:
    """``ValueError`` for an image over ``Image.MAX_IMAGE_PIXELS`` (PIL itself only warns up
    to twice that); an ultrasound frame is far below it."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and im.width * im.height > limit:
        raise ValueError(
            f"{path}: image too large to decode safely: {im.width}x{im.height} pixels, more "
            f"than {limit} (PIL's decompression-bomb limit)"
        )


def write_png(image: np.ndarray, path: str | Path) -> None:
    """Write ``(H, W) uint8`` as an 8-bit grey PNG; deterministic bytes for the same array."""
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"write_png expects (H, W) uint8, got {image.shape} {image.dtype}")
    Image.fromarray(image, mode="L").save(path, format="PNG", optimize=False)


def resize_crop(image: np.ndarray, resolution: int) -> np.ndarray:
    """``(H, W) uint8`` -> ``(R, R) uint8``: short side resized to ``R`` (antialiased), centre crop.

    ``data.fit: crop`` (the default), torchvision's ``Resize(R)`` + ``CenterCrop(R)``: PIL
    bilinear with antialiasing, torchvision ``Resize``'s rounding of the long side.
    """
    h, w = image.shape
    short, long = min(h, w), max(h, w)
    long_new = int(resolution * long / short)  # torchvision's rounding
    size = (long_new, resolution) if w >= h else (resolution, long_new)  # PIL: (width, height)
    img = Image.fromarray(image, mode="L")
    if (w, h) != size:
        img = img.resize(size, Image.BILINEAR)
    arr = np.asarray(img)
    top = int(round((arr.shape[0] - resolution) / 2.0))
    left = int(round((arr.shape[1] - resolution) / 2.0))
    return np.ascontiguousarray(arr[top : top + resolution, left : left + resolution])


def resize_squash(image: np.ndarray, resolution: int) -> np.ndarray:
    """``(H, W) uint8`` -> ``(R, R) uint8``: the whole image resized to ``R x R`` (antialiased
    bilinear), aspect ratio ignored: torchvision's ``Resize((R, R))``, the seed studies' resize."""
    h, w = image.shape
    if (h, w) == (resolution, resolution):
        return np.ascontiguousarray(image)
    img = Image.fromarray(image, mode="L").resize((resolution, resolution), Image.BILINEAR)
    return np.asarray(img).copy()


def resize_pad(image: np.ndarray, resolution: int) -> np.ndarray:
    """``(H, W) uint8`` -> ``(R, R) uint8``: letterboxed to a square with black (centred; the odd
    pixel of padding goes to the bottom or right), then resized to ``R x R`` (antialiased
    bilinear): all of the image, aspect ratio kept."""
    h, w = image.shape
    side = max(h, w)
    square = np.zeros((side, side), dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    square[top : top + h, left : left + w] = image
    return resize_squash(square, resolution)


def fit_square(image: np.ndarray, resolution: int, fit: str = "crop") -> np.ndarray:
    """``(H, W) uint8`` -> ``(R, R) uint8`` by ``fit`` (``data.fit``): ``crop``
    (:func:`resize_crop`), ``squash`` (:func:`resize_squash`) or ``pad`` (:func:`resize_pad`).

    The one resize of real images: training data, evaluation references, ``fetalgan evaluate``
    and the reader study all bring images to ``R x R`` through it. ``ValueError`` naming the
    choices for any other ``fit``.
    """
    if fit == "crop":
        return resize_crop(image, resolution)
    if fit == "squash":
        return resize_squash(image, resolution)
    if fit == "pad":
        return resize_pad(image, resolution)
    from fetalgan.config import FITS

    raise ValueError(f"fit: unknown value {fit!r}; expected one of {', '.join(FITS)}")


def to_uint8(images) -> np.ndarray:
    """``(N, 1, H, W)`` tensor/array in [-1, 1] float or uint8 -> ``(N, H, W) uint8`` numpy."""
    arr = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if arr.ndim == 4:
        arr = arr[:, 0]
    if arr.dtype != np.uint8:
        arr = np.clip((arr.astype(np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return arr


def make_grid(images, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile ``(N, 1, H, W)`` images into one ``(H', W') uint8`` grid, ``nrow`` per row."""
    arr = to_uint8(images)
    n, h, w = arr.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad), dtype=np.uint8)
    for i, img in enumerate(arr):
        r, c = divmod(i, nrow)
        grid[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + c * (w + pad) : pad + c * (w + pad) + w,
        ] = img
    return grid


def write_grid(images, path: str | Path, nrow: int | None = None) -> None:
    write_png(make_grid(images, nrow), path)


def write_images(images, out_dir: str | Path, *, start: int = 0, prefix: str = "img") -> list[Path]:
    """Write ``(N, 1, H, W)`` images as ``out_dir/{prefix}_{index:05d}.png``; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(to_uint8(images), start=start):
        path = out_dir / f"{prefix}_{i:05d}.png"
        write_png(img, path)
        paths.append(path)
    return paths


def list_images(directory: str | Path) -> list[Path]:
    """Image files directly in ``directory``, sorted by name; errors if missing or empty.

    ``grid.png`` (the sample sheet ``fetalgan generate`` writes next to its images) is left out,
    so ``generate --out DIR`` followed by ``evaluate --fake DIR`` reads only the samples."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: image folder not found")
    files = sorted(
        p
        for p in directory.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and p.name != GRID_NAME
    )
    if not files:
        raise ValueError(f"{directory}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files
