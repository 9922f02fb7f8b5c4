"""Fabricated real datasets in the layouts `evaluate`, `study create` and training read, small
enough for fast tests.

- ``write_hc18``: ``ROOT/training_set/NNN_HC.png`` landscape images of differing sizes (as HC18's
  vary around 800x540), a ``NNN_HC_Annotation.png`` mask beside each (all white, ``MASK``), and
  a ``ROOT/test_set`` image that is not part of the training set.
- ``write_planes``: ``ROOT/FETAL_PLANES_DB_data.csv`` (``;``-separated, the last header
  ``Train `` with its trailing space, CRLF line ends) and ``ROOT/Images/<Image_name>.png``.
  Rows of ``KEPT`` (Fetal brain, Trans-cerebellum) are grey; every other row's image is white
  (``MASK``), so an image that should have been filtered out shows as white pixels.

Real images are never brighter than ``BRIGHTEST``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fetalgan.images import write_png

MASK = 255  # the value of every pixel of a mask or a filtered-out image
BRIGHTEST = 160  # no pixel of a real image that should be used is brighter
HC18_SIZES = {  # name -> (H, W): sizes differ, as HC18's do
    "000_HC": (27, 40),
    "001_HC": (28, 39),
    "002_2HC": (26, 41),
    "003_HC": (30, 40),
}


def scan(h: int, w: int, value: int) -> np.ndarray:
    """A landscape grey image: a horizontal ramp from ``value`` to ``value + 40``."""
    ramp = np.linspace(value, value + 40, w)[None, :].repeat(h, 0)
    return np.clip(ramp, 0, BRIGHTEST).astype(np.uint8)


def write_hc18(root: Path) -> Path:
    train = root / "training_set"
    train.mkdir(parents=True)
    for i, (name, (h, w)) in enumerate(HC18_SIZES.items()):
        write_png(scan(h, w, 20 + 25 * i), train / f"{name}.png")
        write_png(np.full((h, w), MASK, np.uint8), train / f"{name}_Annotation.png")
    (root / "test_set").mkdir()
    write_png(scan(27, 40, 7), root / "test_set" / "900_HC.png")
    return root


PLANES_HEADER = "Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train "
PLANES_ROWS = [  # Image_name, Patient_num, Plane, Brain_plane, Operator, US_Machine, Train
    ("Patient00001_Plane1_1_of_2", "1", "Other", "Not A Brain", "Op. 1", "Voluson E6", "1"),
    ("Patient00001_Plane3_1_of_3", "1", "Fetal brain", "Trans-thalamic", "Op. 1", "Voluson E6",
     "1"),
    ("Patient00002_Plane3_1_of_3", "2", "Fetal brain", "Trans-cerebellum", "Op. 2", "Voluson E6",
     "1"),
    ("Patient00002_Plane3_2_of_3", "2", "Fetal brain", "Trans-cerebellum", "Op. 2", "Aloka", "0"),
    ("Patient00003_Plane3_1_of_1", "3", "Fetal brain", "Trans-cerebellum", "Other", "Voluson S10",
     "0"),
    ("Patient00004_Plane2_1_of_1", "4", "Fetal abdomen", "Not A Brain", "Op. 3", "Aloka", "1"),
]  # fmt: skip
KEPT = {"plane": "Fetal brain", "brain_plane": "Trans-cerebellum"}  # 3 rows, 1 of them Train 1


def write_planes(root: Path) -> Path:
    lines = [PLANES_HEADER] + [";".join(row) for row in PLANES_ROWS]
    (root / "Images").mkdir(parents=True)
    (root / "FETAL_PLANES_DB_data.csv").write_text("\r\n".join(lines) + "\r\n")
    for i, row in enumerate(PLANES_ROWS):
        h, w = 24 + 2 * i, 36 + 3 * i  # sizes differ
        kept = row[2] == KEPT["plane"] and row[3] == KEPT["brain_plane"]
        image = scan(h, w, 30 + 20 * i) if kept else np.full((h, w), MASK, np.uint8)
        write_png(image, root / "Images" / f"{row[0]}.png")
    return root


def write_fakes(folder: Path, n: int = 6, size: int = 16) -> Path:
    """``n`` square grey fakes of ``size`` px, as a generator writes them."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        write_png(rng.integers(0, 150, (size, size)).astype(np.uint8), folder / f"img_{i:05d}.png")
    return folder
