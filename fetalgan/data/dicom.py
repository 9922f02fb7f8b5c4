"""Clinical ultrasound DICOM to de-identified 8-bit grey PNGs: ``fetalgan data import-dicom SRC
--out DIR`` and :func:`import_dicom`.

Each DICOM file (``SRC`` is one, or a folder searched recursively) goes through five steps:

1. **Read** with ``pydicom.dcmread(force=False)``: a file without the DICOM preamble is not
   DICOM and is skipped (counted); so are a DICOMDIR and a DICOM file without pixel data (a
   structured report, a waveform). Compressed transfer syntaxes are decoded by pydicom's
   optional plugins (pillow, pylibjpeg, gdcm, pyjpegls); when none for the file's syntax is
   installed, the file fails with the syntax and the ``pip install`` that brings one, and the
   import goes on with the next file (``strict`` stops instead). Video syntaxes (MPEG, HEVC)
   have no pydicom decoder at all.
2. **Frames**: ``first``, ``middle`` (index ``n // 2``) or ``all``; with ``all``, every
   ``every``-th frame, then at most ``max_frames`` of those, evenly spaced over the clip.
3. **Grey**: MONOCHROME2 as stored; MONOCHROME1 inverted (``255 - v`` after scaling);
   RGB, YBR_FULL, YBR_FULL_422 (pydicom converts YBR to RGB when decoding) and PALETTE COLOR
   (``pydicom.pixels.apply_color_lut``; a 16-bit palette to 8 bits by its high byte, ``v >> 8``,
   which keeps the common 8-bit colours stored as ``v * 256`` exact)
   through ITU-R BT.601 luma, PIL's fixed-point ``(19595 R + 38470 G + 7471 B + 32768) >> 16``,
   the same as :func:`fetalgan.images.read_grey`.
4. **8 bits**: unsigned data of at most 8 bits stored is kept as it is. Anything else (more
   than 8 bits, signed, float) is scaled linearly, after the Modality LUT's rescale slope and
   intercept, by ``scale``: ``range`` (default) maps the lowest and highest value over the
   file's chosen frames to 0 and 255, so nothing is clipped; ``window`` maps the file's first
   VOI window (WindowCenter/WindowWidth, DICOM's linear function) and clips what lies
   outside it, with the clipped fraction in the manifest and a count in the report (a file
   without a window falls back to ``range``, and the manifest says so).
5. **Crop** to the ultrasound image: the largest 2D region (RegionSpatialFormat 1) of the
   SequenceOfUltrasoundRegions (0018,6011), its RegionLocationMinX0/MinY0/MaxX1/MaxY1 (the
   maximum inclusive) clipped to the frame; without one, the bounding box of the non-zero grey
   pixels over the chosen frames; ``crop=False`` keeps the whole frame. Every frame of a file
   gets the same crop.

What leaves the file is de-identified: PNGs are named ``<instance>_<frame:04d>.png`` where
``instance`` is a salted hash of the SOP Instance UID (of the file's bytes when it has none),
and carry no text chunks (:func:`fetalgan.images.write_png` writes pixels only).
``DIR/manifest.csv`` has one row per PNG with the columns :data:`MANIFEST_COLUMNS`; its
``patient`` is ``sha256(salt + ":patient:" + PatientID)``, 16 hex digits, so that fetalgan's
patient splits keep one patient's images together (``data: {kind: folder, root: DIR}``). The
salt is a random 64-hex-digit secret in ``salt_file`` (default ``DIR/.fetalgan_salt``, mode
0600), created on first use: importing more files into ``DIR`` later with the same salt file
groups the same patient together, and a manifest whose rows were made with another salt is
refused. A file without PatientID is its own patient (``has_patient_id`` 0). No name, ID, date,
UID, accession number or institution reaches a PNG, the manifest, the report or an error
line: errors name the file by its path relative to ``SRC`` (the user's own), and pydicom's own
warnings, which can quote element values, are counted but not shown.

pydicom is imported only when a file is read: ``pip install 'fetalgan[dicom]'``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import secrets
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
SALT_FILE = ".fetalgan_salt"  # default salt file, inside DIR
FRAME_CHOICES = ("first", "middle", "all")
SCALES = ("range", "window")
MANIFEST_COLUMNS = (
    "file",  # the PNG's name in DIR
    "patient",  # salted hash of the PatientID (or of the instance when it has none)
    "frame",  # 0-based index of the frame in its file
    "frames",  # number of frames in the file
    "has_patient_id",  # 1, or 0: the file had no PatientID and is its own patient
    "modality",  # US, ...
    "photometric",  # the file's PhotometricInterpretation
    "bits_stored",
    "transfer_syntax",  # its name, e.g. JPEG Baseline (Process 1)
    "rows",  # the frame's size before the crop
    "cols",
    "crop",  # region (SequenceOfUltrasoundRegions), nonzero (bounding box) or none
    "x0",  # the crop in the frame's pixels: columns x0..x1-1, rows y0..y1-1
    "y0",
    "x1",
    "y1",
    "scale",  # 8bit (as stored), range, window, or range (no window)
    "lo",  # the stored value (after rescale) that became grey 0
    "hi",  # ... and grey 255
    "clipped",  # fraction of the frame's pixels clipped by the window (0 unless window)
    "salt_id",  # first 8 hex digits of sha256(salt): which salt made `patient`
)
PATIENT_HASH_DIGITS = 16
SALT_BYTES = 32
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# What installs a decoder, by transfer syntax UID; pillow comes with fetalgan but may be built
# without a codec. pydicom's own list of plugins is the fallback for any other syntax.
DECODER_INSTALL = {
    "1.2.840.10008.1.2.4.50": "pip install pylibjpeg pylibjpeg-libjpeg (or pillow)",
    "1.2.840.10008.1.2.4.51": "pip install pylibjpeg pylibjpeg-libjpeg (or pillow)",
    "1.2.840.10008.1.2.4.57": "pip install pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pip install pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pip install pylibjpeg pylibjpeg-libjpeg (or pyjpegls)",
    "1.2.840.10008.1.2.4.81": "pip install pylibjpeg pylibjpeg-libjpeg (or pyjpegls)",
    "1.2.840.10008.1.2.4.90": "pip install pylibjpeg pylibjpeg-openjpeg (or pillow)",
    "1.2.840.10008.1.2.4.91": "pip install pylibjpeg pylibjpeg-openjpeg (or pillow)",
    "1.2.840.10008.1.2.4.201": "pip install pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pip install pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pip install pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pip install pylibjpeg pylibjpeg-rle",
}
# Elements whose values must never be shown: removed from any message before it is printed.
IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientAddress",
    "AccessionNumber",
    "StudyID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "StationName",
    "DeviceSerialNumber",
)
# How pydicom and its decoders report a malformed or undecodable file; one file's failure,
# counted and reported, never the end of the import (unless strict).
FILE_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    NotImplementedError,
    RuntimeError,
)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1: columns x0..x1-1, rows y0..y1-1


class FileFailure(Exception):
    """One file could not be imported; ``reason`` names no identifier and no path."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class ImportReport:
    """What :func:`import_dicom` did; :func:`format_report` writes it for people."""

    out: Path
    manifest: Path
    salt_file: Path
    salt_created: bool
    files_read: int = 0  # DICOM files with pixel data whose frames were written
    frames_written: int = 0
    not_dicom: int = 0  # files skipped: not DICOM (no preamble / DICM prefix)
    no_pixels: int = 0  # DICOM files skipped: a DICOMDIR or no pixel data
    duplicates: int = 0  # files skipped: a SOP Instance already imported in this run
    replaced_rows: int = 0  # manifest rows of an earlier import rewritten by this one
    manifest_rows: int = 0  # rows in the manifest after this import
    no_patient_id: int = 0  # imported files without PatientID (each its own patient)
    scales: Counter = field(default_factory=Counter)  # files by manifest `scale`
    clipped_frames: int = 0  # frames with pixels clipped by --scale window
    pydicom_warnings: int = 0  # warnings pydicom raised while reading (not shown)
    failures: dict[str, list[str]] = field(default_factory=dict)  # reason -> files (rel. SRC)

    @property
    def failed(self) -> int:
        return sum(len(files) for files in self.failures.values())


