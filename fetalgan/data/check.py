"""``fetalgan data check``: what a sweep would read from a dataset, and what would stop it.

A linter for real datasets. For one folder (``fetalgan data check ROOT``) or every dataset a
sweep file reads (``--sweep SWEEP.yaml``: ``base.data``, ``base.target_data``,
``base.eval_reference``, ``select.reference``, ``select.test_reference``, the file-based ones),
it reports:

- layout: the kind (and why: ``datasets.KIND_SIGNS`` when detected), the files training reads
  (:func:`fetalgan.data.datasets.list_files`, so masks and filtered-out rows are left out as
  there) and the ``dataset.json`` that ``fetalgan data fetch`` writes beside a download;
- counts: HC18's masks against its images and the 999 of a full training set (335 for its test
  set); FETAL_PLANES_DB's CSV rows against the images present, per plane, and its patients;
- every image decoded once, as training decodes it (:func:`fetalgan.images.read_grey`): sizes,
  PIL modes and bit depths, unreadable files, blank images, exact duplicates (sha1 of the
  decoded grey pixels and their shape);
- with a resolution: what ``data.fit`` keeps of each image size.

Errors would stop a sweep (no images, an unreadable image without ``data.skip_corrupt``, CSV
rows whose image is missing, a malformed CSV, a ``size`` larger than the dataset); warnings
would not (missing HC18 masks, a partial download, duplicates, blank images). Exit status: 0
without errors, 1 with, 2 for a usage error (``fetalgan: error: ...``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fetalgan.config import DataConfig

HC18_TRAINING = 999  # images in HC18's training_set.zip, each with its mask
HC18_TEST = 335  # images in HC18's test_set.zip, no masks
BLANK_SPAN = 2  # grey levels: an image whose pixels span no more than this shows nothing
DARK_16BIT = 16  # decoded grey: a 16-bit file below this holds 12-bit values, read nearly black
SHOWN = 3  # file names a finding lists before "and N more"
SHOWN_ERRORS = 10  # unreadable files listed one per line before a count of the rest
SHOWN_SIZES = 6  # image sizes listed before a count of the rest
SEED_STUDY_FIT = "squash"  # the seed studies stretched each scan to the square
ROOT_OPTIONS = {  # DataConfig field -> the option of `fetalgan data check ROOT` that sets it
    "root": "ROOT",
    "kind": "--kind",
    "plane": "--plane",
    "brain_plane": "--brain-plane",
    "machine": "--machine",
    "train_split": "--train-split",
    "fit": "--fit",
}


# --------------------------------------------------------------------------------------------
# One image
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFacts:
    """One image file as training decodes it (:func:`fetalgan.images.read_grey`)."""

    mode: str = ""  # PIL mode of the file: L, RGB, I;16, P...
    size: tuple[int, int] = (0, 0)  # (width, height) in px
    digest: str = ""  # sha1 of the decoded (H, W) uint8 grey and its shape
    lo: int = 0  # darkest decoded grey, 0..255
    hi: int = 0  # brightest decoded grey, 0..255
    error: str = ""  # read_grey's message (naming the file) when it cannot be read


def bit_depth(mode: str) -> int:
    """Bits per channel of a PIL mode: 1 for ``1``, 16 for ``I;16*``, 32 for ``I`` and ``F``,
    else 8 (``L``, ``P``, ``RGB``, ``RGBA``, ``LA``...)."""
    from fetalgan.images import SIXTEEN_BIT_MODES

    if mode == "1":
        return 1
    if mode in SIXTEEN_BIT_MODES:
        return 16
    return 32 if mode in ("I", "F") else 8


def inspect_image(path: Path) -> ImageFacts:
    """Decode ``path`` once, as training does, and describe it; an unreadable file gives
    ``error`` instead of raising."""
    from PIL import Image

    from fetalgan.images import read_grey

    try:
        grey = read_grey(path)
    except ValueError as err:
        return ImageFacts(error=str(err))
    with Image.open(path) as im:  # the header only: the mode read_grey converted from
        mode, size = im.mode, im.size
    digest = hashlib.sha1(repr(grey.shape).encode() + grey.tobytes()).hexdigest()
    return ImageFacts(mode, size, digest, int(grey.min()), int(grey.max()))


def inspect_images(
    files: Sequence[Path],
    *,
    progress: bool = False,
    desc: str = "check",
    seen: dict[Path, ImageFacts] | None = None,
) -> list[ImageFacts]:
    """:func:`inspect_image` of each file, in order, with a thread pool (PIL releases the GIL)
    as :func:`fetalgan.data.datasets.decode_files` decodes; ``seen`` (path -> facts) holds
    files already inspected, so datasets that share images decode them once."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from fetalgan.data.datasets import _workers

    seen = {} if seen is None else seen
    todo = [p for p in dict.fromkeys(files) if p not in seen]
    pool = ThreadPoolExecutor(max_workers=_workers())
    try:
        with tqdm(
            total=len(todo), desc=desc, unit="img", disable=None if progress else True
        ) as bar:
            for path, facts in zip(todo, pool.map(inspect_image, todo), strict=True):
                seen[path] = facts
                bar.update()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [seen[p] for p in files]


