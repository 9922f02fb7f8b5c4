"""Training images: list a dataset's files, pick the seeded subset, decode once into a cache.

Kinds (``DataConfig.kind``):

- ``hc18``: HC18 (Zenodo record 1327317), ``ROOT/training_set/NNN_HC.png`` (800x540 grey; also
  ``NNN_2HC.png``... for a subject's further images); ``*_Annotation.png`` masks are excluded.
  ``ROOT`` may also be the ``training_set`` folder itself. 999 images.
- ``planes``: FETAL_PLANES_DB (Zenodo record 3904280), ``ROOT/FETAL_PLANES_DB_data.csv``
  (``;``-separated) and ``ROOT/Images/<Image_name>.png``; filtered by plane, brain plane,
  machine and the Train flag.
- ``folder``: every image directly in ``ROOT``.
- ``phantom``: no files; ``fetalgan.data.phantom`` renders them at the training resolution.

Images become ``(N, 1, R, R) uint8``: grey, brought to ``R x R`` by ``data.fit``
(``fetalgan.images.fit_square``, PIL bilinear with antialiasing): ``crop`` (the default) resizes
the short side to ``R`` and centre-crops, as torchvision's ``Resize`` + ``CenterCrop`` do for the
classic DCGAN pipeline; ``squash`` resizes the whole image to ``R x R`` (the seed studies);
``pad`` letterboxes it with black first.

A real reference set named on the command line (``fetalgan evaluate --real``, ``fetalgan study
create --real``) is one of these kinds too: :func:`real_data` picks the kind (``--real-kind
auto``: :func:`detect_kind`) and :func:`list_real_files` lists it, so masks and filtered-out
rows never enter; its images go through the same :func:`decode_files`.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fetalgan.data.cache import cache_path, load_cached, save_atomic, stable_key
from fetalgan.images import fit_square, list_images, read_grey

if TYPE_CHECKING:
    import torch

    from fetalgan.config import DataConfig, TrainConfig

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the decoded tensors would change (resize method, layout)
HC18_HELP = (
    "HC18 is published on Zenodo, record 1327317 (https://zenodo.org/records/1327317): "
    "download training_set.zip and unzip it so that ROOT/training_set/*_HC.png exists"
)
PLANES_HELP = (
    "FETAL_PLANES_DB is published on Zenodo, record 3904280 (https://zenodo.org/records/3904280): "
    "download and unzip it so that ROOT/FETAL_PLANES_DB_data.csv and ROOT/Images/ exist"
)
PLANES_CSV = "FETAL_PLANES_DB_data.csv"
PLANES_FILTERS = {  # DataConfig field -> CSV column
    "plane": "Plane",
    "brain_plane": "Brain_plane",
    "machine": "US_Machine",
    "train_split": "Train",
}


@dataclass
class ImageSet:
    """Decoded training images and where they came from."""

    images: torch.Tensor  # (N, 1, R, R) uint8, CPU
    key: str  # stable hex id of the dataset, filters, resolution, subset and file list
    names: list[str]  # source file names (phantom_XXXXX for the phantom), in order
    n_skipped: int = 0  # unreadable files skipped (data.skip_corrupt)
    from_cache: bool = False  # True when the tensors came from the on-disk cache


# --------------------------------------------------------------------------------------------
# Listing the files of each kind
# --------------------------------------------------------------------------------------------


MASK_SUFFIX = "_Annotation.png"  # HC18's segmentation masks: NNN_HC_Annotation.png


def _is_hc18_image(path: Path) -> bool:
    name = path.name
    return path.is_file() and name.endswith("HC.png") and not name.endswith(MASK_SUFFIX)


def list_hc18(root: str | Path) -> list[Path]:
    """HC18 training images under ``root`` (or ``root/training_set``), sorted, masks excluded."""
    root = Path(root)
    for folder in (root / "training_set", root):
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if _is_hc18_image(p))
            if files:
                return files
    if not root.exists():
        raise FileNotFoundError(f"data.root: {root} does not exist; {HC18_HELP}")
    raise FileNotFoundError(
        f"data.root: no HC18 images (*_HC.png) in {root} or {root / 'training_set'}; {HC18_HELP}"
    )


def _read_planes_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=";")
        try:
            header = [h.strip() for h in next(reader)]  # the real file has "Train " with a space
        except StopIteration:
            raise ValueError(f"{path}: empty file") from None
        needed = ["Image_name", *PLANES_FILTERS.values()]
        missing = [c for c in needed if c not in header]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header)} "
                "(expected the ';'-separated FETAL_PLANES_DB_data.csv)"
            )
        rows = []
        for line, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue
            if len(values) < len(header):
                raise ValueError(
                    f"{path}:{line}: expected {len(header)} ';'-separated fields, got {len(values)}"
                )
            rows.append({h: v.strip() for h, v in zip(header, values, strict=False)})
    return rows


def list_planes(
    root: str | Path,
    *,
    plane: str | None = None,
    brain_plane: str | None = None,
    machine: str | None = None,
    train_split: bool | None = None,
    csv_order: bool = False,
) -> list[Path]:
    """FETAL_PLANES_DB images matching every given filter (``None`` = any), sorted by name, or
    in the CSV's row order with ``csv_order`` (the order a "first N rows" split takes them)."""
    root = Path(root)
    csv_path = root / PLANES_CSV
    if not csv_path.is_file():
        where = f"{root} does not exist" if not root.exists() else f"no {PLANES_CSV} in {root}"
        raise FileNotFoundError(f"data.root: {where}; {PLANES_HELP}")
    rows = _read_planes_csv(csv_path)
    wanted = {"plane": plane, "brain_plane": brain_plane, "machine": machine}
    wanted["train_split"] = None if train_split is None else ("1" if train_split else "0")
    for field_name, value in wanted.items():
        if value is None:
            continue
        column = PLANES_FILTERS[field_name]
        present = sorted({row[column] for row in rows})
        if value not in present:
            shown = ", ".join(repr(v) for v in present)
            raise ValueError(
                f"data.{field_name}: no {column} {value!r} in {csv_path}; values present: {shown}"
            )
        rows = [row for row in rows if row[column] == value]
    if not rows:
        raise ValueError(f"{csv_path}: no images match the filters {wanted}")
    files = [root / "Images" / f"{row['Image_name']}.png" for row in rows]
    if not csv_order:
        files.sort()
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{missing[0]}: image listed in {csv_path} not found ({len(missing)} of {len(files)} "
            f"missing); {PLANES_HELP}"
        )
    return files


