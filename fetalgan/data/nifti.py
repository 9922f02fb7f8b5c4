"""NIfTI volumes (fetal MR: atlases, super-resolved reconstructions, raw stacks) to 8-bit grey
slices: ``fetalgan data import-nifti SRC --out DIR`` and :func:`volume_slices`.

Each volume goes through four steps:

1. **Canonical orientation.** ``nibabel.as_closest_canonical`` reorders and flips the voxel axes
   so that they run, as closely as the grid allows, towards the patient's Right, Anterior and
   Superior (RAS+), whatever the file's own storage order (LPS, sagittal-first, ...). Nothing is
   resampled: an oblique grid is sliced along its axis closest to the asked one. "Axial" is the
   file's world frame: the fetal brain's own axial plane only for volumes in an atlas space
   (the CRL atlas, FeTA and dHCP reconstructions); for a raw stack it is the scanner's.
2. **Display orientation**, the radiological convention, the same for every file
   (:func:`oriented_slice`):

   - ``axial`` (across S): anterior at the top, the patient's right on the image's left;
   - ``coronal`` (across A): superior at the top, the patient's right on the image's left;
   - ``sagittal`` (across R): superior at the top, anterior on the image's left.

   A slice's index is its index along that RAS+ axis (0 = the most left, posterior or inferior
   slice), which may differ from the voxel index in the file.
3. **Intensity**: the volume's ``LO`` and ``HI`` percentiles (default 0.5 and 99.5) over its
   non-zero voxels (with a mask: its in-mask voxels) map linearly to 0 and 255, clipped, so an
   ``int16`` volume of -610..30393 and a ``float32`` one of 0..1e-3 both fill the grey range.
   NaN and infinite voxels are left out of the percentiles and written as 0 (black), with a
   warning giving their number.
4. **Slice choice**: the slices in ``slices`` (default all); with a mask, those where it has
   voxels (at least ``min_mask_fraction`` of its largest cross-section); without one, those
   that are not almost empty (at least ``min_foreground`` of the pixels at 10 % of the grey
   range or brighter); then every ``every``-th.

Pixels keep the voxel grid: a slice whose two in-plane voxel sizes differ by more than 10 %
comes out stretched, and a warning says by how much (resample the volume to isotropic voxels
first, e.g. ``nibabel.processing.resample_to_output``).

The import writes ``DIR/<volume-stem>_<axis>_<index:04d>.png`` (8-bit grey, through
:func:`fetalgan.images.write_png`) and one row per PNG in ``DIR/manifest.csv``
(:data:`MANIFEST_COLUMNS`), whose ``patient`` column lets fetalgan's patient splits keep the
stacks of one fetus together (the BIDS ``sub-<label>`` of the file name, else the volume).

nibabel is imported only when a volume is read: ``pip install 'fetalgan[nifti]'``.
"""

from __future__ import annotations

import argparse
import logging
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

AXES = {"sagittal": 0, "coronal": 1, "axial": 2}  # the RAS+ axis each kind of slice crosses
NIFTI_SUFFIXES = (".nii", ".nii.gz")
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = (
    "file",  # the PNG's name in DIR
    "volume",  # the NIfTI file it was cut from, as SRC named it
    "patient",  # the BIDS subject (sub-<label>) of the file name, else the volume's stem
    "axis",  # axial, coronal or sagittal
    "index",  # the slice's index along that RAS+ axis
    "lo",  # the volume's intensity shown as grey 0 (its units)
    "hi",  # ... and as grey 255
)
BIDS_SUBJECT = re.compile(r"^(sub-[A-Za-z0-9]+)(?:_|$)")  # sub-001_rec-mial_T2w -> sub-001
DEFAULT_PERCENTILES = (0.5, 99.5)
DEFAULT_MIN_FOREGROUND = 0.01  # share of a slice's pixels that must be content to keep it
FOREGROUND_LEVEL = 26  # uint8 grey (10 % of 255) from which a pixel counts as content
ASPECT_TOLERANCE = 1.1  # in-plane voxel sizes further apart than this ratio: warn
AFFINE_ATOL_MM = 0.01  # a mask's affine may differ from its volume's by float rounding only


