"""``fetalgan data fetch hc18|planes``: download a dataset from its Zenodo record (or take the
files copied in by hand, ``--from``), check every file against a pinned size and md5, unpack it
safely into the layout :mod:`fetalgan.data.datasets` reads, count what arrived, and write
``ROOT/dataset.json`` (source, DOI, files, licence, citation, counts).

Layouts (``ROOT`` defaults to ``data/hc18`` and ``data/planes``, relative to the current folder):

- HC18 (record 1327317): ``ROOT/training_set/NNN_HC.png`` + ``NNN_HC_Annotation.png``,
  ``ROOT/test_set/NNN_HC.png``, ``ROOT/training_set_pixel_size_and_HC.csv``.
- FETAL_PLANES_DB (record 3904280): ``ROOT/FETAL_PLANES_DB_data.csv`` and ``ROOT/Images/*.png``
  (a zip whose content sits in one wrapping folder is unpacked without it).

How a fetch behaves:

- Downloads go to ``ROOT/downloads/NAME.part``; a run that stops (network, Ctrl-C) is resumed by
  running the same command again (an HTTP Range request; a server that ignores it sends the
  whole file and the download starts over). A finished download is checked against the record's
  listing and the pinned table, then renamed to ``ROOT/downloads/NAME``.
- A download whose size or md5 is wrong is deleted (its bytes cannot be resumed into a good
  file) and the error names the file, the expected and the found checksum; the next run
  downloads it afresh. A ``--from`` file is never changed or deleted.
- The record's listing (``GET {api}/records/{id}``) must agree with the pinned table: if Zenodo
  lists another size or md5, the record changed and nothing is downloaded.
- Zips are unpacked into ``ROOT/.unpack-*`` and their entries renamed into ``ROOT`` only after
  the counts check passed, ``dataset.json`` last; on any error or Ctrl-C the folder is removed,
  so ``ROOT`` never holds half a dataset. Members with absolute paths, ``..`` or symbolic links
  are refused before anything is written; ``__MACOSX/`` and ``.DS_Store`` entries are skipped.
- After a successful download the zips in ``ROOT/downloads`` are removed (``--keep-zips`` keeps
  them). A root with a valid ``dataset.json`` is "already there": its counts are re-checked
  (no checksums, no network) and nothing else happens.

One fetch at a time per root (two runs would write the same ``.part`` file): a fetch holds
``ROOT/.fetch.lock`` (host, pid, start time) while it works; another fetch of that root,
from any node sharing the folder, is refused naming the holder. A lock left by a fetch that
was killed on this host (its pid is gone) is taken over; one from another host is named with
the command that removes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import shlex
import shutil
import socket
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_API = "https://zenodo.org/api"  # Zenodo's REST API; --api or $FETALGAN_ZENODO_API
API_ENV = "FETALGAN_ZENODO_API"
TIMEOUT_S = 60  # seconds a connection or a read may wait for the server before failing
CHUNK = 1 << 20  # bytes per read while downloading, hashing and unpacking
DOWNLOADS = "downloads"  # ROOT/downloads/NAME.part while downloading, NAME once verified
RECORD = "dataset.json"  # written last: its presence marks a finished fetch
LOCK_FILE = ".fetch.lock"  # ROOT/.fetch.lock while a fetch works on ROOT
STAGING_PREFIX = ".unpack-"  # ROOT/.unpack-XXXX: zips are unpacked here, then renamed into ROOT
CC_BY_4 = (
    "CC BY 4.0 (Creative Commons Attribution 4.0, https://creativecommons.org/licenses/by/4.0/)"
)


@dataclass(frozen=True)
class RecordFile:
    """One file of a Zenodo record as fetalgan expects it, and where its content goes."""

    name: str  # the record's file key, e.g. "training_set.zip"
    size: int  # bytes
    md5: str  # hex digest
    folder: str | None = None  # a zip whose files sit in this one folder: ROOT/<folder>/...
    top: tuple[str, ...] = ()  # a zip unpacked into ROOT: entries its top must hold ("Images/")

    @property
    def is_zip(self) -> bool:
        return self.name.endswith(".zip")

    @property
    def places(self) -> tuple[str, ...]:
        """The entries of ROOT this file fills, known before it is unpacked."""
        if not self.is_zip:
            return (self.name,)
        return (self.folder,) if self.folder else tuple(t.rstrip("/") for t in self.top)


@dataclass(frozen=True)
class Dataset:
    """A dataset's Zenodo record, pinned: its files, what unpacking them must give, its terms."""

    kind: str  # data.kind in a sweep file
    title: str
    record: int  # Zenodo record id
    doi: str
    licence: str
    citation: str
    files: tuple[RecordFile, ...]
    counts: dict[str, int] = field(hash=False)  # check_counts must find exactly these
    default_root: str  # --root when not given, relative to the current folder

    @property
    def url(self) -> str:
        return f"https://zenodo.org/records/{self.record}"