def list_files(data: DataConfig) -> list[Path]:
    """The candidate files of a file-based dataset, sorted (planes: maybe in CSV order), those
    of the patients ``data.patients`` names when it is set. Not for ``phantom``."""
    files = _list_kind(data)
    if data.patients is None:
        return files
    return in_patient_range(files, file_patients(data, files), data.patients, data.root)


# --------------------------------------------------------------------------------------------
# Patients: who each image shows, where the dataset says
# --------------------------------------------------------------------------------------------

MANIFEST = "manifest.csv"  # a folder's per-image table (fetalgan data import-dicom/-nifti)
PATIENTS_HELP = (
    "patients are known for planes (Patient_num), hc18 (the subject number NNN of NNN_HC.png, "
    f"NNN_2HC.png) and a folder with a {MANIFEST} that has file and patient (or volume) columns"
)


def _hc18_subject(path: Path) -> str:
    # NNN_HC.png, NNN_2HC.png...: one subject. Numbers restart in test_set, so the folder counts.
    return f"{path.parent.name}/{path.name.split('_', 1)[0]}"


def _manifest_patients(root: Path) -> dict[str, str] | None:
    path = root / MANIFEST
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        column = "patient" if "patient" in header else "volume" if "volume" in header else None
        if "file" not in header or column is None:
            raise ValueError(
                f"{path}: needs a file column and a patient (or volume) column to know each "
                f"image's patient; found {', '.join(header) or 'no header'}"
            )
        return {row["file"]: row[column] for row in reader if row.get(column)}


def read_manifest(path: Path, columns: Sequence[str], tool: str) -> list[dict[str, str]]:
    """The rows of an earlier import's manifest (none when the file does not exist);
    ``ValueError`` for a manifest with other columns (another tool's, or older)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = tuple(reader.fieldnames or ())
        if header != tuple(columns):
            raise ValueError(
                f"{path}: not a manifest of fetalgan data {tool} (columns "
                f"{', '.join(header) or 'none'}; expected {', '.join(columns)}); "
                "import into another folder"
            )
        return list(reader)


def write_manifest(path: Path, rows: list[dict[str, str]], columns: Sequence[str]) -> None:
    """All rows, sorted by file, written to a temporary file then renamed over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda row: row["file"]))
    os.replace(tmp, path)