# --------------------------------------------------------------------------------------------
# What a fit keeps
# --------------------------------------------------------------------------------------------


def fit_effect(width: int, height: int, fit: str) -> str:
    """What ``data.fit`` does to a ``width x height`` image on its way to a square (the same at
    every resolution): crop keeps the middle ``short`` of the ``long`` side, squash keeps all of
    it stretched, pad keeps all of it beside black bars."""
    long, short = max(width, height), min(width, height)
    if long == short:
        return "square: all of it, unchanged in shape"
    lines = "columns" if width > height else "rows"
    if fit == "crop":
        return f"keeps the middle {short} of {long} {lines} ({100 * short / long:.1f} %)"
    if fit == "squash":
        side, other = ("height", "width") if width > height else ("width", "height")
        return f"all of it, its {side} stretched {long / short:.2f}x relative to its {other}"
    bars = "rows" if width > height else "columns"
    return f"all of it and {long - short} {bars} of black ({100 * (long - short) / long:.1f} %)"


# --------------------------------------------------------------------------------------------
# One dataset
# --------------------------------------------------------------------------------------------


@dataclass
class DatasetCheck:
    """What ``fetalgan data check`` found in one dataset."""

    label: str  # ROOT as given, or the sweep sections reading it: "base.data, base.eval_reference"
    root: str
    kind: str  # hc18 | planes | folder
    why: str  # why this kind: detected from the contents, --kind, or the sweep file
    fit: str = "crop"  # data.fit
    paths: list[Path] = field(default_factory=list)  # the files training reads, in its order
    counts: dict[str, Any] = field(default_factory=dict)  # images, masks, csv_rows, patients...
    sizes: dict[str, int] = field(default_factory=dict)  # "800x540" (W x H) -> images
    modes: dict[str, int] = field(default_factory=dict)  # PIL mode -> images
    bit_depths: dict[str, int] = field(default_factory=dict)  # "8", "16" -> images
    duplicates: list[list[str]] = field(default_factory=list)  # groups of identical images
    fit_lines: list[str] = field(default_factory=list)  # what data.fit keeps, by size
    dataset_json: dict[str, Any] | None = None  # what dataset.json records, as read
    dataset_json_counts: str = ""  # its counts against what is found: "test_images as recorded"
    errors: list[str] = field(default_factory=list)  # would stop a sweep
    warnings: list[str] = field(default_factory=list)  # would not
    notes: list[str] = field(default_factory=list)
    patients: list[float] | None = None  # data.patients: [lo, hi] of the dataset's patients
    usage_error: str = ""  # a filter value the dataset lacks: the user's option, not the data
    digests: dict[str, Path] = field(default_factory=dict, repr=False)  # sha1 -> first file

    def name(self, path: Path) -> str:
        """``path`` as the report shows it: relative to the dataset's root."""
        return os.path.relpath(path, self.root)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "root": self.root,
            "kind": self.kind,
            "why": self.why,
            "fit": self.fit,
            "patients": self.patients,
            "files": [self.name(p) for p in self.paths],
            "counts": self.counts,
            "sizes": self.sizes,
            "modes": self.modes,
            "bit_depths": self.bit_depths,
            "duplicates": self.duplicates,
            "fit_effect": self.fit_lines,
            "dataset_json": self.dataset_json,
            "errors": self.errors,
            "warnings": self.warnings,
            "notes": self.notes,
        }


@dataclass
class Report:
    """The checks of one ``fetalgan data check`` and what concerns the sweep as a whole."""

    source: str  # ROOT, or the sweep file
    datasets: list[DatasetCheck] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the sweep's: sets that share images...
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def all_errors(self) -> list[str]:
        return [e for d in self.datasets for e in d.errors] + self.errors

    def all_warnings(self) -> list[str]:
        return [w for d in self.datasets for w in d.warnings] + self.warnings

    @property
    def exit_code(self) -> int:
        """0: a sweep can read every dataset (warnings allowed); 1: something would stop it."""
        return 1 if self.all_errors() else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "exit_code": self.exit_code,
            "errors": self.all_errors(),
            "warnings": self.all_warnings(),
            "notes": self.notes,
            "datasets": [d.to_json() for d in self.datasets],
        }


def _plural(n: int, word: str) -> str:
    """``1 image``, ``2 images``, ``2 copies``."""
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


def _some(names: Sequence[str], n: int = SHOWN) -> str:
    """``a, b, c and 4 more``."""
    shown = ", ".join(names[:n])
    return shown if len(names) <= n else f"{shown} and {len(names) - n} more"