# The pinned table: the files fetalgan was checked with. The CLI always uses it; tests replace
# entries (monkeypatch.setitem) with small fabricated records.
DATASETS: dict[str, Dataset] = {
    "hc18": Dataset(
        kind="hc18",
        title="HC18",
        record=1327317,
        doi="10.5281/zenodo.1327317",
        licence=CC_BY_4,
        citation=(
            "van den Heuvel TLA, de Bruijn D, de Korte CL, van Ginneken B (2018) Automated "
            "measurement of fetal head circumference using 2D ultrasound images. PLoS ONE "
            "13(8): e0200412"
        ),
        files=(
            RecordFile(
                "training_set.zip",
                132_926_838,
                "00eb8198b9a505b2b3a6dfc740382497",
                folder="training_set",
            ),
            RecordFile(
                "test_set.zip", 43_518_463, "8402af5d137ef40a2888c1011ef3fe7e", folder="test_set"
            ),
            RecordFile(
                "training_set_pixel_size_and_HC.csv", 33_688, "c0761518fece2bd2d2ad4218f2cd9777"
            ),
        ),
        counts={"training_images": 999, "training_masks": 999, "test_images": 335},
        default_root="data/hc18",
    ),
    "planes": Dataset(
        kind="planes",
        title="FETAL_PLANES_DB",
        record=3904280,
        doi="10.5281/zenodo.3904280",
        licence=CC_BY_4,
        citation=(
            "Burgos-Artizzu XP et al. (2020) Evaluation of deep convolutional neural networks "
            "for automatic classification of common maternal fetal ultrasound planes. "
            "Scientific Reports 10: 10200"
        ),
        files=(
            RecordFile(
                "FETAL_PLANES_ZENODO.zip",
                2_088_522_169,
                "2a5fcc2cefb789bcc0f6c1f73e0ea43f",
                top=("FETAL_PLANES_DB_data.csv", "Images/"),
            ),
        ),
        counts={"rows": 12_400},  # and every row's image in Images/ (the images are counted too)
        default_root="data/planes",
    ),
}
COUNT_LABELS = {  # count key -> what is counted, for messages
    "training_images": "training images (training_set/*_HC.png)",
    "training_masks": "masks (training_set/*_Annotation.png)",
    "test_images": "test images (test_set/*_HC.png)",
    "rows": "rows in FETAL_PLANES_DB_data.csv",
    "images": "images (Images/*.png)",
}
PLANES_COLUMNS = ("Image_name", "Patient_num", "Plane", "Brain_plane", "Operator", "US_Machine")
PLANES_COLUMNS += ("Train",)  # the real header has "Train " with a trailing space


@dataclass(frozen=True)
class Fetched:
    """What :func:`fetch` leaves behind."""

    root: Path
    record: dict  # what ROOT/dataset.json holds
    already_there: bool  # True: a finished fetch was found, its counts re-checked, nothing done


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def fetch(
    kind: str,
    root: str | Path | None = None,
    *,
    sources: Sequence[str | Path] = (),
    api: str | None = None,
    keep_zips: bool = False,
) -> Fetched:
    """Put dataset ``kind`` (``hc18`` or ``planes``, a key of :data:`DATASETS`) into ``root``.

    ``sources``: the record's files copied in by hand (``--from``); no network then. Otherwise
    the files are downloaded from ``api`` (default ``$FETALGAN_ZENODO_API`` or
    :data:`DEFAULT_API`). ``ValueError``/``FileNotFoundError`` name the file and what was
    expected; see the module docstring for what is left behind on each failure.
    """
    if kind not in DATASETS:
        raise ValueError(f"dataset: unknown {kind!r}; expected one of {', '.join(DATASETS)}")
    dataset = DATASETS[kind]
    root = Path(root or dataset.default_root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"--root {root}: exists and is not a folder; give a folder")
    finished = _finished_record(dataset, root)
    if finished is not None:
        return Fetched(root, finished, already_there=True)
    files = _verified_sources(dataset, sources) if sources else None
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    try:
        with _root_lock(root):  # from here on this fetch alone works on root
            try:
                finished = _finished_record(dataset, root)  # another fetch may have just ended
                if finished is not None:
                    return Fetched(root, finished, already_there=True)
                _check_places_free(dataset, root)
                record = _fetch_into(dataset, root, files, sources, api, keep_zips)
            finally:  # a failed run leaves its .part files to resume from, no empty folder
                _remove_if_empty(root / DOWNLOADS)
    finally:
        if created:
            _remove_if_empty(root)
    return Fetched(root, record, already_there=False)