def file_patients(data: DataConfig, files: Sequence[Path]) -> dict[Path, str] | None:
    """Each file's patient (or subject, or volume), where the dataset says: planes' CSV
    ``Patient_num``, HC18's subject number, a folder's ``manifest.csv``; None when it does not
    know. ``ValueError`` when a manifest exists but leaves a file out."""
    root = Path(data.root)
    if data.kind == "hc18":
        return {p: _hc18_subject(p) for p in files}
    if data.kind == "planes":
        by_name = {
            f"{row['Image_name']}.png": row.get("Patient_num", "")
            for row in _read_planes_csv(root / PLANES_CSV)
        }
        return {p: by_name[p.name] for p in files if by_name.get(p.name)}
    if data.kind == "folder":
        known = _manifest_patients(root)
        if known is None:
            return None
        missing = [p.name for p in files if p.name not in known]
        if missing:
            raise ValueError(
                f"{root / MANIFEST}: no patient for {len(missing)} of the {len(files)} images, "
                f"e.g. {missing[0]}; add their rows (or re-run the import into this folder)"
            )
        return {p: known[p.name] for p in files}
    return None


def patient_order(patients: Sequence[str]) -> list[str]:
    """The dataset's patients in the fixed order every set's ``patients: [lo, hi]`` cuts: by
    a hash of the id, so the cut is a random split that does not depend on any seed and two
    sets of one dataset get disjoint patients from disjoint ranges."""
    import hashlib

    return sorted(set(patients), key=lambda p: (hashlib.sha1(p.encode()).hexdigest(), p))


def in_patient_range(
    files: Sequence[Path],
    patients: dict[Path, str] | None,
    fraction: Sequence[float],
    root: str | Path | None,
) -> list[Path]:
    """The files whose patient falls in ``fraction = [lo, hi]`` of :func:`patient_order`
    (patients ``floor(lo * P)`` to ``floor(hi * P) - 1``), in the given order."""
    if patients is None:
        raise ValueError(f"data.patients: {root} does not say who its images show; {PATIENTS_HELP}")
    unknown = [p for p in files if p not in patients]
    if unknown:
        raise ValueError(
            f"data.patients: no patient for {len(unknown)} image(s) of {root}, e.g. "
            f"{unknown[0].name}; {PATIENTS_HELP}"
        )
    order = patient_order(list(patients.values()))
    lo, hi = (int(f * len(order)) for f in fraction)
    chosen = set(order[lo:hi])
    if not chosen:
        raise ValueError(
            f"data.patients: {list(fraction)} of {root}'s {len(order)} patients is none of "
            "them; widen the range"
        )
    return [p for p in files if patients[p] in chosen]


def _list_kind(data: DataConfig) -> list[Path]:
    if not data.root:
        raise ValueError(f"data.root: required for data.kind {data.kind!r} (the dataset directory)")
    if data.kind == "hc18":
        return list_hc18(data.root)
    if data.kind == "planes":
        return list_planes(
            data.root,
            plane=data.plane,
            brain_plane=data.brain_plane,
            machine=data.machine,
            train_split=data.train_split,
            csv_order=data.order == "listed" or data.skip > 0,
        )
    if data.kind == "folder":
        return list_images(data.root)
    raise ValueError(
        f"data.kind: unknown value {data.kind!r}; expected one of hc18, planes, folder, phantom"
    )


# --------------------------------------------------------------------------------------------
# A real reference set named on the command line (--real)
# --------------------------------------------------------------------------------------------

REAL_OPTIONS = {  # DataConfig field -> the option of evaluate / study that sets it
    "root": "--real",
    "kind": "--real-kind",
    "plane": "--plane",
    "brain_plane": "--brain-plane",
    "machine": "--machine",
    "train_split": "--train-split",
    "fit": "--fit",
}
KIND_SIGNS = {  # why --real-kind auto picked a kind, for the message saying so
    "hc18": f"*_HC.png images with their *{MASK_SUFFIX} masks beside them; masks left out",
    "planes": f"{PLANES_CSV}; its rows filtered by --plane, --brain-plane, --machine, "
    "--train-split",
    "folder": f"every image directly in it but *{MASK_SUFFIX} masks",
}