def _key(name: str, section: str | None) -> str:
    """What the user calls DataConfig field ``name``: an option of ``data check ROOT``
    (``section`` None) or a key of the sweep file (``select.reference.plane``)."""
    return ROOT_OPTIONS.get(name, name) if section is None else f"{section}.{name}"


def _renamed(err: Exception, section: str | None) -> str:
    """A ``data.<field>: ...`` message of the dataset listing, naming what the user sets."""
    text = str(err)
    if text.startswith("data."):
        name, rest = text.removeprefix("data.").split(":", 1)
        return _key(name, section) + ":" + rest
    return text


def _list(data: DataConfig, check: DatasetCheck, section: str | None) -> list[Path]:
    """The files training reads (:func:`fetalgan.data.datasets.list_files`); [] with the
    error recorded when it would stop."""
    from fetalgan.data.datasets import list_files

    try:
        return list_files(data)
    except (ValueError, FileNotFoundError) as err:
        check.errors.append(_renamed(err, section))
        return []


def _hc18_layout(files: list[Path], check: DatasetCheck) -> None:
    """Masks beside the images, and the count of a full HC18 download."""
    from fetalgan.data.datasets import MASK_SUFFIX, list_hc18

    folder = files[0].parent
    test_set = folder.name == "test_set"
    in_folder = list_hc18(folder)  # all of them, whatever data.patients keeps
    masks = sorted(p for p in folder.iterdir() if p.name.endswith(MASK_SUFFIX))
    unmasked = [p for p in in_folder if not p.with_name(p.stem + MASK_SUFFIX).is_file()]
    image_names = {p.name for p in in_folder}
    orphans = [p for p in masks if p.name.removesuffix(MASK_SUFFIX) + ".png" not in image_names]
    check.counts |= {"images_in_folder": len(in_folder), "masks": len(masks)}
    check.counts |= {"images_without_mask": len(unmasked), "masks_without_image": len(orphans)}
    if unmasked and not (test_set and not masks):
        check.warnings.append(
            f"{len(unmasked)} of {len(in_folder)} images without their *{MASK_SUFFIX} mask: "
            f"{_some([check.name(p) for p in unmasked])} (masks are not used for training; a "
            "partial unzip?)"
        )
    if orphans:
        check.notes.append(
            f"{_plural(len(orphans), 'mask')} without their image: "
            + _some([check.name(p) for p in orphans])
        )
    expected, what = (HC18_TEST, "test set") if test_set else (HC18_TRAINING, "training set")
    if len(in_folder) != expected:
        check.warnings.append(
            f"{folder}: {len(in_folder)} images, HC18's {what} has {expected} "
            "(a partial download, or not HC18?)"
        )


def _planes_layout(data: DataConfig, check: DatasetCheck, section: str | None) -> list[Path]:
    """The CSV against the images: rows, rows per plane, patients, rows the filters keep and
    whether each has its image. Returns the files training reads, or, when rows lack their
    image (which stops training), the present ones."""
    from fetalgan.data.datasets import PLANES_CSV, PLANES_FILTERS, _read_planes_csv

    root = Path(data.root)
    csv_path = root / PLANES_CSV
    if not csv_path.is_file():
        return _list(data, check, section)  # its error says where to get the dataset
    try:
        rows = _read_planes_csv(csv_path)
    except ValueError as err:
        check.errors.append(f"{err} (a malformed CSV stops a sweep)")
        return []
    images_dir = root / "Images"
    on_disk = {p.name for p in images_dir.glob("*.png")} if images_dir.is_dir() else set()
    listed = {f"{row['Image_name']}.png" for row in rows}
    check.counts |= {
        "csv_rows": len(rows),
        "images_in_folder": len(on_disk),
        "rows_without_image": len(listed - on_disk),
        "images_not_in_csv": len(on_disk - listed),
        "planes": dict(Counter(row["Plane"] for row in rows).most_common()),
        "train_split": dict(sorted(Counter(row["Train"] for row in rows).items())),
    }
    if rows and "Patient_num" in rows[0]:
        check.counts["patients"] = len({row["Patient_num"] for row in rows})
    if on_disk - listed:
        check.notes.append(
            f"Images/: {len(on_disk - listed)} images not in {PLANES_CSV} (not read): "
            f"{_some(sorted(on_disk - listed))}"
        )
    for name, column in PLANES_FILTERS.items():
        value = getattr(data, name)
        if value is None:
            continue
        if name == "train_split":
            value = "1" if value else "0"
        present = sorted({row[column] for row in rows})
        if value not in present:
            check.usage_error = (
                f"{_key(name, section)}: no {column} {value!r} in {csv_path}; values present: "
                + ", ".join(repr(v) for v in present)
            )
            check.errors.append(check.usage_error)
            return []
        rows = [row for row in rows if row[column] == value]
    filtered = any(getattr(data, name) is not None for name in PLANES_FILTERS)
    if filtered:
        check.counts["rows_matching_filters"] = len(rows)
        if rows and "Patient_num" in rows[0]:
            check.counts["patients_matching_filters"] = len({r["Patient_num"] for r in rows})
    missing = [
        row["Image_name"] + ".png" for row in rows if row["Image_name"] + ".png" not in on_disk
    ]
    outside = len(listed - on_disk) - len(set(missing))
    if outside:
        check.notes.append(
            f"{_plural(outside, 'row')} outside the filters without their image (not read)"
        )
    if not missing:
        return _list(data, check, section)
    which = "rows matching the filters" if filtered else "rows"
    check.errors.append(
        f"{csv_path}: {len(missing)} of {len(rows)} {which} have no image in {images_dir}: "
        f"{_some(missing)} (a sweep stops at the first; unzip the whole dataset)"
    )
    check.notes.append("the sizes and modes are those of the images present")
    return sorted(
        images_dir / name for name in {f"{r['Image_name']}.png" for r in rows} - set(missing)
    )


