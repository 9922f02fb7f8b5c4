"""The reader study's one SQLite file: images (PNG bytes), the answer key, raters and answers.

A study is one portable file. ``create_study`` draws a seeded, balanced, shuffled set of real
and synthetic images (the reals from a dataset as training reads it: HC18 without its masks,
filtered FETAL_PLANES_DB rows, or a folder), brings them to one resolution by the training
transform (``data.fit``: crop, squash or pad) and re-encodes them all with the same PNG writer,
so neither the bytes nor the size of an image tell real from fake. Each image gets a random opaque id (``secrets``),
the only name the web page ever sees; whether it is real stays in the ``images.is_real``
column, read only by the analysis.

Tables::

    meta(key PRIMARY KEY, value)                 schema version, seed, sources, secret key
    images(id PRIMARY KEY, position UNIQUE,      id: 16 hex chars; position: the shown order
           is_real, source, source_run, png)     source: "real:<file>" / "fake:<file>"
    raters(name PRIMARY KEY, created_at)
    answers(rater, image_id, label, quality,     label: 'real' | 'fake'; quality: 1..5
            answered_at, UNIQUE(rater, image_id))

Every write is one transaction; an answer is on disk when the page moves on.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fetalgan.config import DataConfig

SCHEMA_VERSION = 1
LABELS = ("real", "fake")
QUALITY_RANGE = (1, 5)
MAX_NAME_LENGTH = 64
SKIPPED_NAMES = ("grid.png",)  # `fetalgan generate` writes a sample grid beside its images
SKIPPED_SUFFIXES = ("_Annotation.png",)  # HC18 segmentation masks

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL UNIQUE,
    is_real INTEGER NOT NULL CHECK (is_real IN (0, 1)),
    source TEXT NOT NULL,
    source_run TEXT,
    png BLOB NOT NULL
);
CREATE TABLE raters (name TEXT PRIMARY KEY, created_at TEXT NOT NULL);
CREATE TABLE answers (
    rater TEXT NOT NULL REFERENCES raters(name),
    image_id TEXT NOT NULL REFERENCES images(id),
    label TEXT NOT NULL CHECK (label IN ('real', 'fake')),
    quality INTEGER NOT NULL CHECK (quality BETWEEN 1 AND 5),
    answered_at TEXT NOT NULL,
    UNIQUE (rater, image_id)
);
"""


class AnswerError(ValueError):
    """A malformed answer (or rater name); the message names the field and what is valid."""


class AnswerConflict(AnswerError):
    """A different answer to an image the rater has already answered (answers are final)."""


@dataclass(frozen=True)
class StudyImage:
    """One image of the study as the web page may know it: no answer key."""

    id: str
    position: int  # 0-based place in the shown order