def _fetch_into(
    dataset: Dataset, root: Path, files: dict | None, sources, api: str | None, keep_zips: bool
) -> dict:
    """Download (or take ``files``, the ``--from`` copies), unpack and install into ``root``;
    the zips removed unless ``keep_zips``. The record written (``dataset.json``)."""
    if files is None:
        api = api or os.environ.get(API_ENV) or DEFAULT_API
        files = _download_all(dataset, root, api)
        how = f"downloaded from {api}"
    else:
        how = "--from (copied in by hand)"
    record = _install(dataset, root, files, how=how)
    if not keep_zips:  # downloads of this dataset, finished or not, are of no further use
        given = {Path(source).resolve() for source in sources}
        for f in dataset.files:
            for path in (root / DOWNLOADS / f.name, root / DOWNLOADS / f"{f.name}.part"):
                if path.resolve() not in given:
                    path.unlink(missing_ok=True)
    return record


class RootInUse(ValueError):
    """Another fetch works on the same root (``ROOT/.fetch.lock``)."""


@contextlib.contextmanager
def _root_lock(root: Path):
    """Hold ``root/.fetch.lock`` for the block: created exclusively (``O_EXCL``, which shared
    file systems honour across nodes), holding this host, pid and start time; removed after.
    :class:`RootInUse` when another fetch holds it; a lock whose holder was on this host and
    is gone is taken over."""
    path = root / LOCK_FILE
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "started": started}
    for attempt in (1, 2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(path)
            if attempt == 1 and _holder_gone(holder):
                log.warning("%s: taking over the lock of a fetch that is gone (%s)", path, holder)
                path.unlink(missing_ok=True)
                continue
            raise RootInUse(_in_use_message(root, path, holder)) from None
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _lock_holder(path: Path) -> dict:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):  # being written this instant, or damaged
        return {}
    return holder if isinstance(holder, dict) else {}