def _folder_layout(files: list[Path], check: DatasetCheck) -> None:
    from fetalgan.data.datasets import MASK_SUFFIX

    masks = [p for p in files if p.name.endswith(MASK_SUFFIX)]
    if masks:
        check.warnings.append(
            f"{_plural(len(masks), 'mask')} (*{MASK_SUFFIX}) among the images: "
            f"{_some([p.name for p in masks])}; a sweep's data.kind folder trains on them "
            "(fetalgan evaluate --real leaves them out); move them away, or read the folder as "
            "hc18"
        )
        check.counts["masks"] = len(masks)


def _found_counts(check: DatasetCheck) -> dict[str, int]:
    """What ``check`` found, under the count keys ``fetalgan data fetch`` records
    (``fetalgan.data.fetch.check_counts``): HC18's ``training_images``, ``training_masks``,
    ``test_images``; FETAL_PLANES_DB's ``rows`` and ``images``."""
    counts = check.counts
    if check.kind == "hc18" and check.paths and "images_in_folder" in counts:
        folder = check.paths[0].parent.name
        if folder == "training_set":
            return {
                "training_images": counts["images_in_folder"],
                "training_masks": counts["masks"],
            }
        return {"test_images": counts["images_in_folder"]} if folder == "test_set" else {}
    if check.kind == "planes" and "csv_rows" in counts:
        return {"rows": counts["csv_rows"], "images": counts["images_in_folder"]}
    return {}


def _read_dataset_json(root: Path, check: DatasetCheck) -> None:
    """Read the ``dataset.json`` that ``fetalgan data fetch`` wrote in the dataset's root (for
    HC18's ``training_set`` or ``test_set`` given as the root, in the folder above) and
    compare the ``counts`` it records with what is found. Its ``files`` (each download's name,
    size and md5) are reported, not verified: ``fetch`` checked them."""
    import json

    from fetalgan.data.fetch import COUNT_LABELS, RECORD

    candidates = [root / RECORD]
    if root.name in ("training_set", "test_set"):
        candidates.append(root.parent / RECORD)
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        return
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        check.warnings.append(
            f"{path}: not valid JSON ({err}); move the root away and run fetalgan data fetch again"
        )
        return
    if not isinstance(record, dict):
        check.warnings.append(f"{path}: expected a JSON object, got {type(record).__name__}")
        return
    check.dataset_json = record
    recorded = record.get("counts") if isinstance(record.get("counts"), dict) else {}
    compared = {k: v for k, v in _found_counts(check).items() if k in recorded}
    differ = [k for k, found in compared.items() if recorded[k] != found]
    for key in differ:
        check.warnings.append(
            f"{path}: records {recorded[key]} {COUNT_LABELS.get(key, key)}, found "
            f"{compared[key]} (files removed or added since the fetch?)"
        )
    if compared:
        agreed = ", ".join(k for k in compared if k not in differ)
        check.dataset_json_counts = f"{agreed} as recorded" if agreed else ""
        if differ:
            check.dataset_json_counts += ("; " if agreed else "") + ", ".join(differ) + " differ"


def _dataset_json_line(check: DatasetCheck) -> str:
    """``HC18, Zenodo record 1327317, fetched 2025-01-02T03:04:05+00:00: training_set.zip (md5
    00eb8198), ...; counts as recorded``."""
    record = check.dataset_json or {}
    source = record.get("source") if isinstance(record.get("source"), dict) else {}
    head = [str(record.get("dataset") or record.get("kind") or "")]
    if source.get("zenodo_record"):
        head.append(f"Zenodo record {source['zenodo_record']}")
    if record.get("fetched"):
        head.append(f"fetched {record['fetched']}")
    files = [f for f in record.get("files") or [] if isinstance(f, dict)]
    shown = [f"{f.get('name')} (md5 {str(f.get('md5', ''))[:8]})" for f in files]
    text = ", ".join(h for h in head if h)
    if shown:
        text += ": " + ", ".join(shown)
    if check.dataset_json_counts:
        text += f"; {check.dataset_json_counts}"
    return text