def _has_hc18_pairs(folder: Path) -> bool:
    return folder.is_dir() and any(
        _is_hc18_image(p) and p.with_name(p.stem + MASK_SUFFIX).is_file()
        for p in folder.glob("*HC.png")
    )


def detect_kind(root: str | Path) -> str:
    """The kind of dataset ``root`` holds (what ``--real-kind auto`` picks): ``hc18`` when
    ``root`` or ``root/training_set`` holds ``*_HC.png`` images with their ``*_Annotation.png``
    masks beside them, ``planes`` when ``root`` holds ``FETAL_PLANES_DB_data.csv``, else
    ``folder``."""
    root = Path(root)
    if _has_hc18_pairs(root) or _has_hc18_pairs(root / "training_set"):
        return "hc18"
    if (root / PLANES_CSV).is_file():
        return "planes"
    return "folder"


def real_data(
    root: str | Path,
    *,
    kind: str = "auto",
    fit: str = "crop",
    plane: str | None = None,
    brain_plane: str | None = None,
    machine: str | None = None,
    train_split: bool | None = None,
    options: dict[str, str] | None = None,
) -> DataConfig:
    """The real set ``--real root`` names, as the :class:`~fetalgan.config.DataConfig` that
    training on it would use: ``kind`` one of ``auto`` (:func:`detect_kind`), ``hc18``,
    ``planes``, ``folder``; the planes filters only with ``planes``; ``fit`` as ``data.fit``.
    ``ValueError``/``FileNotFoundError`` naming the option that set the value: ``options``
    maps each DataConfig field to it (default :data:`REAL_OPTIONS`, those of evaluate and
    study: ``--real``, ``--real-kind``, ``--plane``...)."""
    from fetalgan.config import FITS, REAL_KINDS, DataConfig

    options = options or REAL_OPTIONS
    if kind not in REAL_KINDS:
        raise ValueError(
            f"{options['kind']}: unknown value {kind!r}; expected one of {', '.join(REAL_KINDS)}"
        )
    if fit not in FITS:
        raise ValueError(
            f"{options['fit']}: unknown value {fit!r}; expected one of {', '.join(FITS)}"
        )
    root = Path(root)
    if not root.is_dir():
        what = "not found" if not root.exists() else "is not a folder"
        raise FileNotFoundError(
            f"{options['root']} {root}: {what}; give a folder of real images, the HC18 folder "
            f"(ROOT/training_set/*_HC.png) or the FETAL_PLANES_DB folder (ROOT/{PLANES_CSV})"
        )
    picked = detect_kind(root) if kind == "auto" else kind
    filters = {"plane": plane, "brain_plane": brain_plane, "machine": machine}
    filters["train_split"] = train_split
    given = [options[name] for name, value in filters.items() if value is not None]
    if given and picked != "planes":
        how = "detected from its contents" if kind == "auto" else f"{options['kind']} {kind}"
        raise ValueError(
            f"{given[0]}: selects FETAL_PLANES_DB rows, but {options['root']} {root} is "
            f"{picked} ({how}); give the FETAL_PLANES_DB folder (ROOT/{PLANES_CSV}) as "
            f"{options['root']}"
        )
    return DataConfig(kind=picked, root=str(root), fit=fit, **filters)


def list_real_files(data: DataConfig) -> list[Path]:
    """The image files of the real set ``data`` (from :func:`real_data`), sorted: those
    :func:`list_files` lists, HC18's ``*_Annotation.png`` masks never among them (a ``folder``
    drops them too). Errors name the option to change (``--real``, ``--plane``...)."""
    try:
        files = list_files(data)
    except (ValueError, FileNotFoundError) as err:
        text = str(err)
        for name, option in REAL_OPTIONS.items():
            if text.startswith(f"data.{name}:"):
                raise type(err)(option + text.removeprefix(f"data.{name}")) from None
        raise
    if data.kind == "folder":
        files = [p for p in files if not p.name.endswith(MASK_SUFFIX)]
        if not files:
            raise ValueError(f"--real {data.root}: only *{MASK_SUFFIX} masks, no images")
    return files


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(16, cpus))


