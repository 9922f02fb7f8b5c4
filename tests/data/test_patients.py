"""Patient-grouped splits: who each image shows (planes Patient_num, HC18's subject number, a
folder's manifest.csv), ``patients: [lo, hi]`` on every set, and the refusal of two sets that
share a patient."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from fetalgan.config import ConfigError, DataConfig, load_sweep
from fetalgan.data.datasets import (
    file_patients,
    list_files,
    load_training_images,
    patient_order,
)
from fetalgan.images import write_png


def _png(path: Path, value: int, shape=(30, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(np.full(shape, value, np.uint8), path)


def hc18_with_repeat_subjects(root: Path, n: int = 20) -> Path:
    """``training_set``: subjects 000..n-1, every third with a second and third image
    (``NNN_2HC.png``, ``NNN_3HC.png``), masks beside them; ``test_set`` numbers restart at 000."""
    train = root / "training_set"
    for i in range(n):
        names = [f"{i:03d}_HC"] + ([f"{i:03d}_2HC", f"{i:03d}_3HC"] if i % 3 == 0 else [])
        for name in names:
            _png(train / f"{name}.png", 10 + i)
            _png(train / f"{name}_Annotation.png", 255)
    for i in range(6):
        _png(root / "test_set" / f"{i:03d}_HC.png", 100 + i)
    return root


def test_hc18_subjects_group_their_images_and_the_test_set_is_other_subjects(tmp_path):
    root = hc18_with_repeat_subjects(tmp_path / "hc18")
    data = DataConfig(kind="hc18", root=str(root))
    files = list_files(data)
    patients = file_patients(data, files)
    assert len(files) == 20 + 2 * 7 and len(set(patients.values())) == 20
    assert (
        patients[root / "training_set" / "003_2HC.png"]
        == patients[root / "training_set" / "003_HC.png"]
    )
    test = DataConfig(kind="hc18", root=str(root / "test_set"))
    test_patients = set(file_patients(test, list_files(test)).values())
    assert not test_patients & set(patients.values())  # 000 of test_set is another subject


@pytest.mark.parametrize("cuts", [[0.0, 0.5, 1.0], [0.0, 0.7, 0.85, 1.0], [0.1, 0.35, 0.9]])
def test_patient_ranges_are_disjoint_whole_patients_and_cover_the_cut(tmp_path, cuts):
    root = hc18_with_repeat_subjects(tmp_path / "hc18")
    every = DataConfig(kind="hc18", root=str(root))
    all_files = list_files(every)
    patients = file_patients(every, all_files)
    parts = [
        list_files(DataConfig(kind="hc18", root=str(root), patients=[lo, hi]))
        for lo, hi in zip(cuts, cuts[1:], strict=False)
    ]
    seen: set[str] = set()
    for part in parts:
        part_patients = {patients[p] for p in part}
        assert not part_patients & seen  # no patient in two parts
        seen |= part_patients
        # every image of a chosen patient comes along
        assert set(part) == {p for p in all_files if patients[p] in part_patients}
    order = patient_order(list(patients.values()))
    expected = order[int(cuts[0] * 20) : int(cuts[-1] * 20)]
    assert seen == set(expected)


def test_planes_patients_and_a_folder_manifest(tmp_path):
    planes = tmp_path / "planes"
    rows = ["Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train "]
    for i in range(12):
        rows.append(f"P{i:02d};{i // 3};Fetal brain;Trans-cerebellum;Op1;Voluson E6;1")
        _png(planes / "Images" / f"P{i:02d}.png", i)
    (planes / "FETAL_PLANES_DB_data.csv").write_text("\n".join(rows) + "\n")
    data = DataConfig(kind="planes", root=str(planes), patients=[0.0, 0.5])
    chosen = list_files(data)
    assert len(chosen) == 6  # two of the four patients, three images each
    assert len({file_patients(data, chosen)[p] for p in chosen}) == 2

    folder = tmp_path / "imported"
    table = [("a.png", "h1"), ("b.png", "h1"), ("c.png", "h2"), ("d.png", "h3")]
    for name, _ in table:
        _png(folder / name, 50)
    with open(folder / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "patient", "frame"])
        writer.writerows((name, patient, 0) for name, patient in table)
    whole = DataConfig(kind="folder", root=str(folder))
    assert file_patients(whole, list_files(whole))[folder / "b.png"] == "h1"
    halves = [
        list_files(DataConfig(kind="folder", root=str(folder), patients=r))
        for r in ([0.0, 0.5], [0.5, 1.0])
    ]
    assert sorted(p.name for h in halves for p in h) == ["a.png", "b.png", "c.png", "d.png"]
    assert any({"a.png", "b.png"} <= {p.name for p in h} for h in halves)  # h1 together

    _png(folder / "e.png", 50)  # not in the manifest
    with pytest.raises(ValueError, match=r"manifest.csv: no patient for 1 .*e\.png"):
        list_files(DataConfig(kind="folder", root=str(folder), patients=[0.0, 0.5]))
    plain = tmp_path / "plain"
    _png(plain / "x.png", 1)
    with pytest.raises(ValueError, match="does not say who its images show; patients are known"):
        list_files(DataConfig(kind="folder", root=str(plain), patients=[0.0, 0.5]))


def test_training_on_a_patient_range_decodes_only_those_images(tmp_path):
    import dataclasses

    root = hc18_with_repeat_subjects(tmp_path / "hc18")
    data = DataConfig(kind="hc18", root=str(root), patients=[0.0, 0.5], cache_dir=str(tmp_path))
    images = load_training_images(data, 32, seed=0, progress=False)
    assert len(images.names) == len(list_files(data)) == images.images.shape[0]
    rest = dataclasses.replace(data, patients=[0.5, 1.0])
    other = load_training_images(rest, 32, seed=0, progress=False)
    assert not set(images.names) & set(other.names) and images.key != other.key
    assert len(images.names) + len(other.names) == 34


def _sweep(tmp_path: Path, root: Path, **sets) -> Path:
    spec = {
        "name": "p",
        "metric": "lbpv_l1",
        "base": {
            "resolution": 32,
            "data": {"kind": "hc18", "root": str(root), **sets.get("data", {})},
            "eval_reference": sets.get("eval_reference", {}),
            "eval_metrics": ["lbpv"],
        },
        "select": {"reference": sets["reference"], "test_reference": sets["test_reference"]},
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_subject_in_two_sets_is_refused_and_patient_ranges_pass(tmp_path):
    from fetalgan.data.splits import check_real_sets

    root = hc18_with_repeat_subjects(tmp_path / "hc18")
    # listed order: 000_2HC, 000_3HC, 000_HC, 001_HC, ...: a cut after 2 images splits 000
    path = _sweep(
        tmp_path,
        root,
        data={"order": "listed", "skip": 10},
        reference={"order": "listed", "size": 2},
        test_reference={"order": "listed", "skip": 2, "size": 3},
    )
    with pytest.raises(ConfigError, match="share 1 patient.*patient training_set/000"):
        check_real_sets(load_sweep(path))
    path = _sweep(
        tmp_path,
        root,
        data={"patients": [0.0, 0.8]},
        eval_reference={"size": 5},
        reference={"patients": [0.8, 0.9]},
        test_reference={"patients": [0.9, 1.0]},
    )
    training, evaluation, selection, test = check_real_sets(load_sweep(path))
    assert len(training.names) > 16 and len(selection.names) >= 2 and len(test.names) >= 2
    assert not set(training.patients.values()) & set(test.patients.values())


@pytest.mark.parametrize(
    "value, message",
    [
        ("[0.5, 0.5]", "must be \\[lo, hi\\]"),
        ("[0.2]", "must be \\[lo, hi\\]"),
        ("[-0.1, 0.5]", "must be \\[lo, hi\\]"),
        ("[0.0, 1.5]", "must be \\[lo, hi\\]"),
    ],
)
def test_patients_key_is_checked(tmp_path, value, message):
    path = _sweep(tmp_path, tmp_path, reference={}, test_reference={})
    with pytest.raises(ConfigError, match=f"base.data.patients: {message}"):
        load_sweep(path, [f"base.data.patients={value}"])


def test_the_phantom_has_no_patients(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump({"name": "p", "base": {"data": {"kind": "phantom", "patients": [0.0, 0.5]}}})
    )
    with pytest.raises(ConfigError, match="the phantom has no patients"):
        load_sweep(path)
