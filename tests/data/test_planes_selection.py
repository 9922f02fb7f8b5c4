"""FETAL_PLANES_DB selection as the fetal brain study's code does it: Trans-cerebellum images of
one machine, the first N matching rows of the CSV for training, the rows after them held out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fetalgan.config import TrainConfig, with_overrides
from fetalgan.data import list_planes, load_reference_images, load_training_images
from fetalgan.images import write_png

HEADER = "Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train "
# (image name, plane, brain plane, machine, train flag), in the CSV's row order. Within patient
# 1, "_10_of_12" sorts before "_2_of_12" by name but comes after it in the CSV.
ROWS = [
    ("Patient00001_Plane3_1_of_12", "Fetal brain", "Trans-cerebellum", "Voluson E6", "1"),
    ("Patient00001_Plane3_2_of_12", "Fetal brain", "Trans-cerebellum", "Voluson E6", "1"),
    ("Patient00001_Plane3_3_of_12", "Fetal brain", "Trans-thalamic", "Voluson E6", "1"),
    ("Patient00001_Plane3_10_of_12", "Fetal brain", "Trans-cerebellum", "Voluson E6", "0"),
    ("Patient00002_Plane3_1_of_3", "Fetal brain", "Trans-cerebellum", "Aloka", "1"),
    ("Patient00002_Plane3_2_of_3", "Fetal brain", "Trans-cerebellum", "Voluson E6", "0"),
    ("Patient00003_Plane2_1_of_1", "Fetal abdomen", "Not A Brain", "Voluson E6", "1"),
    ("Patient00004_Plane3_1_of_2", "Fetal brain", "Trans-cerebellum", "Voluson S10", "1"),
    ("Patient00004_Plane3_2_of_2", "Fetal brain", "Trans-cerebellum", "Voluson E6", "1"),
]
# Trans-cerebellum + Voluson E6, in CSV order: rows 0, 1, 3, 5, 8
WANTED = [ROWS[i][0] for i in (0, 1, 3, 5, 8)]


@pytest.fixture
def planes_root(tmp_path) -> Path:
    root = tmp_path / "planes"
    (root / "Images").mkdir(parents=True)
    lines = [HEADER] + [f"{name};{i};{p};{b};Op. 1;{m};{t}" for i, (name, p, b, m, t) in
                        enumerate(ROWS)]  # fmt: skip
    (root / "FETAL_PLANES_DB_data.csv").write_text("\r\n".join(lines) + "\r\n")
    for i, (name, *_) in enumerate(ROWS):  # each image a distinct flat grey, 20 * row
        write_png(np.full((40, 48), 20 * i, np.uint8), root / "Images" / f"{name}.png")
    return root


def test_plane_and_machine_filters_select_the_right_rows(planes_root):
    names = [p.stem for p in list_planes(planes_root, plane="Fetal brain",
                                         brain_plane="Trans-cerebellum", machine="Voluson E6")]  # fmt: skip
    assert names == sorted(WANTED)  # by name by default
    in_csv_order = list_planes(
        planes_root, brain_plane="Trans-cerebellum", machine="Voluson E6", csv_order=True
    )
    assert [p.stem for p in in_csv_order] == WANTED
    train = list_planes(planes_root, brain_plane="Trans-cerebellum", machine="Voluson E6",
                        train_split=True)  # fmt: skip
    assert sorted(p.stem for p in train) == sorted(ROWS[i][0] for i in (0, 1, 8))


def _study_config(root: Path, tmp_path: Path) -> TrainConfig:
    return with_overrides(
        TrainConfig(),
        {"data.kind": "planes", "data.root": str(root), "data.plane": "Fetal brain",
         "data.brain_plane": "Trans-cerebellum", "data.machine": "Voluson E6",
         "data.order": "listed", "data.size": 3, "data.cache_dir": str(tmp_path / "cache"),
         "eval_reference.skip": 3, "resolution": 32},
    )  # fmt: skip


def _rows_of(images) -> list[int]:
    """Which ROWS each decoded image is (its flat grey / 20)."""
    return [int(round(float(image.float().mean()) / 20)) for image in images]


def test_first_rows_train_and_the_rest_are_the_reference(planes_root, tmp_path):
    cfg = _study_config(planes_root, tmp_path)
    training = load_training_images(cfg.data, 32, seed=cfg.seed, progress=False)
    reference = load_reference_images(cfg, 32)
    assert training.names == [f"{n}.png" for n in WANTED[:3]]
    assert _rows_of(training.images) == [0, 1, 3]  # CSV order, not name order (10 before 2)
    assert reference.names == [f"{n}.png" for n in WANTED[3:]]
    assert _rows_of(reference.images) == [5, 8]
    assert training.key != reference.key
    # a seeded subset of the same rows draws from all five, and is a different cache entry
    seeded = with_overrides(cfg, {"data.order": "seeded"})
    drawn = load_training_images(seeded.data, 32, seed=0, progress=False)
    assert len(drawn.names) == 3 and set(drawn.names) <= {f"{n}.png" for n in WANTED}
    assert drawn.key != training.key


def test_a_cap_larger_than_what_is_left_is_an_error(planes_root, tmp_path):
    cfg = with_overrides(_study_config(planes_root, tmp_path), {"eval_reference.size": 3})
    with pytest.raises(
        ValueError, match=r"eval_reference\.size: 3 is larger than the dataset \(2 images"
    ):
        load_reference_images(cfg, 32)