@dataclass(frozen=True)
class SliceOptions:
    """How slices are cut from a volume; checked once, here.

    ``slices``: a Python slice over the canonical indices along ``axis`` (``slice(10, -10)``),
    ``None`` for all. ``mask``: a NIfTI file on the volume's grid, or a folder holding one of the
    volume's file name. ``min_mask_fraction`` (0..1, with a mask): keep slices whose mask area is
    at least this share of the largest one (default: any mask voxel). ``min_foreground`` (0..1,
    without a mask; default 0.01): keep slices with at least this share of content pixels.
    ``percentiles``: ``(LO, HI)`` mapped to grey 0 and 255.
    """

    axis: str = "axial"
    slices: slice | None = None
    mask: Path | None = None
    min_mask_fraction: float | None = None
    min_foreground: float | None = None
    every: int = 1
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES

    def __post_init__(self) -> None:
        if self.axis not in AXES:
            raise ValueError(
                f"axis: unknown value {self.axis!r}; expected one of {', '.join(AXES)}"
            )
        if self.slices is not None and self.slices.step not in (None, 1):
            raise ValueError(f"slices: a step is not supported ({self.slices}); use every")
        if self.every < 1:
            raise ValueError(f"every: must be 1 or more, got {self.every}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles: need 0 <= LO < HI <= 100, got {lo} {hi}")
        if self.mask is None and self.min_mask_fraction is not None:
            raise ValueError("min_mask_fraction: only with a mask (--mask)")
        if self.mask is not None and self.min_foreground is not None:
            raise ValueError(
                "min_foreground: not used with a mask (--mask chooses the slices; see "
                "min_mask_fraction)"
            )
        for name in ("min_mask_fraction", "min_foreground"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name}: must be in 0..1, got {value}")


@dataclass
class VolumeSlices:
    """The chosen slices of one volume."""

    images: np.ndarray  # (N, H, W) uint8, display orientation (see oriented_slice)
    indices: list[int]  # each slice's index along the RAS+ axis
    axis: str  # axial, coronal or sagittal
    lo: float  # the volume's intensity mapped to grey 0 (its units, after scl_slope)
    hi: float  # ... and to grey 255
    considered: int  # slices in the asked range, before the mask/emptiness filter and every


@dataclass
class ImportSummary:
    """What :func:`import_nifti` wrote."""

    paths: list[Path]  # the PNGs, in manifest order
    manifest: Path
    volumes: int
    considered: int  # slices in the asked range over all volumes (before filters and every)


# --------------------------------------------------------------------------------------------
# Pure functions over arrays
# --------------------------------------------------------------------------------------------


def oriented_slice(volume: np.ndarray, axis: str, index: int) -> np.ndarray:
    """One slice of an ``(X, Y, Z)`` RAS+ volume as ``(H, W)``, radiological convention.

    ``axial``: ``(Y, X)``, rows anterior to posterior, columns right to left. ``coronal``:
    ``(Z, X)``, rows superior to inferior, columns right to left. ``sagittal``: ``(Z, Y)``, rows
    superior to inferior, columns anterior to posterior.
    """
    if axis == "axial":
        plane = volume[::-1, ::-1, index]
    elif axis == "coronal":
        plane = volume[::-1, index, ::-1]
    elif axis == "sagittal":
        plane = volume[index, ::-1, ::-1]
    else:
        raise ValueError(f"axis: unknown value {axis!r}; expected one of {', '.join(AXES)}")
    return np.ascontiguousarray(plane.T)


def intensity_window(
    volume: np.ndarray, where: np.ndarray, percentiles: tuple[float, float]
) -> tuple[float, float]:
    """``(lo, hi)``: the ``percentiles`` of ``volume`` over the voxels where ``where`` is True
    (non-zero, finite, in the mask). ``ValueError`` when there are none or ``lo == hi``."""
    values = volume[where]
    if values.size == 0:
        raise ValueError("no non-zero finite voxels to set the intensity range from")
    lo, hi = (float(v) for v in np.percentile(values, percentiles))
    if not hi > lo:
        raise ValueError(
            f"no contrast: the {percentiles[0]} and {percentiles[1]} percentiles are both {lo:g}"
        )
    return lo, hi