def _summarise_images(
    check: DatasetCheck, files: list[Path], facts: list[ImageFacts], skip_corrupt: bool
) -> None:
    """Sizes, modes, bit depths; unreadable, blank and 16-bit images; exact duplicates."""
    readable = [(p, f) for p, f in zip(files, facts, strict=True) if not f.error]
    unreadable = [f.error for f in facts if f.error]
    check.counts["images"] = len(files)
    check.counts["unreadable"] = len(unreadable)
    if unreadable:
        how = (
            "skipped: data.skip_corrupt is true"
            if skip_corrupt
            else "a sweep stops here unless data.skip_corrupt: true"
        )
        findings = check.warnings if skip_corrupt else check.errors
        findings += [f"{text} ({how})" for text in unreadable[:SHOWN_ERRORS]]
        if len(unreadable) > SHOWN_ERRORS:
            findings.append(f"{len(unreadable) - SHOWN_ERRORS} more unreadable ({how})")
    sizes = Counter(f"{f.size[0]}x{f.size[1]}" for _, f in readable)
    check.sizes = dict(sizes.most_common())
    check.modes = dict(Counter(f.mode for _, f in readable).most_common())
    check.bit_depths = {
        str(k): v for k, v in sorted(Counter(bit_depth(f.mode) for _, f in readable).items())
    }
    blank = [check.name(p) for p, f in readable if f.hi - f.lo <= BLANK_SPAN]
    if blank:
        check.warnings.append(
            f"{_plural(len(blank), 'blank image')} (every pixel within {BLANK_SPAN} grey levels "
            f"of the others): {_some(blank)}; an empty frame teaches the generator nothing"
        )
    sixteen = [(p, f) for p, f in readable if bit_depth(f.mode) == 16]
    if sixteen:
        check.notes.append(
            f"{_plural(len(sixteen), '16-bit image')} "
            f"({_some([check.name(p) for p, _ in sixteen])}): read as grey scaled to 0..255 "
            "(round(v * 255 / 65535)), as training reads them"
        )
        dark = [check.name(p) for p, f in sixteen if f.hi < DARK_16BIT]
        if dark:
            check.warnings.append(
                f"{_plural(len(dark), '16-bit image')} with no value above 4096 (12-bit data?): "
                f"{_some(dark)}; scaled from the 16-bit range they read as grey 0..15, nearly "
                "black; rescale them to the 16-bit range or write 8-bit"
            )
    groups: dict[str, list[Path]] = {}
    for path, f in readable:
        groups.setdefault(f.digest, []).append(path)
    check.digests = {digest: paths[0] for digest, paths in groups.items()}
    check.duplicates = [[check.name(p) for p in g] for g in groups.values() if len(g) > 1]
    if check.duplicates:
        extra = sum(len(g) - 1 for g in check.duplicates)
        shown = "; ".join(" = ".join(g) for g in check.duplicates[:SHOWN])
        more = len(check.duplicates) - SHOWN
        check.warnings.append(
            f"{_plural(len(check.duplicates), 'group')} of pixel-identical images "
            f"({_plural(extra, 'copy')}): "
            f"{shown}{f' and {more} more groups' if more > 0 else ''}; duplicates inflate "
            "FID's reference and leak between training and reference sets"
        )


def _describe_fit(check: DatasetCheck, facts: list[ImageFacts], resolutions: Sequence[int]) -> None:
    """What ``check.fit`` keeps of the commonest sizes, and the images a resolution enlarges."""
    sizes = [tuple(int(v) for v in text.split("x")) for text in check.sizes]
    if not sizes or not resolutions:
        return
    shown = ", ".join(str(r) for r in resolutions)
    check.fit_lines.append(f"{check.fit} to {shown} px:")
    for w, h in sizes[:SHOWN_SIZES]:
        check.fit_lines.append(f"{w}x{h}: {fit_effect(w, h, check.fit)}")
    if len(sizes) > SHOWN_SIZES and check.fit == "crop":
        kept = [min(w, h) / max(w, h) for w, h in sizes[SHOWN_SIZES:]]
        check.fit_lines.append(
            f"{len(sizes) - SHOWN_SIZES} other sizes: keeps {100 * min(kept):.1f} to "
            f"{100 * max(kept):.1f} % of the long side"
        )
    for resolution in resolutions:
        side = max if check.fit == "pad" else min  # the side the fit brings to R
        small = sum(1 for f in facts if not f.error and side(f.size) < resolution)
        if small:
            check.notes.append(
                f"{_plural(small, 'image')} under {resolution} px on the side {check.fit} brings "
                f"to {resolution}: enlarged, blurrier than the rest"
            )
    if check.fit != SEED_STUDY_FIT:
        check.notes.append(
            f"the seed studies used {SEED_STUDY_FIT} (all of each scan, stretched; "
            f"data.fit: {SEED_STUDY_FIT}, --fit {SEED_STUDY_FIT} for evaluate)"
        )