def _holder_gone(holder: dict) -> bool:
    """The lock's fetch ran on this host and its process no longer exists."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _in_use_message(root: Path, path: Path, holder: dict) -> str:
    who = (
        f"host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('started')}"
        if holder
        else "its holder is not readable yet"
    )
    return (
        f"--root {root}: another fetch is working on it ({who}); two fetches of one folder "
        "would write the same files. Wait for it to finish and run this again (it then finds "
        f"the dataset there); if no fetch runs any more (it was killed on another node), "
        f"remove the lock: rm {shlex.quote(str(path))}"
    )


def add_cli(data_sub) -> None:
    """``fetalgan data fetch``: registered by :func:`fetalgan.cli._add_data_tools`."""
    names = "; ".join(f"{d.kind}: {', '.join(f.name for f in d.files)}" for d in DATASETS.values())
    p = data_sub.add_parser(
        "fetch",
        help="download HC18 or FETAL_PLANES_DB from Zenodo (or unpack copies, --from), verify "
        "and unpack it, write ROOT/dataset.json",
    )
    p.add_argument(
        "dataset",
        choices=tuple(DATASETS),
        help="hc18 (Zenodo record 1327317) or planes (FETAL_PLANES_DB, Zenodo record 3904280)",
    )
    p.add_argument(
        "--root",
        help="folder to put it in (default data/hc18 or data/planes, relative to the current "
        "folder); it is what a sweep file's data.root names",
    )
    p.add_argument(
        "--from",
        dest="sources",
        action="append",
        default=[],
        metavar="FILE",
        help=f"a file of the record copied in by hand, once per file ({names}); no network: "
        "the way onto a cluster without internet access",
    )
    p.add_argument("--api", help=f"Zenodo records API (default ${API_ENV} or {DEFAULT_API})")
    p.add_argument(
        "--keep-zips",
        action="store_true",
        help=f"keep the downloaded zips in ROOT/{DOWNLOADS} (default: removed once unpacked)",
    )
    p.set_defaults(func=cmd_fetch)


def cmd_fetch(args) -> int:
    if args.sources and args.api:
        raise ValueError("--api: not used with --from (files copied in by hand need no network)")
    fetched = fetch(
        args.dataset, args.root, sources=args.sources, api=args.api, keep_zips=args.keep_zips
    )
    record, root = fetched.record, fetched.root
    counts = ", ".join(f"{n:,} {COUNT_LABELS.get(k, k)}" for k, n in record["counts"].items())
    title = DATASETS[args.dataset].title
    if fetched.already_there:
        print(f"{title} is already in {root} (fetched {record.get('fetched')}); {counts}")
    else:
        print(f"{title} is in {root}: {counts}; {root / RECORD} says where from")
    print(f"licence: {record.get('licence')}")
    print(f"cite: {record.get('citation')}")
    print(f"in a sweep file:  data: {_yaml_flow({'kind': args.dataset, 'root': str(root)})}")
    print(f"check it:         fetalgan data check {shlex.quote(str(root))}")
    return 0


def _yaml_flow(mapping: dict[str, str]) -> str:
    """``mapping`` as one line of YAML, ``{kind: hc18, root: data/hc18}``, quoted where needed."""
    import yaml

    return yaml.safe_dump(mapping, default_flow_style=True, sort_keys=False, width=1000).strip()


# --------------------------------------------------------------------------------------------
# A finished root, and what unpacking must find
# --------------------------------------------------------------------------------------------


def check_counts(kind: str, folder: Path) -> dict[str, int]:
    """Count dataset ``kind``'s files in ``folder`` (laid out as in ``ROOT``) and compare with
    ``DATASETS[kind].counts``: ``ValueError`` naming each count that differs."""
    dataset = DATASETS[kind]
    found = _hc18_counts(folder) if kind == "hc18" else _planes_counts(folder)
    wrong = [
        f"{found.get(key, 0):,} {COUNT_LABELS.get(key, key)}, expected {expected:,}"
        for key, expected in dataset.counts.items()
        if found.get(key) != expected
    ]
    if wrong:
        raise ValueError("found " + "; ".join(wrong))
    return found


def _hc18_counts(folder: Path) -> dict[str, int]:
    from fetalgan.data.datasets import MASK_SUFFIX, _is_hc18_image

    def entries(name: str) -> list[Path]:
        return list((folder / name).iterdir()) if (folder / name).is_dir() else []

    training = entries("training_set")
    return {
        "training_images": sum(_is_hc18_image(p) for p in training),
        "training_masks": sum(p.name.endswith(MASK_SUFFIX) and p.is_file() for p in training),
        "test_images": sum(_is_hc18_image(p) for p in entries("test_set")),
    }


def _planes_counts(folder: Path) -> dict[str, int]:
    """Rows of the CSV (its columns checked) and PNGs in Images/; every listed image must exist."""
    from fetalgan.data.datasets import PLANES_CSV, _read_planes_csv

    csv_path = folder / PLANES_CSV
    if not csv_path.is_file():
        raise ValueError(f"no {PLANES_CSV}")
    try:
        rows = _read_planes_csv(csv_path)
    except ValueError as err:  # name the file as it sits in ROOT, not in the staging folder
        raise ValueError(str(err).replace(str(csv_path), PLANES_CSV)) from None
    missing_columns = [c for c in PLANES_COLUMNS if rows and c not in rows[0]]
    if missing_columns:
        raise ValueError(f"{PLANES_CSV}: missing column(s) {', '.join(missing_columns)}")
    images = folder / "Images"
    listed = [images / f"{row['Image_name']}.png" for row in rows]
    missing = [p for p in listed if not p.is_file()]
    if missing:
        raise ValueError(
            f"Images/{missing[0].name}: listed in {PLANES_CSV} but not found ({len(missing):,} "
            f"of {len(listed):,} missing)"
        )
    n_images = sum(p.is_file() for p in images.glob("*.png")) if images.is_dir() else 0
    return {"rows": len(rows), "images": n_images}


def _finished_record(dataset: Dataset, root: Path) -> dict | None:
    """``ROOT/dataset.json`` of an earlier finished fetch, its counts re-checked; None if none."""
    path = root / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); move it away and fetch again") from None
    if not isinstance(record, dict) or record.get("kind") != dataset.kind:
        other = record.get("dataset") if isinstance(record, dict) else None
        raise ValueError(
            f"{path}: describes {other!r}, not {dataset.title}; give another --root "
            f"(default {dataset.default_root})"
        )
    try:
        record["counts"] = check_counts(dataset.kind, root)
    except ValueError as err:
        raise ValueError(
            f"{root}: {RECORD} says {dataset.title} was fetched {record.get('fetched')}, but "
            f"{err}; move {root} away and fetch again"
        ) from None
    return record


def _check_places_free(dataset: Dataset, root: Path) -> None:
    """Before any download: nothing of an unfinished or hand-made copy is in the way."""
    for place in (p for f in dataset.files for p in f.places):
        if (root / place).exists():
            raise ValueError(
                f"{root / place}: already exists, but {root / RECORD} (written last by a "
                f"finished fetch) does not; move it away or give another --root"
            )


# --------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------


def _md5(path: Path) -> str:
    from tqdm.auto import tqdm

    digest = hashlib.md5(usedforsecurity=False)
    with (
        open(path, "rb") as f,
        tqdm(
            total=path.stat().st_size,
            desc=f"md5 {path.name}",
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            disable=None,
        ) as bar,
    ):
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _verify(path: Path, expected: RecordFile, what: str) -> str:
    """The md5 of ``path``, which must match ``expected``'s size and md5; else ``ValueError``
    naming ``what`` (the file as the user knows it), the expected and the found values."""
    size = path.stat().st_size
    md5 = _md5(path)
    if size != expected.size or md5 != expected.md5:
        raise ValueError(
            f"{what}: md5 {md5} ({size:,} bytes), expected md5 {expected.md5} "
            f"({expected.size:,} bytes) for {expected.name}"
        )
    return md5


def _verified_sources(dataset: Dataset, sources: Sequence[str | Path]) -> dict:
    """``--from`` files matched to the record by name, each verified: name -> (path, md5)."""
    wanted = {f.name: f for f in dataset.files}
    given: dict[str, Path] = {}
    for source in map(Path, sources):
        if source.name not in wanted:
            raise ValueError(
                f"--from {source}: not a file of {dataset.title} (Zenodo record "
                f"{dataset.record}); expected one of {', '.join(wanted)}"
            )
        if source.name in given:
            raise ValueError(f"--from {source}: {source.name} given twice")
        if not source.is_file():
            raise FileNotFoundError(f"--from {source}: not found")
        given[source.name] = source
    missing = [name for name in wanted if name not in given]
    if missing:
        raise ValueError(
            f"--from: {dataset.title} needs also {', '.join(missing)} ({dataset.url}); "
            "give each file with its own --from"
        )
    return {
        name: (path, _verify(path, wanted[name], f"--from {path}")) for name, path in given.items()
    }


# --------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------


def _offline_help(dataset: Dataset, root: Path) -> str:
    names = ", ".join(f.name for f in dataset.files)
    options = " ".join(f"--from {shlex.quote(f.name)}" for f in dataset.files)
    command = f"fetalgan data fetch {dataset.kind} --root {shlex.quote(str(root))} {options}"
    return (
        f"without internet access here, download {names} from {dataset.url} on a machine "
        f"that has it, copy them into the current folder and run `{command}`"
    )


def _open(url: str, headers: dict[str, str] | None = None):
    from fetalgan import __version__

    request = urllib.request.Request(
        url, headers={"User-Agent": f"fetalgan/{__version__}", **(headers or {})}
    )
    return urllib.request.urlopen(request, timeout=TIMEOUT_S)


def _record_links(dataset: Dataset, root: Path, api: str) -> dict[str, str]:
    """The record's download link of each pinned file, after checking that the record lists
    each with the pinned size and md5 (``ValueError`` naming both values where not)."""
    url = f"{api.rstrip('/')}/records/{dataset.record}"
    try:
        with _open(url, {"Accept": "application/json"}) as response:
            body = json.load(response)
    except urllib.error.HTTPError as err:
        raise ValueError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise ValueError(f"cannot reach {url} ({reason}); {_offline_help(dataset, root)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{url}: the answer is not JSON ({err})") from None
    files = body.get("files") if isinstance(body, dict) else None
    if isinstance(files, dict):  # InvenioRDM's own format: {"entries": {key: entry}}
        files = files.get("entries")
        files = list(files.values()) if isinstance(files, dict) else files
    if not isinstance(files, list):
        raise ValueError(f"{url}: no 'files' list in the answer (expected Zenodo's records API)")
    listing = {e.get("key"): e for e in files if isinstance(e, dict)}
    links, changes = {}, []
    for expected in dataset.files:
        entry = listing.get(expected.name)
        if entry is None:
            shown = ", ".join(str(k) for k in listing) or "no files"
            changes.append(f"{expected.name} is not listed (it lists {shown})")
            continue
        if entry.get("size") != expected.size:
            changes.append(
                f"{expected.name}: Zenodo lists size {entry.get('size')}, fetalgan's pinned "
                f"table {expected.size}"
            )
        checksum = str(entry.get("checksum", "")).lower()
        if checksum != f"md5:{expected.md5}":
            changes.append(
                f"{expected.name}: Zenodo lists checksum {entry.get('checksum')}, fetalgan's "
                f"pinned table md5:{expected.md5}"
            )
        entry_links = entry.get("links") if isinstance(entry.get("links"), dict) else {}
        # Zenodo's records API: links.self is the content; InvenioRDM's: links.content
        links[expected.name] = entry_links.get("content") or entry_links.get("self")
        if not links[expected.name]:
            changes.append(f"{expected.name}: no download link (links.self) in the listing")
    if changes:
        raise ValueError(
            f"Zenodo record {dataset.record} changed ({url}): {'; '.join(changes)}. fetalgan "
            f"only unpacks the files it was checked with: get the original files and use "
            f"--from, or update DATASETS in fetalgan/data/fetch.py after checking the new ones"
        )
    return links


def _download_all(dataset: Dataset, root: Path, api: str) -> dict:
    """Each pinned file in ``ROOT/downloads``, verified: name -> (path, md5). The listing is
    asked for only when something is left to download."""
    folder = root / DOWNLOADS
    folder.mkdir(exist_ok=True)
    files: dict[str, tuple[Path, str]] = {}
    links = None
    for expected in dataset.files:
        done = folder / expected.name
        if done.is_file():  # verified by an earlier run that stopped later
            try:
                files[expected.name] = (done, _verify(done, expected, str(done)))
                continue
            except ValueError as err:
                log.warning("%s; downloading it again", err)
                done.unlink()
        if links is None:
            links = _record_links(dataset, root, api)
        part = folder / f"{expected.name}.part"
        _download(links[expected.name], part, expected, dataset, root)
        try:
            md5 = _verify(part, expected, f"download of {expected.name} ({links[expected.name]})")
        except ValueError as err:
            part.unlink()
            raise ValueError(
                f"{err}; the download was removed: run the same command again to download it afresh"
            ) from None
        part.replace(done)
        files[expected.name] = (done, md5)
    return files


def _download(url: str, part: Path, expected: RecordFile, dataset: Dataset, root: Path) -> None:
    """Append to ``part`` until it holds ``expected.size`` bytes, resuming from what it holds
    with a Range request; a server that ignores the Range sends the whole file, which replaces
    ``part``. Stopped downloads leave ``part`` to resume from."""
    from tqdm.auto import tqdm

    have = part.stat().st_size if part.is_file() else 0
    if have > expected.size:
        part.unlink()
        have = 0
    if have == expected.size:
        return
    _need_space(part.parent, expected.size - have, f"downloading {expected.name}")
    try:
        response = _open(url, {"Range": f"bytes={have}-"} if have else None)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the range is not satisfiable: this part is no prefix
            log.info("%s: the server refused to resume at byte %d; starting over", url, have)
            part.unlink()
            return _download(url, part, expected, dataset, root)
        raise ValueError(
            f"{url}: HTTP {err.code} {err.reason} (downloading {expected.name})"
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise ValueError(f"cannot reach {url} ({reason}); {_offline_help(dataset, root)}") from None
    with response:
        if have and response.status != 206:  # 200: the server ignored the Range header
            log.info("%s: the server does not resume downloads; starting over", url)
            have = 0
        elif have and not (response.headers.get("Content-Range") or "").startswith(
            f"bytes {have}-"
        ):
            part.unlink()
            raise ValueError(
                f"{url}: answered the request for bytes {have}- with Content-Range "
                f"{response.headers.get('Content-Range')!r}; the partial download was removed, "
                "run the same command again"
            )
        with (
            open(part, "ab" if have else "wb") as out,
            tqdm(
                total=expected.size,
                initial=have,
                desc=expected.name,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                disable=None,
            ) as bar,
        ):
            too_long = False
            try:
                while chunk := response.read(CHUNK):
                    too_long = have + len(chunk) > expected.size
                    if too_long:
                        break
                    out.write(chunk)
                    have += len(chunk)
                    bar.update(len(chunk))
            except (TimeoutError, ConnectionError, http.client.HTTPException) as err:
                raise ValueError(
                    f"download of {expected.name} stopped at {have:,} of {expected.size:,} bytes "
                    f"({type(err).__name__}: {err}); run the same command again to resume"
                ) from None
    if too_long:
        part.unlink()
        raise ValueError(
            f"{url}: sends more than the {expected.size:,} bytes of {expected.name}; the record "
            "changed? The partial download was removed"
        )
    if have < expected.size:
        raise ValueError(
            f"download of {expected.name} stopped at {have:,} of {expected.size:,} bytes (the "
            "server closed the connection); run the same command again to resume"
        )


def _need_space(folder: Path, n_bytes: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < n_bytes:
        raise ValueError(
            f"{folder}: {what} needs {n_bytes / 1e9:.2f} GB, only {free / 1e9:.2f} GB free"
        )


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty, or gone: either way nothing to clean
        pass


# --------------------------------------------------------------------------------------------
# Unpacking
# --------------------------------------------------------------------------------------------


def _member_parts(info: zipfile.ZipInfo, zip_name: str) -> tuple[str, ...]:
    """The path of a zip member as parts, refusing anything that could land outside the folder
    it is unpacked into: absolute paths, drive letters, ``..``, symbolic links, devices."""
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ValueError(
            f"{zip_name}: member {info.filename!r} is a symbolic link; refused, nothing unpacked"
        )
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ValueError(
            f"{zip_name}: member {info.filename!r} is not a plain file or folder; refused, "
            "nothing unpacked"
        )
    name = info.filename.replace("\\", "/")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if name.startswith("/") or re.match(r"[A-Za-z]:", name) or ".." in parts:
        raise ValueError(
            f"{zip_name}: member {info.filename!r} would land outside the folder it is unpacked "
            "into (absolute path or '..'); refused, nothing unpacked"
        )
    return parts


def _unpack_plan(
    zf: zipfile.ZipFile, expected: RecordFile
) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """Each file member of ``zf`` with the path (parts) it gets under ``ROOT``. Single folders
    wrapping everything are dropped: HC18's ``training_set/`` (also ``training_set/
    training_set/``) becomes ``ROOT/training_set``, a planes zip's one wrapping folder goes."""
    members = []
    for info in zf.infolist():
        parts = _member_parts(info, expected.name)  # every member is checked, skipped or not
        if info.is_dir() or not parts or parts[0] == "__MACOSX" or parts[-1] == ".DS_Store":
            continue
        members.append((info, parts))
    if not members:
        raise ValueError(f"{expected.name}: holds no files")
    wrappers: list[str] = []
    while all(len(p) > 1 for _, p in members) and len({p[0] for _, p in members}) == 1:
        wrappers.append(members[0][1][0])
        members = [(info, parts[1:]) for info, parts in members]
    top = sorted({p[0] + ("/" if len(p) > 1 else "") for _, p in members})
    shown = ", ".join(top[:5]) + (f" and {len(top) - 5} more" if len(top) > 5 else "")
    if expected.folder:
        if not wrappers or wrappers[-1] != expected.folder:
            found = f"{'/'.join(wrappers)}/" if wrappers else f"at its top: {shown}"
            raise ValueError(
                f"{expected.name}: expected its files in one folder {expected.folder}/, found "
                f"{found}; refused, nothing unpacked"
            )
        members = [(info, (expected.folder, *parts)) for info, parts in members]
    else:
        missing = [t for t in expected.top if t not in top]
        if missing:
            raise ValueError(
                f"{expected.name}: expected {', '.join(expected.top)} at its top (or inside one "
                f"folder), found {shown}; refused, nothing unpacked"
            )
    paths = [parts for _, parts in members]
    folders = {parts[:k] for parts in paths for k in range(1, len(parts))}
    clashes = set(paths) & folders or {p for p in paths if paths.count(p) > 1}
    if clashes:
        raise ValueError(
            f"{expected.name}: {'/'.join(min(clashes))} is in it twice (or as a file and a "
            "folder); refused, nothing unpacked"
        )
    return members