@dataclass(frozen=True)
class Answer:
    rater: str
    image_id: str
    label: str  # 'real' | 'fake'
    quality: int  # 1..5
    is_real: bool  # the answer key, joined in for the analysis


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def connect(path: str | Path, *, must_exist: bool = True) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit, see :func:`transaction`) with
    foreign keys on. ``must_exist``: FileNotFoundError naming the path when it is missing."""
    path = Path(path)
    if must_exist:
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: study file not found (make one with `fetalgan study create`)"
            )
    conn = sqlite3.connect(path, isolation_level=None, timeout=10.0, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 10000")
    if must_exist:
        _check_schema(conn, path)
    return conn


def _check_schema(conn: sqlite3.Connection, path: Path) -> None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as err:
        raise ValueError(f"{path}: not a fetalgan study file ({err})") from None
    if row is None or int(row[0]) != SCHEMA_VERSION:
        found = row[0] if row else "none"
        raise ValueError(
            f"{path}: study schema version {found}, this fetalgan reads {SCHEMA_VERSION}"
        )


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` on any error (then re-raised)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# --------------------------------------------------------------------------------------------
# Creating a study
# --------------------------------------------------------------------------------------------


def _png_bytes(image: np.ndarray) -> bytes:
    from fetalgan.images import write_png

    buffer = io.BytesIO()
    write_png(image, buffer)
    return buffer.getvalue()


def _study_resolution(fake_files: Sequence[Path], resolution: int | None) -> int:
    """``resolution`` if given, else the side of the synthetic images (all of them, chosen or
    not, must be square and of one size)."""
    from fetalgan.images import read_grey

    if resolution is not None:
        if resolution < 8:
            raise ValueError(f"--resolution: must be >= 8 pixels, got {resolution}")
        return resolution
    shapes = {read_grey(p).shape for p in fake_files}
    if len(shapes) != 1 or len({s for shape in shapes for s in shape}) != 1:
        raise ValueError(
            f"synthetic images have sizes {sorted(shapes)}; all must be the same square size, "
            "or give --resolution R to bring every image to R x R"
        )
    return shapes.pop()[0]


def study_files(directory: str | Path) -> list[Path]:
    """The images of ``directory`` that may enter a study: every image file except the sample
    grid ``grid.png`` that ``fetalgan generate`` writes beside its images and HC18's
    ``*_Annotation.png`` masks."""
    from fetalgan.images import list_images

    files = [
        p
        for p in list_images(directory)
        if p.name not in SKIPPED_NAMES and not p.name.endswith(SKIPPED_SUFFIXES)
    ]
    if not files:
        raise ValueError(f"{directory}: no images left once {', '.join(SKIPPED_NAMES)} and "
                         f"*{', *'.join(SKIPPED_SUFFIXES)} are left out")  # fmt: skip
    return files


def _split_evenly(total: int, parts: int) -> list[int]:
    """``total`` into ``parts`` counts differing by at most one (earlier parts get more)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def create_study(
    out: str | Path,
    real: str | Path | DataConfig,
    fake_dirs: Sequence[str | Path],
    *,
    n: int = 68,
    seed: int = 0,
    fake_runs: Sequence[str] | None = None,
    resolution: int | None = None,
    overwrite: bool = False,
    fake_fraction: float = 0.5,
) -> dict:
    """Write a study of ``n`` images (``round(n * fake_fraction)`` synthetic, drawn as evenly
    as possible from each of ``fake_dirs`` (see :func:`study_files`), the rest real from
    ``real``) to the SQLite file ``out``.

    ``real``: a :class:`~fetalgan.config.DataConfig` from :func:`fetalgan.data.real_data` (kind,
    planes filters and ``fit``; see :func:`fetalgan.data.list_real_files`), or a folder, read
    as ``real_data(folder)`` reads it (kind detected, ``fit`` crop). Every image, real or not,
    is brought to the shown side by that ``fit``.

    Choice and order are drawn from ``np.random.default_rng(seed)``; image ids are random
    (``secrets``). ``fake_runs``: the MLflow run id that made each fake directory (same length
    as ``fake_dirs``), kept per image for per-generator metrics. ``resolution``: side of the
    shown images (default: that of the synthetic images). Returns a summary dict.
    """
    from fetalgan.data import list_real_files, real_data
    from fetalgan.data.datasets import PLANES_FILTERS
    from fetalgan.images import fit_square, read_grey

    out = Path(out)
    if isinstance(real, (str, Path)):
        real = real_data(real)
    if not 0 < fake_fraction < 1:
        raise ValueError(f"--fake-fraction: must be in (0, 1), got {fake_fraction}")
    if n < 2:
        raise ValueError(f"-n: the study needs at least 2 images, got {n}")
    if (n * fake_fraction) % 1 == 0.5:
        raise ValueError(
            f"-n: {n} images x --fake-fraction {fake_fraction} = {n * fake_fraction:g} synthetic "
            "images, halfway between two counts; give an even number of images or another "
            "fraction"
        )
    n_fake = round(n * fake_fraction)
    n_real = n - n_fake
    if n_fake < 1 or n_real < 1:
        raise ValueError(
            f"--fake-fraction: {fake_fraction} of {n} images gives {n_fake} synthetic and "
            f"{n_real} real; the study needs at least one of each"
        )
    if not fake_dirs:
        raise ValueError("--fake: give at least one folder of synthetic images")
    fake_runs = list(fake_runs or [])
    if fake_runs and len(fake_runs) != len(fake_dirs):
        raise ValueError(
            f"--fake-run: give one run id per --fake folder ({len(fake_dirs)} folders, "
            f"{len(fake_runs)} run ids)"
        )
    if out.exists() and not overwrite:
        raise ValueError(f"{out}: already exists; a study file is never overwritten silently")

    rng = np.random.default_rng(seed)
    real_files = list_real_files(real)
    if len(real_files) < n_real:
        raise ValueError(
            f"--real {real.root}: {len(real_files)} {real.kind} images, the study needs "
            f"{n_real} real ones"
        )
    chosen: list[tuple[bool, Path, str | None]] = [
        (True, real_files[i], None) for i in sorted(rng.choice(len(real_files), n_real, False))
    ]
    fake_lists = [study_files(d) for d in fake_dirs]
    for directory, files, count in zip(
        fake_dirs, fake_lists, _split_evenly(n_fake, len(fake_dirs)), strict=True
    ):
        if len(files) < count:
            raise ValueError(f"{directory}: {len(files)} images, the study needs {count} from it")
    for k, (files, count) in enumerate(
        zip(fake_lists, _split_evenly(n_fake, len(fake_dirs)), strict=True)
    ):
        run = fake_runs[k] if fake_runs else None
        chosen += [(False, files[i], run) for i in sorted(rng.choice(len(files), count, False))]
    order = rng.permutation(len(chosen))

    side = _study_resolution([f for files in fake_lists for f in files], resolution)
    rows = []
    for position, index in enumerate(order):
        is_real, path, run = chosen[index]
        image = fit_square(read_grey(path), side, real.fit)
        source = f"{'real' if is_real else 'fake'}:{Path(path).resolve()}"
        rows.append((secrets.token_hex(8), position, int(is_real), source, run, _png_bytes(image)))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    # Owner-only from the start: the file holds the answer key and the session key (SQLite
    # takes the empty file as a new database, and gives its journals the file's mode).
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    conn = connect(tmp, must_exist=False)
    try:
        conn.executescript("BEGIN;" + SCHEMA + "COMMIT;")
        meta = {
            "schema_version": str(SCHEMA_VERSION),
            "created_at": _now(),
            "seed": str(seed),
            "n": str(n),
            "fake_fraction": str(fake_fraction),
            "resolution": str(side),
            "real_dir": str(Path(real.root).resolve()),
            "real_kind": real.kind,
            "real_filters": json.dumps({k: getattr(real, k) for k in PLANES_FILTERS}),
            "fit": real.fit,
            "fake_dirs": json.dumps([str(Path(d).resolve()) for d in fake_dirs]),
            "fake_runs": json.dumps(fake_runs),
            "secret_key": secrets.token_hex(32),  # signs the web app's session cookies
        }
        with transaction(conn):
            conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            conn.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?)", rows)
    finally:
        conn.close()
    tmp.replace(out)
    return {
        "path": str(out),
        "n": n,
        "real": n_real,
        "fake": n_fake,
        "resolution": side,
        "seed": seed,
    }