def check_dataset(
    data: DataConfig,
    *,
    label: str,
    why: str,
    section: str | None = None,
    resolutions: Sequence[int] = (),
    progress: bool = False,
    seen: dict[Path, ImageFacts] | None = None,
) -> DatasetCheck:
    """Check the file-based dataset ``data`` (kind hc18, planes or folder) as training would
    read it. ``section`` names the sweep file's section the messages should name (None: the
    options of ``data check ROOT``); ``resolutions`` the sides ``data.fit`` is described at;
    ``seen`` shares decoded images between datasets."""
    check = DatasetCheck(label=label, root=str(data.root), kind=data.kind, why=why, fit=data.fit)
    check.patients = getattr(data, "patients", None)
    if data.kind == "planes":
        files = _planes_layout(data, check, section)
    else:
        files = _list(data, check, section)
        if files and data.kind == "hc18":
            _hc18_layout(files, check)
        elif files:
            _folder_layout(files, check)
    check.paths = files
    facts = inspect_images(files, progress=progress, desc=f"check {label}", seen=seen)
    _summarise_images(check, files, facts, data.skip_corrupt)
    if data.root and Path(data.root).is_dir():
        _read_dataset_json(Path(data.root), check)
    _describe_fit(check, facts, resolutions)
    return check


def check_root(
    root: str | Path,
    *,
    kind: str = "auto",
    fit: str = "crop",
    plane: str | None = None,
    brain_plane: str | None = None,
    machine: str | None = None,
    train_split: bool | None = None,
    resolution: int | None = None,
    progress: bool = False,
) -> Report:
    """``fetalgan data check ROOT``: the dataset in ``root`` as a sweep with ``data: {kind,
    root, plane..., fit}`` would read it; ``kind`` auto detects it
    (:func:`fetalgan.data.datasets.detect_kind`). ``ValueError``/``FileNotFoundError`` naming
    the option for a usage error (no such folder, filters on a kind without them, a filter
    value the CSV lacks)."""
    from fetalgan.data.datasets import KIND_SIGNS, _is_hc18_image, real_data

    if resolution is not None and resolution < 1:
        raise ValueError(f"--resolution: must be >= 1 (px), got {resolution}")
    data = real_data(
        root,
        kind=kind,
        fit=fit,
        plane=plane,
        brain_plane=brain_plane,
        machine=machine,
        train_split=train_split,
        options=ROOT_OPTIONS,
    )
    root, picked = Path(root), data.kind
    why = f"detected: {KIND_SIGNS[picked]}" if kind == "auto" else f"--kind {kind}"
    check = check_dataset(
        data,
        label=str(root),
        why=why,
        resolutions=[resolution] if resolution else [],
        progress=progress,
    )
    if check.usage_error:
        raise ValueError(check.usage_error)
    train = root / "training_set"
    if kind == "auto" and picked == "folder" and train.is_dir():
        if any(_is_hc18_image(p) for p in train.iterdir()):
            check.notes.append(
                f"{train} holds *_HC.png images without masks beside them: --kind hc18 reads them"
            )
    return Report(source=str(root), datasets=[check])


# --------------------------------------------------------------------------------------------
# Every dataset of a sweep
# --------------------------------------------------------------------------------------------


def _sweep_sections(cfg) -> list[tuple[str, DataConfig, int | None]]:
    """(section, dataset, the sizes it draws) of every real set of a sweep."""
    from fetalgan.config import reference_data, space_values

    base = cfg.base
    sizes = [base.data.size, *(space_values(cfg.space.get("data.size", {"choice": []})) or [])]
    out = [("base.data", base.data, max((s for s in sizes if s is not None), default=None))]
    if base.target_data is not None:
        out.append(("base.target_data", base.target_data, base.target_data.size))
    refs = [("base.eval_reference", base.eval_reference)]
    if cfg.select is not None:
        refs += [(f"select.{n}", getattr(cfg.select, n)) for n in ("reference", "test_reference")]
    out += [(section, reference_data(base, ref), ref.size) for section, ref in refs]
    return out