def decode_files(
    files: Sequence[Path],
    resolution: int | None,
    *,
    fit: str = "crop",
    skip_corrupt: bool = False,
    progress: bool = False,
    desc: str = "decode",
) -> list[np.ndarray | None]:
    """Decode ``files`` with a thread pool (PIL releases the GIL), in order.

    Each entry is ``(R, R) uint8``, brought to ``R x R`` by ``fit`` (``data.fit``, see
    :func:`fetalgan.images.fit_square`), or the file's own ``(H, W)`` when ``resolution`` is
    None; an unreadable file raises ``ValueError`` naming it, or gives ``None`` with
    ``skip_corrupt``.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    def decode(path: Path) -> np.ndarray | None:
        try:
            image = read_grey(path)
        except ValueError:
            if skip_corrupt:
                return None
            raise
        return image if resolution is None else fit_square(image, resolution, fit)

    out: list[np.ndarray | None] = []
    pool = ThreadPoolExecutor(max_workers=_workers())
    try:
        with tqdm(
            total=len(files), desc=desc, unit="img", disable=None if progress else True
        ) as bar:
            for image in pool.map(decode, files):
                out.append(image)
                bar.update()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out


def load_folder(
    directory: str | Path, resolution: int | None = None, *, progress: bool = False
) -> torch.Tensor:
    """All images directly in ``directory`` as ``(N, 1, H, W) uint8``, sorted by name.

    With ``resolution``, each is resized (short side) and centre-cropped to ``R x R``; without,
    all must have the same size (``ValueError`` naming two files that differ). A real set whose
    sizes vary goes through :func:`list_real_files` and :func:`decode_files` instead.
    """
    import torch

    if resolution is not None and resolution < 1:
        raise ValueError(f"resolution: must be >= 1, got {resolution}")
    files = list_images(directory)
    images = decode_files(files, resolution, progress=progress, desc=f"read {Path(directory).name}")
    first = images[0].shape
    for path, image in zip(files, images, strict=True):
        if image.shape != first:
            (h0, w0), (h1, w1) = first, image.shape
            raise ValueError(
                f"{directory}: images differ in size: {files[0].name} is {w0}x{h0}, "
                f"{path.name} is {w1}x{h1}; expected one size"
            )
    return torch.from_numpy(np.stack(images))[:, None]


# --------------------------------------------------------------------------------------------
# The training set: subset, cache, decode once
# --------------------------------------------------------------------------------------------


def subset_order(
    n_available: int, size: int | None, seed: int, *, order: str = "seeded", skip: int = 0
) -> np.ndarray:
    """Indices in the order images are drawn from ``skip..n-1``: a seeded permutation
    (``order="seeded"``), or in the listed order (``order="listed"``, and always for all).

    The first ``k`` of a permutation are the size-``k`` subset, so subsets of one seed nest
    (the 100 images are among the 300).
    """
    if not 0 <= skip <= n_available:
        raise ValueError(f"skip: must be in 0..{n_available} (the images listed), got {skip}")
    if size is None or order == "listed":
        return np.arange(skip, n_available)
    if seed < 0:
        raise ValueError(f"seed: must be >= 0 to draw the data subset, got {seed}")
    return skip + np.random.default_rng(seed).permutation(n_available - skip)


def dataset_key(data: DataConfig, resolution: int, seed: int, files: Sequence[Path] = ()) -> str:
    """Stable hex id of everything that decides the training tensors (and their statistics)."""
    from fetalgan.data.phantom import VERSION as PHANTOM_VERSION

    payload: dict = {
        "version": CACHE_VERSION,
        "kind": data.kind,
        "resolution": resolution,
        "size": data.size,
        "seed": seed if data.size is not None else None,  # no subset -> the seed is irrelevant
    }
    if data.order != "seeded" or data.skip:  # absent otherwise: earlier keys stay valid
        payload |= {"order": data.order, "skip": data.skip}
        if data.order == "listed":
            payload["seed"] = None
    if data.kind == "phantom":
        payload |= {
            "phantom_n": data.phantom_n,
            "phantom_seed": data.phantom_seed,
            "phantom_version": PHANTOM_VERSION,
        }
        if data.modality != "us" or data.phantom_slices:  # absent otherwise: keys stay valid
            payload |= {"modality": data.modality, "phantom_slices": data.phantom_slices}
    else:
        root = Path(data.root).resolve()
        payload["root"] = str(root)
        if data.kind == "planes":
            payload["filters"] = {k: getattr(data, k) for k in PLANES_FILTERS}
        if data.fit != "crop":  # absent for crop, the default: earlier keys stay valid
            payload["fit"] = data.fit
        # Size and modification time: an image replaced in place (same name, maybe the same
        # size) gives another key, so the cache never serves the old pixels.
        payload["files"] = [[os.path.relpath(p, root), *_size_mtime(p)] for p in files]
    return stable_key(payload)


def describe_set(data: DataConfig, *, key: str, n: int, context: str) -> dict:
    """A real set as an MLflow dataset input describes it (the UI's Datasets column): ``name``
    (the kind and folder, e.g. ``hc18:training_set``), ``digest`` (the start of the dataset
    key: it changes with any file, filter, subset or resolution), ``source`` and
    ``source_type``, ``context`` (training, evaluation, selection, test) and a ``profile`` of
    how the images were chosen. Plain data; ``fetalgan.tracking`` turns it into MLflow's."""
    import json

    from fetalgan.data.phantom import VERSION as PHANTOM_VERSION

    chosen = {"images": int(n), "size": data.size, "order": data.order, "skip": data.skip}
    if data.kind == "phantom":
        name = f"phantom:seed{data.phantom_seed}" + (
            f":{data.modality}" if data.modality != "us" else ""
        )
        source_type, source = (
            "code",
            json.dumps({"uri": f"fetalgan.data.phantom v{PHANTOM_VERSION}"}),
        )
        chosen |= {"pool": data.phantom_n}
    else:
        root = Path(data.root).resolve()
        folder = root.name
        name = data.kind if folder == data.kind else f"{data.kind}:{folder}"
        source_type, source = "local", json.dumps({"uri": str(root)})
        chosen |= {"fit": data.fit, "patients": data.patients}
        if data.kind == "planes":
            chosen |= {k: getattr(data, k) for k in PLANES_FILTERS if getattr(data, k) is not None}
    return {
        "name": name,
        "digest": key[:16],
        "source_type": source_type,
        "source": source,
        "context": context,
        "profile": json.dumps({k: v for k, v in chosen.items() if v is not None}),
    }


def _size_mtime(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _too_large(data: DataConfig, n_available: int, where: str) -> ValueError:
    return ValueError(
        f"data.size: {data.size} is larger than the dataset ({n_available} images in {where})"
    )


def _phantom_set(
    data: DataConfig, resolution: int, seed: int, progress: bool
) -> tuple[np.ndarray, list[str]]:
    from tqdm.auto import tqdm

    from fetalgan.data.phantom import iter_phantom_images

    if data.size is not None and data.size > data.phantom_n - data.skip:
        raise _too_large(data, data.phantom_n - data.skip, "the phantom pool, data.phantom_n")
    order = subset_order(data.phantom_n, data.size, seed, order=data.order, skip=data.skip)
    chosen = np.sort(order[: data.size or len(order)]).tolist()
    images = np.empty((len(chosen), resolution, resolution), dtype=np.uint8)
    start = 0
    with tqdm(
        total=len(chosen), desc="phantom", unit="img", disable=None if progress else True
    ) as bar:
        slices = None
        if data.phantom_slices:
            from fetalgan.data.phantom import slice_position

            slices = [slice_position(data.phantom_seed, i, data.phantom_slices) for i in chosen]
        for batch in iter_phantom_images(
            chosen, resolution, data.phantom_seed, modality=data.modality, slices=slices
        ):
            images[start : start + len(batch)] = batch
            start += len(batch)
            bar.update(len(batch))
    return images, [f"phantom_{i:05d}" for i in chosen]


def _file_set(
    data: DataConfig,
    files: list[Path],
    resolution: int,
    seed: int,
    progress: bool,
) -> tuple[np.ndarray, list[str], list[str]]:
    """Decode the seeded subset; with skip_corrupt, unreadable picks are replaced by the next
    images of the same permutation. Returns (images, names, skipped names)."""
    root = data.root
    if data.size is not None and data.size > len(files) - data.skip:
        raise _too_large(data, len(files) - data.skip, root)
    order = subset_order(len(files), data.size, seed, order=data.order, skip=data.skip)
    want = data.size or len(order)
    good: dict[int, np.ndarray] = {}
    skipped: list[int] = []
    pos = 0
    while len(good) < want and pos < len(order):
        picks = order[pos : pos + want - len(good)].tolist()
        pos += len(picks)
        decoded = decode_files(
            [files[i] for i in picks],
            resolution,
            fit=data.fit,
            skip_corrupt=data.skip_corrupt,
            progress=progress,
            desc=f"decode {data.kind}",
        )
        for i, image in zip(picks, decoded, strict=True):
            if image is None:
                skipped.append(i)
            else:
                good[i] = image
    if data.size is not None and len(good) < want:  # only when skipping
        raise ValueError(
            f"data.size: {data.size} is larger than the readable images "
            f"({len(files) - len(skipped)} readable, {len(skipped)} unreadable in {root})"
        )
    chosen = sorted(good)
    images = np.stack([good[i] for i in chosen])
    return images, [files[i].name for i in chosen], [files[i].name for i in sorted(skipped)]


def _warn_skipped(skipped: list[str], where: str) -> None:
    if skipped:
        warnings.warn(
            f"{where}: skipped {len(skipped)} unreadable image(s) (data.skip_corrupt: true), "
            f"e.g. {skipped[0]}",
            stacklevel=3,
        )


def load_training_images(
    data: DataConfig,
    resolution: int,
    *,
    seed: int,
    progress: bool = True,
) -> ImageSet:
    """The training images of ``data`` at ``resolution``: ``(N, 1, R, R) uint8`` on the CPU.

    ``data.size`` images are drawn with a generator seeded by ``seed`` (all, in sorted order,
    when ``data.size`` is null). The decoded tensor is cached under
    ``cache_root(data.cache_dir)/data/<key>.pt``; later calls with the same dataset, filters,
    resolution, subset and files load it instead of decoding again.
    """
    import torch

    if resolution < 1:
        raise ValueError(f"resolution: must be >= 1, got {resolution}")
    files = [] if data.kind == "phantom" else list_files(data)
    key = dataset_key(data, resolution, seed, files)
    path = cache_path("data", key, data.cache_dir)
    where = "phantom" if data.kind == "phantom" else str(data.root)

    cached = load_cached(path)
    if _valid_entry(cached, resolution):
        skipped = list(cached["skipped"])
        if skipped and not data.skip_corrupt:
            raise ValueError(
                f"{Path(data.root) / skipped[0]}: cannot read image ({len(skipped)} unreadable in "
                f"{data.root}; set data.skip_corrupt: true to skip them)"
            )
        _warn_skipped(skipped, where)
        log.info(
            "%s: %d images at %d px from the cache %s",
            where,
            len(cached["names"]),
            resolution,
            path,
        )
        return ImageSet(cached["images"], key, list(cached["names"]), len(skipped), from_cache=True)

    if data.kind == "phantom":
        images, names = _phantom_set(data, resolution, seed, progress)
        skipped: list[str] = []
    else:
        images, names, skipped = _file_set(data, files, resolution, seed, progress)
    tensor = torch.from_numpy(images)[:, None].contiguous()
    save_atomic(
        {"version": CACHE_VERSION, "images": tensor, "names": names, "skipped": skipped}, path
    )
    _warn_skipped(skipped, where)
    log.info("%s: decoded %d images at %d px into %s", where, len(names), resolution, path)
    return ImageSet(tensor, key, names, len(skipped), from_cache=False)


def load_reference_images(
    cfg: TrainConfig,
    resolution: int,
    *,
    progress: bool = False,
    ref=None,
    section: str = "eval_reference",
) -> ImageSet:
    """A reference set of ``cfg`` at ``resolution``: ``ref`` (default ``cfg.eval_reference``;
    by default the whole dataset ``cfg.data`` names), never augmented, drawn with its own
    seed, so trials that differ in ``data.size`` or ``seed`` compare with the same images.
    Errors name ``section`` (e.g. ``select.test_reference``), the part the user should fix."""
    from fetalgan.config import reference_data

    ref = ref or cfg.eval_reference
    try:
        return load_training_images(
            reference_data(cfg, ref), resolution, seed=ref.seed, progress=progress
        )
    except (ValueError, FileNotFoundError) as err:  # name the section the user should fix
        text = str(err)
        if not text.startswith("data."):
            raise
        raise type(err)(f"{section}." + text.removeprefix("data.")) from None


def _valid_entry(entry, resolution: int) -> bool:
    import torch

    if not isinstance(entry, dict) or entry.get("version") != CACHE_VERSION:
        return False
    images = entry.get("images")
    return (
        isinstance(images, torch.Tensor)
        and images.dtype == torch.uint8
        and images.ndim == 4
        and tuple(images.shape[1:]) == (1, resolution, resolution)
        and isinstance(entry.get("names"), list)
        and len(entry["names"]) == images.shape[0]
        and isinstance(entry.get("skipped"), list)
    )