# --------------------------------------------------------------------------------------------
# Reading and answering
# --------------------------------------------------------------------------------------------


def read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def study_images(conn: sqlite3.Connection) -> list[StudyImage]:
    """All images in the shown order (ids and positions only)."""
    rows = conn.execute("SELECT id, position FROM images ORDER BY position").fetchall()
    return [StudyImage(*row) for row in rows]


def image_png(conn: sqlite3.Connection, image_id: str) -> bytes | None:
    row = conn.execute("SELECT png FROM images WHERE id = ?", (image_id,)).fetchone()
    return None if row is None else bytes(row[0])


def normalise_name(name: str | None) -> str:
    """A rater name, stripped, with inner whitespace runs made single spaces; ValueError when
    empty, too long or holding control characters."""
    cleaned = " ".join((name or "").split())
    if not cleaned:
        raise AnswerError("name: enter your name (it lets you resume later)")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise AnswerError(f"name: at most {MAX_NAME_LENGTH} characters, got {len(cleaned)}")
    if any(not ch.isprintable() for ch in cleaned):
        raise AnswerError("name: control characters are not allowed")
    return cleaned


def add_rater(conn: sqlite3.Connection, name: str) -> str:
    """Register ``name`` (normalised) if new; returns the stored name. Idempotent."""
    name = normalise_name(name)
    with transaction(conn):
        conn.execute(
            "INSERT OR IGNORE INTO raters (name, created_at) VALUES (?, ?)", (name, _now())
        )
    return name


def answered_ids(conn: sqlite3.Connection, rater: str) -> set[str]:
    rows = conn.execute("SELECT image_id FROM answers WHERE rater = ?", (rater,)).fetchall()
    return {row[0] for row in rows}