def to_grey(volume: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Any-dtype array -> uint8 of the same shape: ``lo`` -> 0, ``hi`` -> 255, linear, rounded
    and clipped; NaN and infinite values -> 0."""
    scaled = (volume.astype(np.float64) - lo) * (255.0 / (hi - lo)) + 0.5
    scaled[~np.isfinite(scaled)] = 0.0
    return np.clip(scaled, 0, 255).astype(np.uint8)


def chosen_indices(
    grey: np.ndarray,
    mask: np.ndarray | None,
    axis: str,
    options: SliceOptions,
) -> tuple[list[int], int]:
    """The slice indices along ``axis`` that ``options`` keeps, and how many were in range.

    ``grey``: the ``(X, Y, Z)`` uint8 volume; ``mask``: ``(X, Y, Z)`` bool or None.
    """
    axis_n = AXES[axis]
    others = tuple(a for a in range(3) if a != axis_n)
    in_range = list(range(grey.shape[axis_n]))[options.slices or slice(None)]
    if mask is not None:
        area = mask.sum(axis=others)
        least = (options.min_mask_fraction or 0.0) * area.max()
        keep = [i for i in in_range if area[i] > 0 and area[i] >= least]
    else:
        least = DEFAULT_MIN_FOREGROUND if options.min_foreground is None else options.min_foreground
        content = (grey >= FOREGROUND_LEVEL).mean(axis=others)
        keep = [i for i in in_range if content[i] >= least]
    return keep[:: options.every], len(in_range)


def parse_slices(text: str) -> slice:
    """``"A:B"`` (either side may be empty or negative, as in Python) -> ``slice(A, B)``."""
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise ValueError(
            f"--slices: expected A:B as in Python (e.g. 20:60, 20:, :-10), got {text!r}"
        ) from None
    return slice(start, stop)


def slice_text(chosen: slice) -> str:
    """``slice(20, None)`` -> ``"20:"``: the inverse of :func:`parse_slices`."""
    return ":".join("" if v is None else str(v) for v in (chosen.start, chosen.stop))


# --------------------------------------------------------------------------------------------
# Reading volumes (nibabel)
# --------------------------------------------------------------------------------------------


def _nibabel():
    try:
        import nibabel
    except ModuleNotFoundError as err:
        from fetalgan.extras import missing

        raise missing(err.name, "nifti", "reading NIfTI volumes") from err
    return nibabel


def volume_stem(path: str | Path) -> str:
    """``sub-01_T2w.nii.gz`` -> ``sub-01_T2w``."""
    name = Path(path).name
    for suffix in sorted(NIFTI_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def volume_patient(path: str | Path) -> str:
    """Whom a volume shows, for fetalgan's patient splits: the BIDS subject of its file name
    (``sub-001_rec-mial_T2w.nii.gz`` -> ``sub-001``, so the stacks and sessions of one fetus
    stay together), else its stem (each volume its own patient)."""
    stem = volume_stem(path)
    match = BIDS_SUBJECT.match(stem)
    return match.group(1) if match else stem


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES)


def list_volumes(src: str | Path) -> list[Path]:
    """``src`` itself (a ``.nii``/``.nii.gz`` file) or the NIfTI files directly in the folder
    ``src``, sorted by name."""
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src}: not found (expected a .nii/.nii.gz file or a folder)")
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if _is_nifti(p))
        if not files:
            raise ValueError(
                f"{src}: no NIfTI volumes ({', '.join(NIFTI_SUFFIXES)}) in this folder"
            )
    elif _is_nifti(src):
        files = [src]
    else:
        raise ValueError(
            f"{src}: not a NIfTI file; expected a name ending {' or '.join(NIFTI_SUFFIXES)}"
        )
    stems: dict[str, Path] = {}
    for path in files:
        if volume_stem(path) in stems:
            raise ValueError(
                f"{path}: same name as {stems[volume_stem(path)]} once the suffix is dropped; "
                "their slices would overwrite each other"
            )
        stems[volume_stem(path)] = path
    return files


def _load_3d(path: Path, what: str = "volume"):
    """The image at ``path`` with trailing length-1 axes past the third dropped; ``ValueError``
    naming the file when it is unreadable, not 3D, or not scalar."""
    nib = _nibabel()
    from nibabel.filebasedimages import ImageFileError
    from nibabel.funcs import squeeze_image

    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        img = nib.load(path)
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error) as err:
        raise ValueError(f"{path}: cannot read as NIfTI ({err})") from None
    if len(img.shape) > 3:
        img = squeeze_image(img)  # (X, Y, Z, 1) is one volume
    if len(img.shape) != 3:
        kind = f"{len(img.shape)}D"
        hint = (
            "; take one volume out first, e.g. nibabel.four_to_three(img)[0]"
            if len(img.shape) > 3
            else ""
        )
        raise ValueError(
            f"{path}: {kind} image of shape {tuple(img.shape)}; import-nifti takes 3D {what}s "
            f"(a 4D one only when its 4th axis has length 1){hint}"
        )
    dtype = img.get_data_dtype()
    if dtype.fields is not None or not np.issubdtype(dtype, np.number) or dtype.kind == "c":
        raise ValueError(f"{path}: voxel type {dtype} is not a real scalar intensity")
    return img


def _voxels(img, path: Path) -> np.ndarray:
    try:
        return np.asarray(img.dataobj, dtype=np.float64)
    except (OSError, EOFError, ValueError, zlib.error) as err:  # a truncated or corrupt data block
        raise ValueError(f"{path}: cannot read the voxel data ({err})") from None


def _canonical(path: Path):
    """``(data, voxel_sizes, image)``: ``(X, Y, Z) float64`` in RAS+ order and its voxel sizes
    in mm, ``image`` the file as read (before reorientation)."""
    _nibabel()
    from nibabel.affines import voxel_sizes
    from nibabel.funcs import as_closest_canonical
    from nibabel.nifti1 import Nifti1Header

    img = _load_3d(path)
    header = img.header
    if isinstance(header, Nifti1Header) and header["sform_code"] == header["qform_code"] == 0:
        log.warning(
            "%s: no orientation in the header (sform and qform codes 0); nibabel's default "
            "axes are assumed and the slices may be flipped",
            path,
        )
    canonical = as_closest_canonical(img)
    sizes = voxel_sizes(canonical.affine)
    return _voxels(canonical, path), sizes, img


def _mask_for(path: Path, volume_img, mask: Path) -> np.ndarray:
    """The mask of the volume at ``path`` (``mask`` itself, or the file of the volume's name in
    the folder ``mask``) as ``(X, Y, Z) bool`` in the volume's RAS+ order."""
    _nibabel()
    from nibabel.orientations import apply_orientation, io_orientation

    mask_path = mask / path.name if mask.is_dir() else mask
    mask_img = _load_3d(mask_path, "mask")
    if mask_img.shape != volume_img.shape or not np.allclose(
        mask_img.affine, volume_img.affine, atol=AFFINE_ATOL_MM
    ):
        raise ValueError(
            f"{mask_path}: not on the grid of {path} (mask shape {tuple(mask_img.shape)}, volume "
            f"{tuple(volume_img.shape)}; their affines must match too)"
        )
    ornt = io_orientation(volume_img.affine)  # the volume's own reorientation
    values = apply_orientation(_voxels(mask_img, mask_path), ornt)
    return np.isfinite(values) & (values != 0)


def _warn_aspect(path: Path, sizes: np.ndarray, axis: str) -> None:
    in_plane = [float(sizes[a]) for a in range(3) if a != AXES[axis]]
    ratio = max(in_plane) / min(in_plane)
    if ratio > ASPECT_TOLERANCE:
        log.warning(
            "%s: %s voxels are %.3g x %.3g mm in plane, so the slices come out stretched %.2fx "
            "along one side; resample the volume to isotropic voxels first for true shapes",
            path,
            axis,
            *in_plane,
            ratio,
        )


def volume_slices(path: str | Path, options: SliceOptions | None = None) -> VolumeSlices:
    """The 8-bit slices of one NIfTI volume, chosen, windowed and oriented by ``options``
    (default: every non-empty axial slice, 0.5..99.5 percentile window; see the module's
    docstring for the orientation convention). ``ValueError`` naming the file for 2D, 4D or
    unreadable volumes, an empty volume, or a mask off the volume's grid."""
    options = options or SliceOptions()
    path = Path(path)
    data, sizes, img = _canonical(path)
    mask = _mask_for(path, img, Path(options.mask)) if options.mask is not None else None
    finite = np.isfinite(data)
    n_bad = int(finite.size - finite.sum())
    if n_bad:
        log.warning("%s: %d NaN or infinite voxels, written as 0 (black)", path, n_bad)
    where = finite & (mask if mask is not None else data != 0)
    try:
        lo, hi = intensity_window(data, where, options.percentiles)
    except ValueError as err:
        place = "in the mask" if mask is not None else "in the volume"
        raise ValueError(f"{path}: {err} ({place})") from None
    grey = to_grey(data, lo, hi)
    indices, considered = chosen_indices(grey, mask, options.axis, options)
    if indices:
        _warn_aspect(path, sizes, options.axis)
    images = [oriented_slice(grey, options.axis, i) for i in indices]
    shape = oriented_slice(grey, options.axis, 0).shape
    stack = np.stack(images) if images else np.zeros((0, *shape), dtype=np.uint8)
    return VolumeSlices(stack, indices, options.axis, lo, hi, considered)


# --------------------------------------------------------------------------------------------
# The import: files in, PNGs and a manifest out
# --------------------------------------------------------------------------------------------


def import_nifti(
    src: str | Path,
    out: str | Path,
    options: SliceOptions | None = None,
    *,
    progress: bool = True,
) -> ImportSummary:
    """Write the slices of every volume in ``src`` (a file or a folder of them) to ``out`` as
    ``<volume-stem>_<axis>_<index:04d>.png`` (8-bit grey) and their rows
    (:data:`MANIFEST_COLUMNS`) to ``out/manifest.csv``: an earlier import's rows stay, those
    of rewritten PNGs are replaced, so volumes may be imported into one folder one run at a time
    (``data: {kind: folder, root: DIR}`` then knows each image's patient). Same-named PNGs are
    overwritten. ``ValueError`` when no slice at all is chosen, or ``out`` holds another
    tool's manifest."""
    from tqdm.auto import tqdm

    from fetalgan.images import write_png

    options = options or SliceOptions()
    volumes = list_volumes(src)
    if options.mask is not None:
        mask = Path(options.mask)
        if not mask.exists():
            raise FileNotFoundError(f"--mask {mask}: not found")
        if len(volumes) > 1 and not mask.is_dir():
            raise ValueError(
                f"--mask {mask}: {src} holds {len(volumes)} volumes; give a folder of masks "
                "named as the volumes"
            )
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder; give a folder")
    from fetalgan.data.datasets import read_manifest, write_manifest

    earlier = read_manifest(
        out / MANIFEST, MANIFEST_COLUMNS, "import-nifti"
    )  # before any work: refuses another tool's
    out.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, str]] = []
    paths: list[Path] = []
    considered = 0
    for path in tqdm(volumes, desc="import-nifti", unit="vol", disable=None if progress else True):
        chosen = volume_slices(path, options)
        considered += chosen.considered
        if not chosen.indices and len(volumes) > 1:
            log.warning("%s: no %s slice chosen", path, chosen.axis)
        for index, image in zip(chosen.indices, chosen.images, strict=True):
            name = f"{volume_stem(path)}_{chosen.axis}_{index:04d}.png"
            write_png(image, out / name)
            paths.append(out / name)
            rows.append(
                {
                    "file": name,
                    "volume": str(path),
                    "patient": volume_patient(path),
                    "axis": chosen.axis,
                    "index": str(index),
                    "lo": f"{chosen.lo:.6g}",
                    "hi": f"{chosen.hi:.6g}",
                }
            )
    if not rows:
        if considered == 0:
            raise ValueError(
                f"{src}: --slices {slice_text(options.slices)} selects no {options.axis} slice"
            )
        kept = "with mask voxels" if options.mask is not None else "with enough content"
        raise ValueError(
            f"{src}: no {options.axis} slice chosen: {considered} in range, none {kept}; "
            "see --min-foreground, --min-mask-fraction"
        )
    written = {row["file"] for row in rows}
    manifest = out / MANIFEST
    write_manifest(
        manifest, [row for row in earlier if row["file"] not in written] + rows, MANIFEST_COLUMNS
    )
    return ImportSummary(paths, manifest, len(volumes), considered)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _slices_arg(text: str) -> slice:
    try:
        return parse_slices(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--slices: ")) from None


def cmd_import_nifti(args: argparse.Namespace) -> int:
    options = SliceOptions(
        axis=args.axis,
        slices=args.slices,
        mask=Path(args.mask) if args.mask else None,
        min_mask_fraction=args.min_mask_fraction,
        min_foreground=args.min_foreground,
        every=args.every,
        percentiles=tuple(args.percentiles),
    )
    summary = import_nifti(args.src, args.out, options)
    n = len(summary.paths)
    why = "outside the mask" if options.mask else "almost empty"
    if options.every > 1:
        why += " or between --every steps"
    print(
        f"wrote {n} {options.axis} slices of {summary.volumes} volume(s) to {args.out}, listed "
        f"in {summary.manifest.name}; {summary.considered - n} of the {summary.considered} "
        f"slices in range left out ({why})"
    )
    return 0


def add_cli(data_sub) -> None:
    """``fetalgan data import-nifti SRC --out DIR``."""
    p = data_sub.add_parser(
        "import-nifti",
        help="NIfTI MR volumes -> 8-bit PNG slices, canonical orientation, percentile window",
        description="Slice 3D NIfTI volumes into 8-bit grey PNGs named "
        "<volume>_<axis>_<index:04d>.png, listed in DIR/manifest.csv (file, volume, patient, "
        "axis, index, lo, hi; patient: the BIDS sub-<label> of the file name, else the "
        "volume's name; an earlier import's rows are kept). Volumes are put in RAS+ order (nibabel.as_closest_canonical, no resampling) "
        "and shown in the radiological convention whatever the file's orientation: axial: "
        "anterior up, the patient's right on the image's left; coronal: superior up, right on "
        "the left; sagittal: superior up, anterior on the left. Index = position along that "
        "RAS+ axis (0 = left/posterior/inferior end). Intensities: the volume's LO..HI "
        "percentiles over its non-zero (or in-mask) voxels -> 0..255, clipped; NaN/inf -> 0 "
        "with a warning. Non-square in-plane voxels are kept and warned about. A 4D volume is "
        "refused unless its 4th axis has length 1.",
    )
    p.add_argument("src", metavar="SRC", help="a .nii/.nii.gz volume or a folder of them")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument(
        "--axis",
        default="axial",
        choices=tuple(sorted(AXES, key=AXES.get, reverse=True)),
        help="which slices: axial (across superior-inferior, default), coronal, sagittal",
    )
    p.add_argument(
        "--slices",
        type=_slices_arg,
        metavar="A:B",
        help="only slices A..B-1 along the axis, Python-like (20:60, 20:, :-10); the other "
        "filters still apply",
    )
    p.add_argument(
        "--mask",
        metavar="MASK",
        help="a NIfTI mask on the volume's grid (a folder of masks named as the volumes when "
        "SRC is a folder): keep slices where it has voxels, window on its voxels",
    )
    p.add_argument(
        "--min-mask-fraction",
        type=float,
        metavar="F",
        help="with --mask: keep slices whose mask area is at least F (0..1) of the largest "
        "(default: any mask voxel)",
    )
    p.add_argument(
        "--min-foreground",
        type=float,
        metavar="F",
        help=f"without --mask: keep slices with at least F (0..1) of their pixels at grey "
        f"{FOREGROUND_LEVEL} or more (default {DEFAULT_MIN_FOREGROUND}; 0 keeps empty slices)",
    )
    p.add_argument("--every", type=int, default=1, metavar="K", help="every K-th chosen slice")
    p.add_argument(
        "--percentiles",
        type=float,
        nargs=2,
        default=DEFAULT_PERCENTILES,
        metavar=("LO", "HI"),
        help="intensity percentiles mapped to grey 0 and 255 (default 0.5 99.5)",
    )
    p.set_defaults(func=cmd_import_nifti)