def check_sweep(
    path: str | Path, overrides: Sequence[str] = (), *, progress: bool = False
) -> Report:
    """``fetalgan data check --sweep FILE``: every file-based dataset the sweep reads (loaded
    with :func:`fetalgan.config.load_sweep`, ``overrides`` as its ``--set``), each decoded
    once, described at the sweep's resolutions; then what concerns the sets together: sizes
    larger than a dataset, sets that must not share images or patients
    (:func:`fetalgan.data.splits.check_real_sets`), pixel-identical images across sets."""
    from fetalgan.config import load_sweep, space_values

    cfg = load_sweep(path, list(overrides))
    resolutions = {
        cfg.base.resolution,
        *(space_values(cfg.space.get("resolution", {"choice": []})) or []),
    }
    report = Report(source=str(path))
    seen: dict[Path, ImageFacts] = {}
    by_dataset: dict[tuple, DatasetCheck] = {}
    for section, data, size in _sweep_sections(cfg):
        if data.kind == "phantom":
            report.notes.append(f"{section}: the phantom (rendered, no files to check)")
            continue
        identity = (data.kind, str(Path(data.root or "").resolve()), data.plane,
                    data.brain_plane, data.machine, data.train_split, data.fit,
                    data.skip_corrupt, repr(getattr(data, "patients", None)))  # fmt: skip
        check = by_dataset.get(identity)
        if check is None:
            check = check_dataset(
                data,
                label=section,
                why=f"from {path}",
                section=section,
                resolutions=sorted(resolutions),
                progress=progress,
                seen=seen,
            )
            by_dataset[identity] = check
            report.datasets.append(check)
        else:
            check.label += f", {section}"
        readable = len(check.paths) - (
            check.counts.get("unreadable", 0) if data.skip_corrupt else 0
        )
        if check.paths and size is not None and size + data.skip > readable:
            after = f" after skip {data.skip}" if data.skip else ""
            report.errors.append(
                f"{section}.size: {size}{after} is larger than the dataset "
                f"({_plural(readable, 'image')} in {data.root})"
            )
    _shared_pixels(report)
    if cfg.select is not None and not report.all_errors():
        from fetalgan.data.splits import check_real_sets

        try:
            check_real_sets(cfg)
        except (ValueError, FileNotFoundError) as err:
            report.errors.append(str(err))
    return report


def _shared_pixels(report: Report) -> None:
    """Warn about images of one dataset that are pixel-identical to another's."""
    checks = report.datasets
    for i, first in enumerate(checks):
        for second in checks[i + 1 :]:
            shared = [d for d in first.digests if d in second.digests]
            pairs = [
                f"{first.digests[d]} = {second.digests[d]}"
                for d in shared
                if first.digests[d].resolve() != second.digests[d].resolve()
            ]
            if pairs:
                report.warnings.append(
                    f"{first.label} and {second.label}: "
                    f"{_plural(len(pairs), 'pixel-identical image')}, e.g. {pairs[0]}; a "
                    "reference that holds training images flatters the generator"
                )


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _counted(counter: dict[str, int], shown: int = SHOWN_SIZES) -> str:
    items = list(counter.items())
    text = ", ".join(f"{k}: {v}" for k, v in items[:shown])
    if len(items) > shown:
        rest = sum(v for _, v in items[shown:])
        text += f", ... {len(items) - shown} more sizes ({rest} images)"
    return text


def _layout_rows(check: DatasetCheck) -> list[tuple[str, str]]:
    counts = check.counts
    folder = os.path.commonpath([str(p.parent) for p in check.paths]) if check.paths else ""
    read = f"{_plural(len(check.paths), 'image')} in {folder or check.root}"
    if check.patients is not None:
        read += f", the patients in {list(check.patients)} of the dataset's (data.patients)"
    rows = [("read", read)]
    if check.kind == "hc18" and counts.get("masks"):
        with_mask = counts["images_in_folder"] - counts["images_without_mask"]
        rows.append(
            ("masks", f"{with_mask} of {counts['images_in_folder']} images have their mask "
             f"({counts['masks']} *_Annotation.png; masks are not read)")
        )  # fmt: skip
    elif check.kind == "hc18" and "masks" in counts:
        rows.append(("masks", "none (masks are not read)"))
    if "csv_rows" in counts:
        text = _plural(counts["csv_rows"], "row")
        text += f", {_plural(counts['images_in_folder'], 'image')} in Images/"
        if counts.get("rows_without_image"):
            text += f", {_plural(counts['rows_without_image'], 'row')} without their image"
        if "patients" in counts:
            text += f", {_plural(counts['patients'], 'patient')}"
        if "rows_matching_filters" in counts:
            text += f"; {_plural(counts['rows_matching_filters'], 'row')} match the filters"
            if "patients_matching_filters" in counts:
                text += f" ({_plural(counts['patients_matching_filters'], 'patient')})"
        rows.append(("csv", text))
        width = max((len(p) for p in counts["planes"]), default=0)
        for i, (plane, n) in enumerate(counts["planes"].items()):
            rows.append(("planes" if i == 0 else "", f"{plane:<{width}}  {n:>6}"))
        split = ", ".join(f"{k or '?'}: {v}" for k, v in counts["train_split"].items())
        rows.append(("train", split))
    if check.dataset_json is not None:
        rows.append(("dataset.json", _dataset_json_line(check)))
    if check.sizes:
        rows.append(("sizes", _counted(check.sizes)))
        modes = ", ".join(f"{m} ({bit_depth(m)}-bit): {n}" for m, n in check.modes.items())
        rows.append(("modes", modes))
    if check.duplicates:
        copies = sum(len(g) - 1 for g in check.duplicates)
        rows.append(
            ("duplicates", f"{_plural(len(check.duplicates), 'group')}, {_plural(copies, 'copy')}")
        )
    for i, line in enumerate(check.fit_lines):
        rows.append(("fit" if i == 0 else "", line))
    return rows