def next_image(conn: sqlite3.Connection, rater: str) -> StudyImage | None:
    """The first image in the shown order that ``rater`` has not answered; None when done."""
    row = conn.execute(
        "SELECT id, position FROM images WHERE id NOT IN "
        "(SELECT image_id FROM answers WHERE rater = ?) ORDER BY position LIMIT 1",
        (rater,),
    ).fetchone()
    return None if row is None else StudyImage(*row)


def parse_answer(label: str | None, quality: str | int | None) -> tuple[str, int]:
    """Validate a form's ``label`` and ``quality``; AnswerError naming the field otherwise."""
    if label is None or label == "":
        raise AnswerError("label: missing; answer 'real' or 'fake'")
    if label not in LABELS:
        raise AnswerError(f"label: {label!r} is not one of 'real', 'fake'")
    low, high = QUALITY_RANGE
    if quality is None or quality == "":
        raise AnswerError(f"quality: missing; rate the image {low} (poor) to {high} (high)")
    try:
        value = int(str(quality).strip())
    except ValueError:
        raise AnswerError(f"quality: {quality!r} is not a whole number {low}..{high}") from None
    if not low <= value <= high or str(quality).strip() != str(value):
        raise AnswerError(f"quality: {quality!r} is outside {low}..{high}")
    return label, value


def record_answer(
    conn: sqlite3.Connection, rater: str, image_id: str, label: str, quality: int
) -> bool:
    """Store one answer in a transaction. Returns True when stored, False when the same answer
    was already there (a resubmitted form). AnswerError for an unknown rater or image, a
    malformed value, or a different answer to an image the rater has already answered."""
    label, quality = parse_answer(label, quality)
    with transaction(conn):
        if conn.execute("SELECT 1 FROM raters WHERE name = ?", (rater,)).fetchone() is None:
            raise AnswerError(f"rater {rater!r}: unknown; enter your name first")
        if conn.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
            raise AnswerError(f"image_id {image_id!r}: no such image in this study")
        previous = conn.execute(
            "SELECT label, quality FROM answers WHERE rater = ? AND image_id = ?",
            (rater, image_id),
        ).fetchone()
        if previous is not None:
            if tuple(previous) == (label, quality):
                return False
            raise AnswerConflict(
                f"image {image_id}: already answered ({previous[0]}, quality {previous[1]}); "
                "answers cannot be changed"
            )
        conn.execute(
            "INSERT INTO answers (rater, image_id, label, quality, answered_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (rater, image_id, label, quality, _now()),
        )
    return True


def progress(conn: sqlite3.Connection, rater: str) -> tuple[int, int]:
    """(answered, total) for ``rater``."""
    answered = conn.execute("SELECT COUNT(*) FROM answers WHERE rater = ?", (rater,)).fetchone()
    total = conn.execute("SELECT COUNT(*) FROM images").fetchone()
    return int(answered[0]), int(total[0])


# --------------------------------------------------------------------------------------------
# For the analysis only: the answer key
# --------------------------------------------------------------------------------------------


def all_answers(conn: sqlite3.Connection) -> list[Answer]:
    """Every answer with the image's answer key, ordered by rater then shown position."""
    rows = conn.execute(
        "SELECT a.rater, a.image_id, a.label, a.quality, i.is_real FROM answers a "
        "JOIN images i ON i.id = a.image_id ORDER BY a.rater, i.position"
    ).fetchall()
    return [Answer(r, i, label, int(q), bool(real)) for r, i, label, q, real in rows]


def answer_key(conn: sqlite3.Connection) -> dict[str, dict]:
    """image id -> {is_real, source, source_run, position}."""
    rows = conn.execute(
        "SELECT id, is_real, source, source_run, position FROM images ORDER BY position"
    ).fetchall()
    return {
        i: {"is_real": bool(real), "source": src, "source_run": run, "position": pos}
        for i, real, src, run, pos in rows
    }


def decode_image(png: bytes) -> np.ndarray:
    """PNG bytes from the study file -> ``(H, W) uint8``."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


def images_array(conn: sqlite3.Connection, ids: Sequence[str]) -> np.ndarray:
    """The study images ``ids`` as ``(N, H, W) uint8``, in the given order."""
    return np.stack([decode_image(image_png(conn, i)) for i in ids])