def _unpack(zip_path: Path, expected: RecordFile, into: Path) -> None:
    """Unpack ``zip_path`` into the folder ``into`` as :func:`_unpack_plan` lays it out."""
    from tqdm.auto import tqdm

    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = _unpack_plan(zf, expected)
            total = sum(info.file_size for info, _ in members)
            _need_space(into, total, f"unpacking {expected.name}")
            with tqdm(
                total=total,
                desc=f"unpack {expected.name}",
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                disable=None,
            ) as bar:
                for info, parts in members:
                    target = into.joinpath(*parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as member, open(target, "xb") as out:
                        shutil.copyfileobj(member, out, CHUNK)
                    bar.update(info.file_size)
    except zipfile.BadZipFile as err:  # also a member whose CRC does not match
        raise ValueError(f"{zip_path}: not a readable zip ({err})") from None
    except NotImplementedError as err:  # e.g. a compression method Python cannot read
        raise ValueError(
            f"{zip_path}: {err}; unpack it by hand into the layout fetalgan/data/datasets.py "
            "describes and run `fetalgan data check` on it"
        ) from None


def _install(dataset: Dataset, root: Path, files: dict, *, how: str) -> dict:
    """Unpack (or copy) ``files`` (name -> (path, md5)) into a staging folder in ``root``,
    check the counts, then rename each entry into ``root``, ``dataset.json`` last. On any
    error, Ctrl-C included, the staging folder is removed and ``root`` is as before."""
    for stale in root.glob(f"{STAGING_PREFIX}*"):  # a run killed before it could clean up
        log.info("removing %s, left by an interrupted fetch", stale)
        shutil.rmtree(stale)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
    try:
        for expected in dataset.files:
            path, _ = files[expected.name]
            if expected.is_zip:
                _unpack(path, expected, staging)
            else:
                shutil.copyfile(path, staging / expected.name)
        try:
            counts = check_counts(dataset.kind, staging)
        except ValueError as err:
            names = ", ".join(f.name for f in dataset.files)
            raise ValueError(f"{names}: unpacked, but {err}; nothing was put into {root}") from None
        record = {
            "dataset": dataset.title,
            "kind": dataset.kind,
            "source": {"zenodo_record": dataset.record, "doi": dataset.doi, "url": dataset.url},
            "licence": dataset.licence,
            "citation": dataset.citation,
            "files": [
                {"name": f.name, "size": f.size, "md5": files[f.name][1]} for f in dataset.files
            ],
            "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "how": how,
            "counts": counts,
        }
        (staging / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        _move_into(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def _move_into(staging: Path, root: Path) -> None:
    """Rename every entry of ``staging`` into ``root``, ``dataset.json`` last; all or none."""
    entries = sorted(p for p in staging.iterdir() if p.name != RECORD) + [staging / RECORD]
    clashes = [root / e.name for e in entries if (root / e.name).exists()]
    if clashes:
        raise ValueError(
            f"{clashes[0]}: already exists; move it away or give another --root (nothing was "
            "changed)"
        )
    moved: list[str] = []
    try:
        for entry in entries:
            entry.rename(root / entry.name)
            moved.append(entry.name)
    except BaseException:  # Ctrl-C too: put back what was moved, so root is as before
        for name in reversed(moved):
            (root / name).rename(staging / name)
        raise