def _findings(errors: list[str], warnings: list[str], notes: list[str], indent: str) -> list[str]:
    return (
        [f"{indent}error: {e}" for e in errors]
        + [f"{indent}warning: {w}" for w in warnings]
        + [f"{indent}note: {n}" for n in notes]
    )


def format_check(check: DatasetCheck) -> str:
    """One dataset's block: a header, aligned rows, then its errors, warnings and notes."""
    lines = [f"{check.label}: {check.kind} ({check.why})"]
    if check.label != check.root:
        lines[0] = f"{check.label}: {check.kind} in {check.root} ({check.why})"
    rows = _layout_rows(check)
    width = max(len(name) for name, _ in rows)
    lines += [f"  {name:<{width}}  {text}".rstrip() for name, text in rows]
    lines += _findings(check.errors, check.warnings, check.notes, "  ")
    return "\n".join(lines)


def format_report(report: Report) -> str:
    """The whole report, ending in one line: errors, warnings, and whether a sweep can run."""
    blocks = [format_check(check) for check in report.datasets]
    sweep = _findings(report.errors, report.warnings, report.notes, "")
    if sweep:
        blocks.append("\n".join(sweep))
    n_errors, n_warnings = len(report.all_errors()), len(report.all_warnings())
    verdict = "a sweep would stop" if n_errors else "a sweep can read it"
    blocks.append(f"{_plural(n_errors, 'error')}, {_plural(n_warnings, 'warning')}: {verdict}")
    return "\n\n".join(blocks)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from fetalgan.cli import _output_file, _write_json, refuse_given

    _output_file(args.json, "--json")
    if (args.root is None) == (args.sweep is None):
        both = ", not both" if args.root else ""
        raise ValueError(
            f"give ROOT (a dataset folder) or --sweep SWEEP.yaml (every dataset it reads){both}"
        )
    if args.sweep:
        dataset_options = {
            "--kind": args.kind != "auto",
            "--plane": args.plane,
            "--brain-plane": args.brain_plane,
            "--machine": args.machine,
            "--train-split": args.train_split is not None,
            "--resolution": args.resolution,
            "--fit": args.fit,
        }
        refuse_given(
            dataset_options,
            "not used with --sweep (the sweep file gives each dataset's kind, filters, fit and "
            "resolution; change them with --set, e.g. --set data.fit=squash)",
        )
        report = check_sweep(args.sweep, args.set, progress=True)
    else:
        if args.set:
            raise ValueError("--set: only with --sweep (it overrides a sweep file's keys)")
        report = check_root(
            args.root,
            kind=args.kind,
            fit=args.fit or "crop",
            plane=args.plane,
            brain_plane=args.brain_plane,
            machine=args.machine,
            train_split=args.train_split,
            resolution=args.resolution,
            progress=True,
        )
    print(format_report(report))
    _write_json(args.json, report.to_json())
    return report.exit_code


def add_cli(data_sub) -> None:
    """``fetalgan data check``: its sub-parser on ``fetalgan data``'s sub-parsers."""
    from fetalgan.cli import add_planes_filters
    from fetalgan.config import FITS, REAL_KINDS

    p = data_sub.add_parser(
        "check",
        help="what a sweep would read from a dataset (or every dataset of a sweep file), and "
        "what would stop it: exit 0 fine, 1 errors",
        description="What a sweep would read from a dataset, and what would stop it: the "
        "layout and counts, every image decoded once (sizes, modes, unreadable, blank and "
        "duplicate images), what data.fit keeps. Exit 0 without errors (warnings allowed), 1 "
        "with errors, 2 for a usage error.",
    )
    p.add_argument(
        "root",
        nargs="?",
        metavar="ROOT",
        help="dataset folder: HC18's (ROOT/training_set), FETAL_PLANES_DB's or any folder",
    )
    p.add_argument(
        "--sweep",
        metavar="SWEEP.yaml",
        help="check every file-based dataset this sweep reads instead (data, eval_reference, "
        "select.reference, select.test_reference) at its resolution and data.fit",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --sweep: override a key, e.g. --set data.root=/scratch/hc18",
    )
    p.add_argument(
        "--kind",
        default="auto",
        choices=REAL_KINDS,
        help="what ROOT is: hc18, planes, folder; auto (default): hc18 or planes when the "
        "folder looks like one, else folder",
    )
    add_planes_filters(p)
    p.add_argument(
        "--resolution",
        type=int,
        metavar="R",
        help="describe what --fit keeps of each image size on its way to R x R px",
    )
    p.add_argument(
        "--fit",
        choices=FITS,
        help="as data.fit: crop (default: short side to R, centre crop), squash (all of it, "
        "stretched: the seed studies), pad (letterboxed with black)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the findings to this JSON file")
    p.set_defaults(func=cmd_check)