@dataclass(frozen=True)
class FrameOptions:
    """Which frames of a file are written, and how they become 8-bit grey; checked here."""

    frames: str = "all"
    every: int | None = None  # with frames=all: every K-th frame (default 1)
    max_frames: int | None = None  # with frames=all: at most N per file, evenly spaced
    scale: str = "range"
    crop: bool = True

    def __post_init__(self) -> None:
        if self.frames not in FRAME_CHOICES:
            raise ValueError(
                f"--frames: unknown value {self.frames!r}; expected one of "
                f"{', '.join(FRAME_CHOICES)}"
            )
        if self.scale not in SCALES:
            raise ValueError(
                f"--scale: unknown value {self.scale!r}; expected one of {', '.join(SCALES)}"
            )
        for option, value in (("--every", self.every), ("--max-frames", self.max_frames)):
            if value is not None and value < 1:
                raise ValueError(f"{option}: must be 1 or more, got {value}")
            if value is not None and self.frames != "all":
                raise ValueError(
                    f"{option}: only with --frames all (--frames {self.frames} writes one "
                    "frame per file)"
                )


# --------------------------------------------------------------------------------------------
# Pure functions: frames, crop, grey, hashes
# --------------------------------------------------------------------------------------------


def chosen_frames(n_frames: int, options: FrameOptions) -> list[int]:
    """The 0-based frames of an ``n_frames`` file to write: ``first`` ``[0]``, ``middle``
    ``[n // 2]``, ``all`` ``0, K, 2K...`` (``every`` K), then at most ``max_frames`` of those,
    evenly spaced from the first to the last (``round(linspace)``)."""
    if n_frames < 1:
        return []
    if options.frames == "first":
        return [0]
    if options.frames == "middle":
        return [n_frames // 2]
    indices = list(range(0, n_frames, options.every or 1))
    cap = options.max_frames
    if cap is not None and len(indices) > cap:
        picks = np.round(np.linspace(0, len(indices) - 1, cap)).astype(int)
        indices = [indices[i] for i in picks]
    return indices


def region_box(regions, rows: int, cols: int) -> Box | None:
    """The largest 2D region (RegionSpatialFormat 1) of a SequenceOfUltrasoundRegions, as a
    half-open box clipped to a ``rows x cols`` frame (RegionLocationMax is inclusive); None
    when there is none inside the frame. ``regions``: the sequence's items (mappings with the
    DICOM keywords as attributes)."""
    best: Box | None = None
    for region in regions or ():
        if getattr(region, "RegionSpatialFormat", None) != 1:
            continue
        corners = [
            getattr(region, keyword, None)
            for keyword in (
                "RegionLocationMinX0",
                "RegionLocationMinY0",
                "RegionLocationMaxX1",
                "RegionLocationMaxY1",
            )
        ]
        if any(value is None for value in corners):
            continue
        x0, y0, x1, y1 = (int(value) for value in corners)
        box = (max(0, x0), max(0, y0), min(cols, x1 + 1), min(rows, y1 + 1))
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        if best is None or _area(box) > _area(best):
            best = box
    return best


def _area(box: Box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def nonzero_box(frames: list[np.ndarray]) -> Box | None:
    """The half-open bounding box of the pixels that are non-zero in any of ``frames`` (each
    ``(H, W)``, one size); None when all are zero."""
    mask = np.any(np.stack(frames) > 0, axis=0)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def luma(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` integer RGB -> ``(H, W)`` ITU-R BT.601 luma in the same range, PIL's
    fixed point: ``(19595 R + 38470 G + 7471 B + 32768) >> 16``; uint8 in, uint8 out."""
    wide = rgb.astype(np.int64)
    grey = (19595 * wide[..., 0] + 38470 * wide[..., 1] + 7471 * wide[..., 2] + 32768) >> 16
    return grey.astype(np.uint8) if rgb.dtype == np.uint8 else grey


def scale_to_8bit(
    frames: list[np.ndarray], *, window: tuple[float, float] | None = None
) -> tuple[list[np.ndarray], float, float, list[float]]:
    """Frames of any numeric type -> ``(H, W) uint8`` frames, ``lo``, ``hi`` and each frame's
    clipped fraction.

    Without ``window``: ``round((v - lo) * 255 / (hi - lo))`` with ``lo``, ``hi`` the lowest
    and highest value over all ``frames`` (nothing clipped; all 0 when ``lo == hi``). With
    ``window = (center, width)``: DICOM's linear VOI function (PS3.3 C.11.2.1.2.1),
    ``lo = c - 0.5 - (w - 1) / 2``, ``hi = c - 0.5 + (w - 1) / 2``, values outside clipped."""
    if window is None:
        lo = float(min(f.min() for f in frames))
        hi = float(max(f.max() for f in frames))
    else:
        center, width = window
        lo, hi = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    span = hi - lo
    out, clipped = [], []
    for frame in frames:
        values = frame.astype(np.float64)
        clipped.append(float(np.mean((values < lo) | (values > hi))) if window else 0.0)
        if span <= 0:
            grey = np.where(values > hi, 255.0, 0.0) if window else np.zeros_like(values)
        else:
            grey = np.clip(np.floor((values - lo) * 255.0 / span + 0.5), 0, 255)
        out.append(grey.astype(np.uint8))
    return out, lo, hi, clipped


def salted_hash(salt: str, kind: str, value: str, digits: int = PATIENT_HASH_DIGITS) -> str:
    """``sha256(salt + ":" + kind + ":" + value)``, the first ``digits`` hex digits."""
    return hashlib.sha256(f"{salt}:{kind}:{value}".encode()).hexdigest()[:digits]


def salt_id(salt: str) -> str:
    """Which salt made a manifest's hashes: 8 hex digits of ``sha256(salt)``, which tell
    nothing about the salt itself."""
    return hashlib.sha256(salt.encode()).hexdigest()[:8]


# --------------------------------------------------------------------------------------------
# The salt and the manifest
# --------------------------------------------------------------------------------------------


def load_salt(path: str | Path) -> tuple[str, bool]:
    """The salt in ``path`` and whether it was created now: a new random salt
    (``secrets.token_hex``) written with mode 0600 when the file does not exist.
    ``ValueError`` for an empty salt file or a folder."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--salt-file {path}: is a folder; give a file")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        salt = secrets.token_hex(SALT_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(salt + "\n")
        os.chmod(path, 0o600)  # whatever the umask
        return salt, True
    salt = path.read_text(encoding="utf-8").strip()
    if not salt:
        raise ValueError(f"--salt-file {path}: is empty; give the salt of earlier imports")
    return salt, False


# --------------------------------------------------------------------------------------------
# Reading one file (pydicom)
# --------------------------------------------------------------------------------------------


def _pydicom():
    try:
        import pydicom
        import pydicom.pixels
    except ModuleNotFoundError as err:
        from fetalgan.extras import missing

        raise missing(err.name, "dicom", "fetalgan data import-dicom") from err
    return pydicom


def list_sources(src: Path, skip: Path | None = None) -> list[Path]:
    """``src`` itself when it is a file, else every file under it (recursively, links to
    folders not followed), sorted; ``skip`` (the output folder) and what is under it left
    out."""
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: not found; give a DICOM file or a folder of them")
    skip = skip.resolve() if skip is not None else None
    files = []
    for folder, dirs, names in os.walk(src):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if skip is None or (here / d).resolve() != skip)
        files += [here / name for name in names if (here / name).is_file()]
    return sorted(files)


@dataclass
class Instance:
    """The chosen frames of one file as grey, and the manifest fields they share."""

    frames: list[np.ndarray]  # (H, W) uint8, cropped
    indices: list[int]
    instance_key: str  # "sop:<uid>" or "content:<sha256>"; hashed before it is used
    patient_id: str  # "" when the file has none
    fields: dict[str, str]  # manifest columns shared by the file's frames
    clipped: list[float]


def _identifiers(ds) -> list[str]:
    values = []
    for keyword in IDENTIFYING_KEYWORDS:
        value = ds.get(keyword)
        items = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
        values += [str(v) for v in items if v is not None and len(str(v)) >= 3]
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("MediaStorageSOPInstanceUID"):
        values.append(str(meta.MediaStorageSOPInstanceUID))
    return sorted(set(values), key=len, reverse=True)


def _scrub(text: str, identifiers: list[str]) -> str:
    """``text`` on one line, at most 200 characters, every identifier replaced."""
    for value in identifiers:
        text = text.replace(value, "<identifier>")
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


def _decoder(ds):
    """pydicom's decoder for ``ds``'s transfer syntax; :class:`FileFailure` naming the syntax
    and what to install when no decoder for it exists or is installed."""
    from pydicom.pixels import get_decoder

    syntax = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise FileFailure(
            f"pixel data is {syntax.name}, which pydicom cannot decode (a video syntax or an "
            "unknown one); convert the file to images first"
        ) from None
    if not decoder.is_available:
        install = DECODER_INSTALL.get(str(syntax)) or "install one of: " + "; ".join(
            decoder.missing_dependencies
        )
        raise FileFailure(
            f"pixel data is {syntax.name} and no decoder for it is installed: {install}"
        )
    return decoder


def _grey(arr: np.ndarray, meta: dict, ds) -> tuple[np.ndarray, bool]:
    """One decoded frame (``meta``: the decoder's image pixel description) -> ``(H, W)`` grey
    values and whether they are 8-bit display values (uint8) already: unsigned integers of at
    most 8 bits stored."""
    from pydicom.pixels import apply_color_lut, convert_color_space

    photometric = str(meta.get("photometric_interpretation") or ds.PhotometricInterpretation)
    bits_stored = int(meta.get("bits_stored") or ds.get("BitsStored") or 8)
    eight_bit = arr.dtype.kind == "u" and bits_stored <= 8
    if eight_bit:
        arr = arr.astype(np.uint8, copy=False)
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        return arr, eight_bit
    if photometric in ("YBR_FULL", "YBR_FULL_422"):  # decoders usually give RGB already
        arr, photometric = convert_color_space(arr, photometric, "RGB"), "RGB"
    if photometric == "RGB":
        return luma(arr), eight_bit
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        if rgb.dtype != np.uint8:  # a 16-bit palette: its high byte (v * 256 -> v exactly)
            rgb = (rgb >> 8).astype(np.uint8)
        return luma(rgb[..., :3]), True
    raise FileFailure(
        f"photometric interpretation {photometric} is not supported (MONOCHROME1, MONOCHROME2, "
        "RGB, YBR_FULL, YBR_FULL_422, PALETTE COLOR are)"
    )


def _first(value):
    """A multi-valued element's first value, a single value as it is."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return value[0] if len(value) else None
    return value


def _window(ds) -> tuple[float, float] | None:
    """The file's first VOI window ``(center, width)``, None without one."""
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is None or width is None:
        return None
    return float(center), float(width)


def _to_8bit(
    grey: list[np.ndarray], ds, scale: str, display: bool
) -> tuple[list[np.ndarray], float, float, str, list[float]]:
    """A file's grey frames -> uint8 frames, ``lo``, ``hi``, the manifest's ``scale`` and each
    frame's clipped fraction: 8-bit display values as they are, anything else after the
    rescale slope and intercept by :func:`scale_to_8bit` (``scale`` range or window)."""
    if display:
        return grey, 0.0, 255.0, "8bit", [0.0] * len(grey)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if (slope, intercept) != (1.0, 0.0):
        grey = [f * slope + intercept for f in grey]
    window = _window(ds) if scale == "window" else None
    frames, lo, hi, clipped = scale_to_8bit(grey, window=window)
    if scale == "window" and window is None:
        scale = "range (no window)"
    return frames, lo, hi, scale, clipped


def _crop_box(frames: list[np.ndarray], ds) -> tuple[Box | None, str]:
    """The crop of a file's frames and how it was found: ``region`` (the largest 2D
    ultrasound region), else ``nonzero`` (the bounding box), else ``none``."""
    rows, cols = frames[0].shape
    box = region_box(ds.get("SequenceOfUltrasoundRegions"), rows, cols)
    if box is not None:
        return box, "region"
    box = nonzero_box(frames)
    return box, "nonzero" if box is not None else "none"


def read_instance(ds, options: FrameOptions) -> Instance:
    """The chosen frames of the dataset ``ds`` (read by ``pydicom.dcmread``) as cropped
    ``(H, W) uint8`` grey, with their manifest fields. :class:`FileFailure` when the file
    cannot be decoded or has an unsupported photometric interpretation."""
    from pydicom.pixels import as_pixel_options

    decoder = _decoder(ds)
    n_frames = int(ds.get("NumberOfFrames") or 1)
    indices = chosen_frames(n_frames, options)
    pixel_options = as_pixel_options(ds)
    raw, display = [], True
    for index in indices:
        try:
            arr, meta = decoder.as_array(ds, index=index, **pixel_options)
        except (RuntimeError, ValueError, NotImplementedError) as err:
            raise FileFailure(
                f"cannot decode the {ds.file_meta.TransferSyntaxUID.name} pixel data "
                f"({type(err).__name__}: {err})"
            ) from None
        grey, eight_bit = _grey(arr, meta, ds)
        raw.append(grey)
        display = display and eight_bit

    frames, lo, hi, scale, clipped = _to_8bit(raw, ds, options.scale, display)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        frames = [255 - f for f in frames]
    rows, cols = frames[0].shape
    box, crop = _crop_box(frames, ds) if options.crop else (None, "none")
    x0, y0, x1, y1 = box or (0, 0, cols, rows)
    frames = [np.ascontiguousarray(f[y0:y1, x0:x1]) for f in frames]

    sop = ds.get("SOPInstanceUID") or ds.file_meta.get("MediaStorageSOPInstanceUID")
    fields = {
        "frames": str(n_frames),
        "modality": str(ds.get("Modality", "")),
        "photometric": str(ds.get("PhotometricInterpretation", "")),
        "bits_stored": str(ds.get("BitsStored", "")),
        "transfer_syntax": ds.file_meta.TransferSyntaxUID.name,
        "rows": str(rows),
        "cols": str(cols),
        "crop": crop,
        "x0": str(x0),
        "y0": str(y0),
        "x1": str(x1),
        "y1": str(y1),
        "scale": scale,
        "lo": f"{lo:.6g}",
        "hi": f"{hi:.6g}",
    }
    return Instance(
        frames=frames,
        indices=indices,
        instance_key=f"sop:{sop}" if sop else "",
        patient_id=str(ds.get("PatientID") or "").strip(),
        fields=fields,
        clipped=clipped,
    )


@contextmanager
def _quiet_pydicom(counter: Counter):
    """pydicom's warnings and log records while reading, counted in ``counter["warnings"]``
    and not shown: they can quote element values (a malformed name, date or UID)."""

    class _Count(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            counter["warnings"] += 1
            return False

    logger, quiet = logging.getLogger("pydicom"), _Count()
    logger.addFilter(quiet)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            counter["warnings"] += len(caught)
            logger.removeFilter(quiet)


def read_file(pydicom, path: Path, options: FrameOptions, counter: Counter) -> Instance | str:
    """The chosen frames of the file at ``path``, or why it is skipped: ``"not DICOM"`` (no
    DICOM preamble), ``"no pixel data"`` (a DICOMDIR, a report). :class:`FileFailure` with a
    reason free of the file's identifiers when it cannot be read or decoded. pydicom's
    warnings are counted in ``counter["warnings"]``."""
    if path.name.upper() == "DICOMDIR":
        return "no pixel data"
    identifiers: list[str] = []
    try:
        with _quiet_pydicom(counter):
            try:
                ds = pydicom.dcmread(path, force=False)
            except pydicom.errors.InvalidDicomError:
                return "not DICOM"
            identifiers = _identifiers(ds)
            media_class = ds.file_meta.get("MediaStorageSOPClassUID", "")
            if media_class == DICOMDIR_SOP_CLASS or not any(k in ds for k in PIXEL_KEYWORDS):
                return "no pixel data"
            instance = read_instance(ds, options)
    except FileFailure as err:
        raise FileFailure(_scrub(err.reason, identifiers)) from None
    except FILE_ERRORS as err:
        reason = f"cannot read the file ({type(err).__name__}: {err})"
        raise FileFailure(_scrub(reason, identifiers)) from None
    if not instance.instance_key:  # no SOP Instance UID: the file's bytes identify it
        instance.instance_key = "content:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return instance


# --------------------------------------------------------------------------------------------
# The import: files in, PNGs and a manifest out
# --------------------------------------------------------------------------------------------


def import_dicom(
    src: str | Path,
    out: str | Path,
    options: FrameOptions | None = None,
    *,
    salt_file: str | Path | None = None,
    strict: bool = False,
    progress: bool = True,
) -> ImportReport:
    """Write the chosen frames of every DICOM file in ``src`` (a file, or a folder searched
    recursively) to ``out`` as 8-bit grey PNGs and add their rows to ``out/manifest.csv``
    (rows of earlier imports are kept; a re-imported PNG's row is replaced). A file that
    fails is reported on stderr by its path relative to ``src`` and counted in the report;
    with ``strict`` the first failure raises ``ValueError`` instead (the PNGs written before
    it keep their manifest rows). ``ValueError`` when ``src`` holds no DICOM file at all, or
    when the manifest in ``out`` was made with another salt."""
    from tqdm.auto import tqdm

    from fetalgan.images import write_png

    pydicom = _pydicom()
    options = options or FrameOptions()
    src, out = Path(src), Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder; give a folder")
    sources = list_sources(src, skip=out)
    manifest = out / MANIFEST
    from fetalgan.data.datasets import read_manifest, write_manifest

    earlier = read_manifest(manifest, MANIFEST_COLUMNS, "import-dicom")
    salt_path = Path(salt_file) if salt_file else out / SALT_FILE
    if earlier and not salt_path.exists():
        raise ValueError(
            f"{manifest}: holds {len(earlier)} rows of an earlier import, but the salt file "
            f"{salt_path} does not exist: give that import's --salt-file so that the same "
            "patients get the same `patient`, or import into a new folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    salt, created = load_salt(salt_path)
    this_salt = salt_id(salt)
    other = sorted({row["salt_id"] for row in earlier} - {this_salt})
    if other:
        raise ValueError(
            f"{manifest}: made with another salt (salt_id {', '.join(other)}; {salt_path} has "
            f"{this_salt}): give the --salt-file of the earlier import, or import into a new "
            "folder"
        )

    report = ImportReport(out, manifest, salt_path, created)
    rows = {row["file"]: row for row in earlier}
    new_rows: dict[str, dict[str, str]] = {}
    seen: set[str] = set()
    counter: Counter = Counter()

    def fail(path: Path, reason: str) -> None:
        shown = path.name if path == src else path.relative_to(src).as_posix()
        if strict:
            raise ValueError(f"{shown}: {reason} (--strict: stopped at the first failure)")
        tqdm.write(f"fetalgan: import-dicom: {shown}: {reason}", file=sys.stderr)
        report.failures.setdefault(reason, []).append(shown)

    bar = tqdm(sources, desc="import-dicom", unit="file", disable=None if progress else True)
    try:
        for path in bar:
            try:
                instance = read_file(pydicom, path, options, counter)
            except FileFailure as err:
                fail(path, err.reason)
                continue
            if isinstance(instance, str):  # skipped: why
                report.not_dicom += instance == "not DICOM"
                report.no_pixels += instance == "no pixel data"
                continue
            key = instance.instance_key
            stem = salted_hash(salt, "instance", key)
            if stem in seen:
                report.duplicates += 1
                continue
            seen.add(stem)
            if instance.patient_id:
                patient = salted_hash(salt, "patient", instance.patient_id)
            else:  # nothing links it to other files: its own group
                patient = salted_hash(salt, "no-patient-id", key)
                report.no_patient_id += 1
            for index, frame, clipped in zip(
                instance.indices, instance.frames, instance.clipped, strict=True
            ):
                name = f"{stem}_{index:04d}.png"
                write_png(frame, out / name)
                new_rows[name] = {
                    "file": name,
                    "patient": patient,
                    "frame": str(index),
                    "has_patient_id": "1" if instance.patient_id else "0",
                    **instance.fields,
                    "clipped": f"{clipped:.4g}",
                    "salt_id": this_salt,
                }
                report.clipped_frames += clipped > 0
            report.files_read += 1
            report.frames_written += len(instance.indices)
            report.scales[instance.fields["scale"]] += 1
    finally:
        bar.close()
        report.pydicom_warnings = counter["warnings"]
        if new_rows:
            report.replaced_rows = len(new_rows.keys() & rows.keys())
            rows.update(new_rows)
            write_manifest(manifest, list(rows.values()), MANIFEST_COLUMNS)
        report.manifest_rows = len(rows)

    if report.files_read == 0 and report.failed == 0 and report.duplicates == 0:
        raise ValueError(
            f"{src}: no DICOM images found ({report.not_dicom} files not DICOM, "
            f"{report.no_pixels} DICOM without pixel data)"
        )
    log.info("import-dicom: %d frames of %d files", report.frames_written, report.files_read)
    return report


def format_report(report: ImportReport) -> str:
    """The final report: counts, failures grouped by reason, and what the manifest holds."""
    lines = [
        f"import-dicom: read {report.files_read} DICOM files, wrote {report.frames_written} "
        f"frames as 8-bit grey PNGs to {report.out}"
    ]
    skipped = {
        "not DICOM": report.not_dicom,
        "DICOM without pixel data (DICOMDIR, reports)": report.no_pixels,
        "duplicate SOP instances": report.duplicates,
    }
    if any(skipped.values()):
        shown = ", ".join(f"{n} {what}" for what, n in skipped.items() if n)
        lines.append(f"  skipped: {shown}")
    if report.failures:
        lines.append(f"  failed: {report.failed} files")
        for reason, files in sorted(report.failures.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"    {len(files)} x {reason}")
    if report.no_patient_id:
        lines.append(
            f"  {report.no_patient_id} files had no PatientID: each is its own patient group "
            "(has_patient_id 0)"
        )
    scaled = {k: v for k, v in report.scales.items() if k != "8bit"}
    if scaled:
        shown = ", ".join(f"{v} {k}" for k, v in sorted(scaled.items()))
        lines.append(
            f"  not 8-bit: {shown} (range: each file's min..max to 0..255, nothing clipped; "
            "window: its VOI window, clipped; manifest lo, hi, clipped)"
        )
    if report.clipped_frames:
        lines.append(f"  {report.clipped_frames} frames had pixels outside the window, clipped")
    if report.pydicom_warnings:
        lines.append(
            f"  pydicom warned {report.pydicom_warnings} times about malformed elements "
            "(not shown: they can quote identifying values)"
        )
    replaced = f", {report.replaced_rows} replaced" if report.replaced_rows else ""
    lines.append(f"  manifest: {report.manifest} ({report.manifest_rows} rows{replaced})")
    made = "created, keep it for later imports" if report.salt_created else "existing"
    lines.append(f"  salt: {report.salt_file} ({made})")
    if report.salt_file.resolve().parent == report.out.resolve():
        lines.append(
            "  the salt file is inside the output folder: leave it out when you share the "
            "folder (or use --salt-file elsewhere), since with it a PatientID can be tested "
            "against `patient`"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def cmd_import_dicom(args: argparse.Namespace) -> int:
    options = FrameOptions(
        frames=args.frames,
        every=args.every,
        max_frames=args.max_frames,
        scale=args.scale,
        crop=not args.no_crop,
    )
    report = import_dicom(args.src, args.out, options, salt_file=args.salt_file, strict=args.strict)
    print(format_report(report))
    return 0 if report.frames_written else 1


def add_cli(data_sub) -> None:
    """``fetalgan data import-dicom SRC --out DIR``."""
    p = data_sub.add_parser(
        "import-dicom",
        help="clinical ultrasound DICOM -> de-identified 8-bit grey PNGs and manifest.csv",
        description="Write the frames of DICOM files (SRC: a file or a folder, searched "
        "recursively; non-DICOM files skipped) as 8-bit grey PNGs in DIR, cropped to the "
        "ultrasound region (SequenceOfUltrasoundRegions' largest 2D region, else the non-zero "
        "bounding box), colour through BT.601 luma, MONOCHROME1 inverted, more than 8 bits "
        "scaled by --scale. Names are salted hashes of the SOP Instance UID plus the frame; "
        "DIR/manifest.csv has one row per PNG with `patient`, a salted hash of the PatientID "
        f"(columns: {', '.join(MANIFEST_COLUMNS)}). No patient data is written. DIR is a "
        "training set as `data: {kind: folder, root: DIR}`. Compressed files need a pydicom "
        "decoder (pillow, pylibjpeg...); a file that cannot be decoded is reported and "
        "skipped. Exit 0 when frames were written, 1 when none.",
    )
    p.add_argument("src", metavar="SRC", help="a DICOM file or a folder of them")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument(
        "--frames",
        default="all",
        choices=FRAME_CHOICES,
        help="which frames of a multi-frame file: first, middle (n // 2) or all (default)",
    )
    p.add_argument(
        "--every", type=_positive, metavar="K", help="with --frames all: every K-th frame"
    )
    p.add_argument(
        "--max-frames",
        type=_positive,
        metavar="N",
        help="with --frames all: at most N frames per file, evenly spaced over the clip",
    )
    p.add_argument(
        "--scale",
        default="range",
        choices=SCALES,
        help="data of more than 8 bits: range (default): the file's min..max to 0..255, "
        "nothing clipped; window: its WindowCenter/WindowWidth, outside clipped and counted",
    )
    p.add_argument("--no-crop", action="store_true", help="keep whole frames")
    p.add_argument(
        "--salt-file",
        metavar="FILE",
        help=f"the secret salt of the patient hashes (created, mode 0600, when missing; "
        f"default DIR/{SALT_FILE}); reuse it to import more files into DIR, and keep it out "
        "of what you share",
    )
    p.add_argument(
        "--strict", action="store_true", help="stop at the first file that fails (exit 2)"
    )
    p.set_defaults(func=cmd_import_dicom)
