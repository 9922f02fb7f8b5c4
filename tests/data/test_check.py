"""`fetalgan data check` on small fabricated trees in the real layouts: what it reads, what it
counts, what it calls an error (a sweep would stop) or a warning, its JSON and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fetalgan.cli import main
from fetalgan.data.check import check_root, check_sweep, fit_effect, format_report
from fetalgan.images import write_png

PLANES_HEADER = "Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train "
PLANES_ROWS = [  # Image_name, Patient_num, Plane, Brain_plane, Operator, US_Machine, Train
    ("Patient00001_Plane3_1_of_2", "1", "Fetal brain", "Trans-cerebellum", "Op. 1", "Aloka", "1"),
    ("Patient00001_Plane3_2_of_2", "1", "Fetal brain", "Trans-thalamic", "Op. 1", "Aloka", "1"),
    ("Patient00002_Plane3_1_of_1", "2", "Fetal brain", "Trans-cerebellum", "Op. 2", "Aloka", "0"),
    ("Patient00003_Plane2_1_of_1", "3", "Fetal abdomen", "Not A Brain", "Op. 3", "Aloka", "1"),
    ("Patient00004_Plane1_1_of_1", "4", "Other", "Not A Brain", "Op. 3", "Aloka", "0"),
]  # fmt: skip
MISSING_ROW = PLANES_ROWS[3][0]  # the fetal abdomen row has no image


def scan(h: int, w: int, seed: int) -> np.ndarray:
    """A distinct grey image: a ramp plus seeded noise (no two seeds give the same pixels)."""
    ramp = np.linspace(20, 120, w)[None, :].repeat(h, 0)
    noise = np.random.default_rng(seed).integers(0, 40, (h, w))
    return (ramp + noise).astype(np.uint8)


@pytest.fixture
def hc18(tmp_path) -> Path:
    """``ROOT/training_set``: HC18's 800x540 and 744x562 scaled down to 80x54 and 74x56; each
    image has its mask but 003_HC.png."""
    train = tmp_path / "hc18" / "training_set"
    train.mkdir(parents=True)
    for i, (name, (h, w)) in enumerate(
        {
            "000_HC": (54, 80),
            "001_HC": (54, 80),
            "001_2HC": (54, 80),
            "002_HC": (56, 74),
            "003_HC": (56, 74),
        }.items()  # fmt: skip
    ):
        write_png(scan(h, w, i), train / f"{name}.png")
        if name != "003_HC":
            write_png(np.full((h, w), 255, np.uint8), train / f"{name}_Annotation.png")
    return tmp_path / "hc18"


@pytest.fixture
def planes(tmp_path) -> Path:
    """FETAL_PLANES_DB: the real CSV header (``Train `` with its space, CRLF), ``Images/``; the
    row ``MISSING_ROW`` has no image."""
    root = tmp_path / "planes"
    (root / "Images").mkdir(parents=True)
    lines = [PLANES_HEADER] + [";".join(row) for row in PLANES_ROWS]
    (root / "FETAL_PLANES_DB_data.csv").write_text("\r\n".join(lines) + "\r\n")
    for i, row in enumerate(PLANES_ROWS):
        if row[0] != MISSING_ROW:
            write_png(scan(30, 40, 10 + i), root / "Images" / f"{row[0]}.png")
    return root


def folder_of(tmp_path: Path, n: int = 3) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(n):
        write_png(scan(20, 30, 100 + i), folder / f"img_{i}.png")
    return folder


# --------------------------------------------------------------------------------------------
# HC18
# --------------------------------------------------------------------------------------------


def test_hc18_reads_the_images_not_the_masks_and_counts_them(hc18):
    report = check_root(hc18)
    (check,) = report.datasets
    assert check.kind == "hc18" and check.why.startswith("detected: *_HC.png")
    assert [p.name for p in check.paths] == [
        "000_HC.png", "001_2HC.png", "001_HC.png", "002_HC.png", "003_HC.png"
    ]  # fmt: skip
    assert check.counts["masks"] == 4 and check.counts["images_without_mask"] == 1
    assert check.sizes == {"80x54": 3, "74x56": 2}
    assert check.modes == {"L": 5} and check.bit_depths == {"8": 5}
    assert check.duplicates == [] and check.errors == []
    unmasked, count = check.warnings
    assert "1 of 5 images without their *_Annotation.png mask" in unmasked
    assert "training_set/003_HC.png" in unmasked
    assert "HC18's training set has 999" in count  # a partial download
    assert report.exit_code == 0  # missing masks and a small set do not stop a sweep


def test_hc18_test_set_without_masks_is_expected(hc18):
    test_set = hc18 / "test_set"
    test_set.mkdir()
    for i in range(3):
        write_png(scan(54, 80, 50 + i), test_set / f"{i:03d}_HC.png")
    (check,) = check_root(test_set, kind="hc18").datasets
    assert check.why == "--kind hc18"
    assert len(check.paths) == 3 and check.counts["masks"] == 0
    (count,) = check.warnings  # and no warning about masks: HC18's test set has none
    assert "HC18's test set has 335" in count


def test_resolution_says_what_crop_keeps_and_that_the_studies_squashed(hc18):
    (check,) = check_root(hc18, resolution=64).datasets
    assert check.fit_lines == [
        "crop to 64 px:",
        "80x54: keeps the middle 54 of 80 columns (67.5 %)",
        "74x56: keeps the middle 56 of 74 columns (75.7 %)",
    ]
    assert any("seed studies used squash" in n for n in check.notes)
    assert any("5 images under 64 px" in n for n in check.notes)  # enlarged
    (squashed,) = check_root(hc18, resolution=32, fit="squash").datasets
    assert squashed.fit_lines[1] == (
        "80x54: all of it, its height stretched 1.48x relative to its width"
    )
    assert not any("seed studies" in n for n in squashed.notes)
    assert not any("under 32 px" in n for n in squashed.notes)


def test_fit_effect_of_hc18_sized_scans():
    assert fit_effect(800, 540, "crop") == "keeps the middle 540 of 800 columns (67.5 %)"
    assert fit_effect(540, 800, "crop") == "keeps the middle 540 of 800 rows (67.5 %)"
    assert fit_effect(800, 540, "pad") == "all of it and 260 rows of black (32.5 %)"
    assert "1.48x" in fit_effect(800, 540, "squash")
    assert fit_effect(64, 64, "crop").startswith("square")


def test_dataset_json_counts_are_compared(hc18):
    """``dataset.json`` as ``fetalgan data fetch`` writes it: its counts against what is found."""
    record = {
        "dataset": "HC18",
        "kind": "hc18",
        "source": {"zenodo_record": 1327317, "doi": "10.5281/zenodo.1327317"},
        "files": [{"name": "training_set.zip", "size": 132926838, "md5": "00eb8198b9a505b2"}],
        "fetched": "2025-01-02T03:04:05+00:00",
        "counts": {"training_images": 999, "training_masks": 4, "test_images": 335},
    }
    (hc18 / "dataset.json").write_text(json.dumps(record))
    report = check_root(hc18)
    (check,) = report.datasets
    assert check.dataset_json == record
    (mismatch,) = [w for w in check.warnings if "dataset.json" in w]  # the masks agree
    assert "records 999 training images (training_set/*_HC.png), found 5" in mismatch
    line = next(x for x in format_report(report).splitlines() if "dataset.json " in x)
    assert line.split(None, 1)[1] == (
        "HC18, Zenodo record 1327317, fetched 2025-01-02T03:04:05+00:00: training_set.zip "
        "(md5 00eb8198); training_masks as recorded; training_images differ"
    )
    # HC18's test set given as the root: the record above it, its test count
    test_set = hc18 / "test_set"
    test_set.mkdir()
    write_png(scan(54, 80, 70), test_set / "000_HC.png")
    (test,) = check_root(test_set, kind="hc18").datasets
    assert test.dataset_json_counts == "test_images differ"


# --------------------------------------------------------------------------------------------
# FETAL_PLANES_DB
# --------------------------------------------------------------------------------------------


def test_planes_row_without_its_image_is_an_error(planes):
    report = check_root(planes)
    (check,) = report.datasets
    assert check.kind == "planes"
    assert check.counts["csv_rows"] == 5 and check.counts["images_in_folder"] == 4
    assert check.counts["planes"] == {"Fetal brain": 3, "Fetal abdomen": 1, "Other": 1}
    assert check.counts["patients"] == 4
    assert check.counts["train_split"] == {"0": 2, "1": 3}
    (error,) = check.errors
    assert f"{MISSING_ROW}.png" in error and "1 of 5 rows" in error
    assert len(check.paths) == 4  # the present ones are still decoded and described
    assert check.sizes == {"40x30": 4}
    assert report.exit_code == 1


def test_planes_filters_leave_the_missing_row_out(planes):
    report = check_root(planes, plane="Fetal brain", brain_plane="Trans-cerebellum")
    (check,) = report.datasets
    assert [p.name for p in check.paths] == [
        f"{PLANES_ROWS[0][0]}.png", f"{PLANES_ROWS[2][0]}.png"
    ]  # fmt: skip
    assert check.counts["rows_matching_filters"] == 2
    assert check.counts["patients_matching_filters"] == 2
    assert report.exit_code == 0  # the missing image is not one a sweep reads
    (train_rows,) = check_root(planes, brain_plane="Trans-cerebellum", train_split=True).datasets
    assert [p.name for p in train_rows.paths] == [f"{PLANES_ROWS[0][0]}.png"]


def test_planes_malformed_csv_is_an_error(planes):
    (planes / "FETAL_PLANES_DB_data.csv").write_text("Image_name,Plane\r\nx,Other\r\n")
    report = check_root(planes)
    (error,) = report.datasets[0].errors
    assert "missing column(s)" in error and "malformed CSV" in error
    assert report.exit_code == 1


# --------------------------------------------------------------------------------------------
# Image contents
# --------------------------------------------------------------------------------------------


def test_truncated_png_is_an_error_naming_the_file(tmp_path, capsys):
    folder = folder_of(tmp_path)
    whole = (folder / "img_1.png").read_bytes()
    (folder / "img_1.png").write_bytes(whole[: len(whole) // 2])
    assert main(["data", "check", str(folder)]) == 1
    out = capsys.readouterr().out
    (error,) = [line for line in out.splitlines() if line.lstrip().startswith("error:")]
    assert str(folder / "img_1.png") in error and "data.skip_corrupt" in error
    assert "1 error, 0 warnings: a sweep would stop" in out


def test_duplicates_are_reported(tmp_path):
    folder = folder_of(tmp_path)
    write_png(scan(20, 30, 100), folder / "copy_of_0.png")  # the pixels of img_0.png
    report = check_root(folder)
    (check,) = report.datasets
    assert check.duplicates == [["copy_of_0.png", "img_0.png"]]
    (warning,) = check.warnings
    assert "pixel-identical" in warning and "copy_of_0.png = img_0.png" in warning
    assert report.exit_code == 0


def test_sixteen_bit_png_is_reported_not_an_error(tmp_path):
    folder = folder_of(tmp_path, n=1)
    wide = scan(20, 30, 7).astype(np.uint16) * 257  # the full 16-bit range
    Image.fromarray(wide).save(folder / "wide.png")
    report = check_root(folder)
    (check,) = report.datasets
    assert check.modes == {"L": 1, "I;16": 1} and check.bit_depths == {"8": 1, "16": 1}
    assert check.errors == [] and check.warnings == []
    assert any("1 16-bit image (wide.png)" in n for n in check.notes)
    dark = scan(20, 30, 8).astype(np.uint16) * 16  # 12-bit values in a 16-bit file
    Image.fromarray(dark).save(folder / "dark.png")
    (darker,) = check_root(folder).datasets
    assert darker.errors == []
    assert any("no value above 4096" in w and "dark.png" in w for w in darker.warnings)


def test_constant_image_is_a_warning(tmp_path):
    folder = folder_of(tmp_path, n=2)
    write_png(np.full((20, 30), 3, np.uint8), folder / "blank.png")
    report = check_root(folder)
    (warning,) = report.datasets[0].warnings
    assert "1 blank image" in warning and "blank.png" in warning
    assert report.exit_code == 0


def test_masks_in_a_folder_are_a_warning(tmp_path):
    folder = folder_of(tmp_path, n=2)
    write_png(np.full((20, 30), 255, np.uint8), folder / "img_0_Annotation.png")
    (check,) = check_root(folder, kind="folder").datasets
    assert len(check.paths) == 3  # a sweep's data.kind folder reads the mask too
    assert any("img_0_Annotation.png" in w and "trains on them" in w for w in check.warnings)


# --------------------------------------------------------------------------------------------
# The command: exit codes, --json, --sweep
# --------------------------------------------------------------------------------------------


def test_cli_json_holds_the_findings(hc18, tmp_path, capsys):
    out = tmp_path / "out" / "check.json"
    assert main(["data", "check", str(hc18), "--resolution", "64", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith(f"{hc18}: hc18 (detected:")
    assert "0 errors, 2 warnings: a sweep can read it" in text and f"wrote {out}" in text
    found = json.loads(out.read_text())
    assert found["exit_code"] == 0 and found["errors"] == [] and len(found["warnings"]) == 2
    (dataset,) = found["datasets"]
    assert dataset["kind"] == "hc18" and dataset["counts"]["images"] == 5
    assert dataset["files"][0] == "training_set/000_HC.png"
    assert dataset["sizes"] == {"80x54": 3, "74x56": 2} and dataset["modes"] == {"L": 5}
    assert dataset["duplicates"] == [] and dataset["fit_effect"][0] == "crop to 64 px:"


def test_a_folder_without_images_exits_1(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["data", "check", str(tmp_path / "empty"), "--kind", "hc18"]) == 1
    assert "error: ROOT: no HC18 images (*_HC.png)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nowhere"], "ROOT nowhere: not found"),
        (["{hc18}", "--plane", "Fetal brain"], "--plane: selects FETAL_PLANES_DB rows"),
        (["{planes}", "--plane", "Fetal brian"], "--plane: no Plane 'Fetal brian'"),
        (["{hc18}", "--resolution", "0"], "--resolution: must be >= 1"),
        (["{hc18}", "--sweep", "x.yaml"], "not both"),
        ([], "give ROOT (a dataset folder) or --sweep"),
        (["--sweep", "{sweep}", "--fit", "pad"], "--fit: not used with --sweep"),
        (["--sweep", "missing.yaml"], "missing.yaml: config file not found"),
    ],
)
def test_cli_usage_errors_exit_2(hc18, planes, tmp_path, capsys, argv, message):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": {"data": {"kind": "hc18", "root": str(hc18)}}}))
    paths = {"hc18": hc18, "planes": planes, "sweep": sweep}
    assert main(["data", "check", *(a.format(**paths) for a in argv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fetalgan: error: ") and message in err and err.count("\n") == 1


def test_sweep_checks_each_dataset_it_reads(hc18, tmp_path, capsys):
    reference = folder_of(tmp_path, n=2)
    write_png(scan(54, 80, 0), reference / "from_training.png")  # 000_HC.png's pixels
    sweep = {
        "name": "check",
        "base": {
            "resolution": 32,
            "data": {"kind": "hc18", "root": str(hc18), "size": 5, "fit": "squash"},
            "eval_reference": {"kind": "folder", "root": str(reference)},
        },
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    report = check_sweep(path)
    data, ref = report.datasets
    assert (data.label, data.kind, len(data.paths)) == ("base.data", "hc18", 5)
    assert (ref.label, ref.kind, len(ref.paths)) == ("base.eval_reference", "folder", 3)
    assert data.fit_lines[0] == "squash to 32 px:"
    (shared,) = report.warnings
    assert "base.data and base.eval_reference: 1 pixel-identical image" in shared
    assert report.exit_code == 0
    # a training subset larger than the dataset would stop the sweep
    assert main(["data", "check", "--sweep", str(path), "--set", "data.size=6"]) == 1
    assert "error: base.data.size: 6 is larger than the dataset (5 images" in (
        capsys.readouterr().out
    )


def test_sweep_shares_one_check_between_sections_of_one_dataset(hc18, tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": {"data": {"kind": "hc18", "root": str(hc18)}}}))
    (check,) = check_sweep(path).datasets  # eval_reference: the whole dataset data names
    assert check.label == "base.data, base.eval_reference"


def test_sweep_selection_sets_that_share_an_image_are_an_error(hc18, tmp_path, capsys):
    test_set = hc18 / "test_set"  # HC18's test set: no masks
    test_set.mkdir()
    for i in range(4):
        write_png(scan(54, 80, 60 + i), test_set / f"{i:03d}_HC.png")
    listed = {"kind": "hc18", "root": str(test_set), "order": "listed"}
    sweep = {
        "base": {"data": {"kind": "hc18", "root": str(hc18)}},
        "select": {"reference": listed | {"size": 2}, "test_reference": listed | {"skip": 2}},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    report = check_sweep(path)
    assert [d.label for d in report.datasets] == [
        "base.data, base.eval_reference", "select.reference, select.test_reference"
    ]  # fmt: skip
    assert report.errors == [] and report.exit_code == 0
    assert (
        main(["data", "check", "--sweep", str(path), "--set", "select.test_reference.skip=1"]) == 1
    )
    out = capsys.readouterr().out
    assert "error: select.reference and select.test_reference share 1 image" in out
