"""``fetalgan data import-dicom``: pydicom's own ultrasound examples (RGB, a 30-frame JPEG YBR
cine, PALETTE COLOR, JPEG 2000) and synthetic files written here with pydicom (MONOCHROME1/2,
12-bit, multi-frame, with and without an ultrasound region), nothing downloaded.

Every output (PNG bytes and chunks, manifest, stdout, stderr, log) is searched for the source
files' patient names, IDs, dates, institutions and UIDs. A missing JPEG 2000 decoder is
simulated by emptying pydicom's plugin table for that syntax; the real decoders that are not
installed here (pylibjpeg, gdcm, pyjpegls) are never run."""

from __future__ import annotations

import csv
import logging
import shutil
import struct
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom")
from pydicom import examples  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.pixels import apply_color_lut, get_decoder, pixel_array  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import (  # noqa: E402
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from fetalgan.cli import main  # noqa: E402
from fetalgan.data.dicom import (  # noqa: E402
    MANIFEST_COLUMNS,
    FrameOptions,
    chosen_frames,
    format_report,
    import_dicom,
    luma,
    nonzero_box,
    region_box,
    salted_hash,
    scale_to_8bit,
)
from fetalgan.images import read_grey, write_png  # noqa: E402

IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    "StudyDate",
    "SeriesDate",
    "ContentDate",
    "StudyID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)


# --------------------------------------------------------------------------------------------
# Helpers: synthetic files, reading the outputs back, searching them for identifiers
# --------------------------------------------------------------------------------------------


def make_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits: int = 8,
    name: str = "Quixotica^Marmaduke",
    patient_id: str | None = "PID-QX-40417",
    regions: list[dict] | None = None,
    **elements,
) -> Path:
    """A little-endian US file: ``pixels`` ``(H, W)``, ``(F, H, W)`` grey or ``(H, W, 3)`` RGB,
    every identifying element set to a distinctive value, the UIDs derived from the path."""
    rgb = photometric in ("RGB", "YBR_FULL")  # three samples per pixel
    frames = pixels.shape[0] if pixels.ndim == (4 if rgb else 3) else None
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = (
        UltrasoundMultiFrameImageStorage if frames else UltrasoundImageStorage
    )
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[path.name, "sop"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[path.name, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[path.name, "series"])
    ds.PatientName = name
    if patient_id is not None:
        ds.PatientID = patient_id
    ds.PatientBirthDate = "19870314"
    ds.AccessionNumber = "ACC7788991"
    ds.InstitutionName = "Elsewhere Maternity Hospital"
    ds.StudyDate = "20240229"
    ds.Modality = "US"
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if rgb else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if rgb else 1
    if rgb:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    if frames:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels.astype(np.uint8 if bits <= 8 else np.uint16).tobytes()
    if regions:
        items = []
        for region in regions:
            item = Dataset()
            for keyword, value in region.items():
                setattr(item, keyword, value)
            items.append(item)
        ds.SequenceOfUltrasoundRegions = Sequence(items)
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def region(x0: int, y0: int, x1: int, y1: int, spatial_format: int = 1) -> dict:
    return {
        "RegionSpatialFormat": spatial_format,
        "RegionDataType": 1,
        "RegionFlags": 0,
        "RegionLocationMinX0": x0,
        "RegionLocationMinY0": y0,
        "RegionLocationMaxX1": x1,
        "RegionLocationMaxY1": y1,
    }


def manifest_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == MANIFEST_COLUMNS
        return list(reader)


def png_chunks(path: Path) -> list[str]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        chunks.append(data[at + 4 : at + 8].decode("ascii"))
        at += 12 + length
    return chunks


def identifiers_of(paths: list[Path]) -> set[str]:
    """The identifying values of the source files (and the parts of names) long enough that
    finding one in an output cannot be chance (5 characters or more)."""
    found = set()
    for path in paths:
        ds = pydicom.dcmread(path)
        with warnings.catch_warnings():  # a malformed value is still one to look for
            warnings.simplefilter("ignore")
            values = [str(ds.get(keyword) or "") for keyword in IDENTIFYING]
        for value in values:
            found |= {value, *value.split("^")}
    return {v for v in found if len(v) >= 5}


def assert_no_identifiers(out: Path, sources: list[Path], *texts: str) -> None:
    """No source identifier in any file under ``out`` (names and bytes), nor in ``texts``;
    PNGs hold pixels only (IHDR, IDAT, IEND)."""
    secrets = identifiers_of(sources)
    assert secrets, "the test needs identifiers to look for"
    blobs = [t.encode() for t in texts]
    for path in out.rglob("*"):
        if path.is_file() and path.name != ".fetalgan_salt":
            blobs += [path.name.encode(), path.read_bytes()]
        if path.suffix == ".png":
            assert set(png_chunks(path)) == {"IHDR", "IDAT", "IEND"}, path.name
    for secret in secrets:
        for blob in blobs:
            assert secret.encode() not in blob, f"{secret!r} leaked"


def copy_example(name: str, dest: Path, **relabel) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not relabel:
        return Path(shutil.copy(examples.get_path(name), dest))
    ds = pydicom.dcmread(examples.get_path(name))
    for keyword, value in relabel.items():
        setattr(ds, keyword, value)
    ds.save_as(dest)
    return dest


def png(out: Path, row: dict[str, str]) -> np.ndarray:
    return read_grey(out / row["file"])


J2K_DECODES = get_decoder(JPEG2000Lossless).is_available


# --------------------------------------------------------------------------------------------
# pydicom's ultrasound examples, through the command line
# --------------------------------------------------------------------------------------------


def test_examples_through_the_cli_crop_grey_patients_and_no_identifiers(tmp_path, capsys, caplog):
    src, out = tmp_path / "exam", tmp_path / "out"
    sources = [
        copy_example("rgb_color", src / "a" / "rgb.dcm"),
        copy_example("palette_color", src / "palette.dcm"),
        copy_example("jpeg2k", src / "b" / "c" / "j2k.dcm"),
        # its own name and ID ("PLA", "204") are too short to search for; relabelled
        copy_example(
            "ybr_color",
            src / "cine.dcm",
            PatientName="Ybrcinepatient^Wilhelmina",
            PatientID="YBR-CINE-77204",
        ),
    ]
    copy_example("dicomdir", src / "DICOMDIR")
    copy_example("waveform", src / "ecg.dcm")  # DICOM without pixel data
    (src / "notes.txt").write_text("not DICOM")
    write_png(np.zeros((4, 4), np.uint8), src / "a" / "photo.png")
    caplog.set_level(logging.DEBUG)

    code = main(["data", "import-dicom", str(src), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    j2k_frames = 1 if J2K_DECODES else 0
    assert f"read {3 + j2k_frames} DICOM files, wrote {32 + j2k_frames} frames" in captured.out
    assert "2 not DICOM, 2 DICOM without pixel data" in captured.out
    assert_no_identifiers(out, sources, captured.out, captured.err, caplog.text)

    rows = manifest_rows(out)
    assert len(rows) == 32 + j2k_frames
    by_kind = {}
    for row in rows:
        by_kind.setdefault(row["photometric"], []).append(row)
    cine = by_kind["YBR_FULL_422"]
    assert [int(r["frame"]) for r in cine] == list(range(30))
    assert {r["frames"] for r in cine} == {"30"} and len({r["patient"] for r in cine}) == 1
    # its 2D region (84, 31)-(595, 414) is given for a larger frame: clipped to the 320x240
    assert (cine[0]["crop"], cine[0]["x0"], cine[0]["y0"], cine[0]["x1"], cine[0]["y1"]) == (
        "region", "84", "31", "320", "240",
    )  # fmt: skip
    assert png(out, cine[0]).shape == (240 - 31, 320 - 84)
    assert cine[0]["transfer_syntax"] == "JPEG Baseline (Process 1)"
    # palette: the largest 2D region (120, 60)-(800, 518) clipped to 800x350; the spectral
    # region (format 4) below the image is not taken
    (palette,) = by_kind["PALETTE COLOR"]
    coloured = apply_color_lut(pixel_array(sources[1]), pydicom.dcmread(sources[1]))
    assert coloured.dtype == np.uint16 and coloured.max() == 255 * 256  # 8-bit colours
    expected = luma((coloured >> 8).astype(np.uint8))
    assert np.array_equal(png(out, palette), expected[60:350, 120:800])
    # RGB: BT.601 luma, PIL's, cropped to the non-zero bounding box
    (rgb,) = by_kind["RGB"]
    expected = np.asarray(Image.fromarray(pixel_array(sources[0])).convert("L"))
    x0, y0, x1, y1 = nonzero_box([expected])
    assert (rgb["crop"], rgb["x0"], rgb["y0"], rgb["x1"], rgb["y1"]) == (
        "nonzero", str(x0), str(y0), str(x1), str(y1),
    )  # fmt: skip
    assert np.array_equal(png(out, rgb), expected[y0:y1, x0:x1])
    assert rgb["scale"] == "8bit" and rgb["modality"] == "US"
    if J2K_DECODES:  # the same patient (13US1) as the RGB example
        (j2k,) = by_kind["YBR_RCT"]
        assert j2k["patient"] == rgb["patient"] and png(out, j2k).shape[1] > 600
    assert len({palette["patient"], rgb["patient"], cine[0]["patient"]}) == 3

    # DIR is a folder training set whose manifest names every image's patient
    from fetalgan.config import DataConfig
    from fetalgan.data.datasets import file_patients, list_files

    data = DataConfig(kind="folder", root=str(out))
    files = list_files(data)
    assert sorted(p.name for p in files) == sorted(r["file"] for r in rows)
    assert file_patients(data, files)[out / rgb["file"]] == rgb["patient"]


def test_missing_decoder_names_file_syntax_and_install_then_goes_on(tmp_path, capsys, monkeypatch):
    src, out = tmp_path / "src", tmp_path / "out"
    copy_example("jpeg2k", src / "scans" / "j2k.dcm")
    copy_example("rgb_color", src / "rgb.dcm")
    decoder = get_decoder(JPEG2000Lossless)  # no plugin installed for this syntax
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg", "openjpeg")})

    assert main(["data", "import-dicom", str(src), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    reason = (
        "pixel data is JPEG 2000 Image Compression (Lossless Only) and no decoder for it is "
        "installed: pip install pylibjpeg pylibjpeg-openjpeg (or pillow)"
    )
    assert f"fetalgan: import-dicom: scans/j2k.dcm: {reason}" in captured.err
    assert f"failed: 1 files\n    1 x {reason}" in captured.out
    assert len(manifest_rows(out)) == 1  # the RGB file still came through

    strict = tmp_path / "strict"
    assert main(["data", "import-dicom", str(src), "--out", str(strict), "--strict"]) == 2
    err = capsys.readouterr().err
    assert f"fetalgan: error: scans/j2k.dcm: {reason} (--strict" in err
    # rgb.dcm came before scans/j2k.dcm: its PNG is written and keeps its manifest row
    assert [r["file"] for r in manifest_rows(strict)] == [p.name for p in strict.glob("*.png")]
    assert len(manifest_rows(strict)) == 1

    only = tmp_path / "only"
    assert main(["data", "import-dicom", str(src / "scans"), "--out", str(only)]) == 1
    assert "1 x pixel data is JPEG 2000" in capsys.readouterr().out


@pytest.mark.skipif(not J2K_DECODES, reason="no JPEG 2000 decoder installed")
def test_jpeg2000_decodes_with_the_installed_plugin(tmp_path):
    source = copy_example("jpeg2k", tmp_path / "j2k.dcm")
    report = import_dicom(source, tmp_path / "out", progress=False)
    assert (report.files_read, report.frames_written, report.failed) == (1, 1, 0)
    (row,) = manifest_rows(tmp_path / "out")
    grey = luma(pixel_array(source))
    x0, y0, x1, y1 = (int(row[k]) for k in ("x0", "y0", "x1", "y1"))
    assert np.array_equal(png(tmp_path / "out", row), grey[y0:y1, x0:x1])


# --------------------------------------------------------------------------------------------
# Synthetic files: crop, grey, bits, frames
# --------------------------------------------------------------------------------------------


def sector_image() -> np.ndarray:
    """100 x 120: an image in rows 20..79, columns 30..99, and a bright label at the top left
    outside it (what the region leaves out and the bounding box keeps)."""
    image = np.zeros((100, 120), np.uint8)
    image[20:80, 30:100] = np.arange(70, dtype=np.uint8)[None, :] + 100
    image[5:8, 5:15] = 255
    return image


@pytest.mark.parametrize(
    ("regions", "no_crop", "box", "how"),
    [
        # the largest 2D region wins; a larger non-2D one (format 4) does not count
        (
            [region(40, 30, 50, 40), region(30, 20, 99, 79), region(0, 0, 119, 99, 4)],
            False,
            (30, 20, 100, 80),
            "region",
        ),
        ([region(30, 20, 400, 79)], False, (30, 20, 120, 80), "region"),  # clipped
        (None, False, (5, 5, 100, 80), "nonzero"),
        ([region(30, 20, 99, 79)], True, (0, 0, 120, 100), "none"),
    ],
)
def test_crop_region_else_bounding_box(tmp_path, regions, no_crop, box, how):
    image = sector_image()
    make_dicom(tmp_path / "src" / "a.dcm", image, regions=regions)
    import_dicom(tmp_path / "src", tmp_path / "out", FrameOptions(crop=not no_crop), progress=False)
    (row,) = manifest_rows(tmp_path / "out")
    assert (row["crop"], *(int(row[k]) for k in ("x0", "y0", "x1", "y1"))) == (how, *box)
    x0, y0, x1, y1 = box
    assert np.array_equal(png(tmp_path / "out", row), image[y0:y1, x0:x1])


def test_region_box_and_nonzero_box_by_hand():
    items = [
        SimpleNamespace(**region(10, 10, 19, 29)),  # 10 x 20
        SimpleNamespace(**region(0, 0, 59, 9)),  # 60 x 10 -> clipped to 50 x 10: largest
        SimpleNamespace(**region(-5, -5, 3, 3)),  # clipped to 4 x 4
        SimpleNamespace(RegionSpatialFormat=1, RegionLocationMinX0=0),  # incomplete
    ]
    assert region_box(items, rows=40, cols=50) == (0, 0, 50, 10)
    assert region_box(items[2:], rows=40, cols=50) == (0, 0, 4, 4)
    assert region_box([SimpleNamespace(**region(60, 0, 70, 5))], 40, 50) is None  # outside
    assert region_box(None, 40, 50) is None
    a, b = np.zeros((6, 8), np.uint8), np.zeros((6, 8), np.uint8)
    a[1, 2], b[4, 6] = 1, 9
    assert nonzero_box([a, b]) == (2, 1, 7, 5)
    assert nonzero_box([np.zeros((3, 3), np.uint8)]) is None


def test_native_ybr_full_becomes_the_luma_of_its_rgb(tmp_path):
    from pydicom.pixels import convert_color_space

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    make_dicom(tmp_path / "src" / "ybr.dcm", ybr, photometric="YBR_FULL")
    import_dicom(tmp_path / "src", tmp_path / "out", FrameOptions(crop=False), progress=False)
    (row,) = manifest_rows(tmp_path / "out")
    grey = png(tmp_path / "out", row).astype(int)
    assert row["photometric"] == "YBR_FULL"
    assert np.abs(grey - luma(rgb).astype(int)).max() <= 2  # YBR rounding, both ways
    assert np.abs(grey - ybr[..., 0].astype(int)).max() <= 2  # which is Y


def test_monochrome1_is_inverted_and_monochrome2_kept(tmp_path):
    image = (np.arange(12 * 16) % 251).astype(np.uint8).reshape(12, 16)
    make_dicom(tmp_path / "src" / "m1.dcm", image, photometric="MONOCHROME1", patient_id="P1")
    make_dicom(tmp_path / "src" / "m2.dcm", image, patient_id="P2")
    import_dicom(tmp_path / "src", tmp_path / "out", FrameOptions(crop=False), progress=False)
    rows = {r["photometric"]: r for r in manifest_rows(tmp_path / "out")}
    assert np.array_equal(png(tmp_path / "out", rows["MONOCHROME2"]), image)
    assert np.array_equal(png(tmp_path / "out", rows["MONOCHROME1"]), 255 - image)


def test_twelve_bits_scaled_by_range_without_clipping_or_by_window_with_it(tmp_path):
    image = np.linspace(1000, 3000, 20 * 30).reshape(20, 30).astype(np.uint16)
    source = make_dicom(
        tmp_path / "src" / "deep.dcm", image, bits=12, WindowCenter=2000, WindowWidth=1001
    )
    report = import_dicom(source, tmp_path / "range", FrameOptions(crop=False), progress=False)
    (row,) = manifest_rows(tmp_path / "range")
    grey = png(tmp_path / "range", row)
    assert (grey.min(), grey.max(), row["lo"], row["hi"]) == (0, 255, "1000", "3000")
    assert (row["scale"], row["clipped"], row["bits_stored"]) == ("range", "0", "12")
    assert np.all(np.diff(grey.astype(int).ravel()) >= 0)  # monotonic, nothing folded
    expected = np.floor((image.astype(float) - 1000) * 255 / 2000 + 0.5)
    assert np.array_equal(grey, expected.astype(np.uint8))
    assert report.scales == {"range": 1}

    options = FrameOptions(crop=False, scale="window")
    report = import_dicom(source, tmp_path / "window", options, progress=False)
    (row,) = manifest_rows(tmp_path / "window")
    assert (row["scale"], row["lo"], row["hi"]) == ("window", "1499.5", "2499.5")
    clipped = np.mean((image < 1499.5) | (image > 2499.5))
    assert float(row["clipped"]) == pytest.approx(clipped, abs=1e-3) and clipped > 0.4
    assert report.clipped_frames == 1

    plain = make_dicom(tmp_path / "src" / "plain.dcm", image, bits=12)  # no window
    import_dicom(plain, tmp_path / "fallback", options, progress=False)
    (row,) = manifest_rows(tmp_path / "fallback")
    assert (row["scale"], row["lo"], row["hi"]) == ("range (no window)", "1000", "3000")


def test_scale_to_8bit_by_hand():
    frames = [np.array([[10, 20]]), np.array([[30, 10]])]
    grey, lo, hi, clipped = scale_to_8bit(frames)
    assert (lo, hi, clipped) == (10, 30, [0.0, 0.0])
    assert [g.tolist() for g in grey] == [[[0, 128]], [[255, 0]]]  # 127.5 rounds half up
    grey, lo, hi, clipped = scale_to_8bit([np.array([[0, 100, 200]])], window=(100.5, 101))
    assert (lo, hi, grey[0].tolist(), clipped) == (50, 150, [[0, 128, 255]], [2 / 3])
    assert scale_to_8bit([np.full((2, 2), 7)])[0][0].tolist() == [[0, 0], [0, 0]]
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], np.uint8)
    assert luma(rgb).tolist() == [[76, 150, 29, 255]]  # PIL's L of pure red, green, blue


def cine(n: int = 10) -> np.ndarray:
    """``n`` frames of 8 x 10, frame ``i`` filled with ``10 * i + 5``."""
    return np.stack([np.full((8, 10), 10 * i + 5, np.uint8) for i in range(n)])


@pytest.mark.parametrize(
    ("args", "frames"),
    [
        ([], list(range(10))),
        (["--frames", "first"], [0]),
        (["--frames", "middle"], [5]),
        (["--every", "3"], [0, 3, 6, 9]),
        (["--max-frames", "3"], [0, 4, 9]),  # evenly spaced over the clip
        (["--every", "2", "--max-frames", "2"], [0, 8]),
    ],
)
def test_multi_frame_choice(tmp_path, capsys, args, frames):
    make_dicom(tmp_path / "src" / "cine.dcm", cine())
    out = tmp_path / "out"
    assert main(["data", "import-dicom", str(tmp_path / "src"), "--out", str(out), *args]) == 0
    rows = manifest_rows(out)
    assert [int(r["frame"]) for r in rows] == frames
    assert all(png(out, r).tolist() == cine()[int(r["frame"])].tolist() for r in rows)
    assert {r["frames"] for r in rows} == {"10"}
    assert f"wrote {len(frames)} frames" in capsys.readouterr().out


def test_chosen_frames_by_hand():
    assert chosen_frames(1, FrameOptions(frames="middle")) == [0]
    assert chosen_frames(30, FrameOptions(frames="middle")) == [15]
    assert chosen_frames(7, FrameOptions(every=10)) == [0]
    assert chosen_frames(100, FrameOptions(max_frames=1)) == [0]
    assert chosen_frames(5, FrameOptions(max_frames=10)) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frames", "first", "--every", "2"], "--every: only with --frames all"),
        (["--frames", "middle", "--max-frames", "2"], "--max-frames: only with --frames all"),
    ],
)
def test_frame_options_that_do_not_fit_are_refused(tmp_path, capsys, args, message):
    make_dicom(tmp_path / "src" / "a.dcm", cine(2))
    argv = ["data", "import-dicom", str(tmp_path / "src"), "--out", str(tmp_path / "o"), *args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Patients, the salt, and what never leaves the files
# --------------------------------------------------------------------------------------------


def patients_by_source(out: Path, sources: list[Path]) -> dict[str, str]:
    """Each source file's ``patient``, found by its PNG's name: the salted hash of its SOP
    Instance UID (with the salt file in ``out``)."""
    salt = (out / ".fetalgan_salt").read_text().strip()
    rows = {r["file"]: r for r in manifest_rows(out)}
    found = {}
    for source in sources:
        uid = pydicom.dcmread(source).SOPInstanceUID
        row = rows[f"{salted_hash(salt, 'instance', f'sop:{uid}')}_0000.png"]
        found[source.stem] = row["patient"]
    return found


def test_salted_patient_groups_agree_across_imports_and_differ_by_salt(tmp_path, capsys):
    first, later, out = tmp_path / "first", tmp_path / "later", tmp_path / "out"
    image = sector_image()
    sources = [
        make_dicom(first / "a1.dcm", image, name="Alpha^Anneliese", patient_id="PID-ALPHA-001"),
        make_dicom(first / "a2.dcm", image, name="Alpha^Anneliese", patient_id="PID-ALPHA-001"),
        make_dicom(first / "b1.dcm", image, name="Bravo^Bartholomew", patient_id="PID-BRAVO-002"),
        make_dicom(first / "n1.dcm", image, name="Nobody^Noelle", patient_id=None),
        make_dicom(first / "n2.dcm", image, name="Nobody^Noelle", patient_id=None),
    ]
    report = import_dicom(first, out, progress=False)
    assert (report.files_read, report.no_patient_id, report.salt_created) == (5, 2, True)
    assert "2 files had no PatientID: each is its own patient group" in format_report(report)
    salt_file = out / ".fetalgan_salt"
    salt = salt_file.read_text().strip()
    assert salt_file.stat().st_mode & 0o777 == 0o600 and len(salt) == 64
    patient = patients_by_source(out, sources)
    assert patient["a1"] == patient["a2"] == salted_hash(salt, "patient", "PID-ALPHA-001")
    assert len({patient["a1"], patient["b1"], patient["n1"], patient["n2"]}) == 4
    has_id = {r["patient"]: r["has_patient_id"] for r in manifest_rows(out)}
    assert (has_id[patient["a1"]], has_id[patient["n1"]]) == ("1", "0")

    # later: one more image of alpha and one of a new patient, into the same folder
    more = [
        make_dicom(later / "a3.dcm", image, name="Alpha^Anneliese", patient_id="PID-ALPHA-001"),
        make_dicom(later / "c1.dcm", image, name="Charlie^Cornelius", patient_id="PID-CHAR-003"),
    ]
    report = import_dicom(later, out, progress=False)
    assert not report.salt_created and report.manifest_rows == 7
    patient |= patients_by_source(out, more)
    assert patient["a3"] == patient["a1"]
    assert patient["c1"] not in {patient[k] for k in ("a1", "b1", "n1", "n2")}
    assert len({r["patient"] for r in manifest_rows(out)}) == 5  # a, b, c, two without ID

    # the same salt file for another folder agrees; a new salt gives other hashes
    import_dicom(later, tmp_path / "same", salt_file=salt_file, progress=False)
    same = {r["patient"] for r in manifest_rows(tmp_path / "same")}
    assert same == {patient["a1"], patient["c1"]}
    import_dicom(later, tmp_path / "other", progress=False)
    other = {r["patient"] for r in manifest_rows(tmp_path / "other")}
    assert len(other) == 2 and not other & set(patient.values())

    # a manifest made with another salt is refused, and so is a lost salt file
    argv = ["data", "import-dicom", str(later), "--out", str(out)]
    assert main([*argv, "--salt-file", str(tmp_path / "other" / ".fetalgan_salt")]) == 2
    assert "made with another salt" in capsys.readouterr().err
    assert main([*argv, "--salt-file", str(tmp_path / "lost")]) == 2
    assert "does not exist: give that import's --salt-file" in capsys.readouterr().err
    assert not (tmp_path / "lost").exists()
    assert_no_identifiers(out, sources + more, format_report(report))


def test_reimport_rewrites_the_same_files_and_rows(tmp_path):
    make_dicom(tmp_path / "src" / "a.dcm", cine(3))
    make_dicom(tmp_path / "src" / "copy" / "a.dcm", cine(3))  # same SOP Instance UID
    first = import_dicom(tmp_path / "src", tmp_path / "out", progress=False)
    assert (first.files_read, first.duplicates, first.frames_written) == (1, 1, 3)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    again = import_dicom(tmp_path / "src", tmp_path / "out", progress=False)
    assert again.replaced_rows == 3 and again.manifest_rows == 3
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_pydicom_warnings_that_quote_values_are_counted_not_shown(tmp_path, capsys, caplog):
    source = tmp_path / "src" / "odd.dcm"
    with pytest.warns(UserWarning, match="Marmaduke"):  # pydicom quotes the bad value
        make_dicom(source, sector_image(), StudyInstanceUID="1.2.826.Marmaduke.7")
    caplog.clear()  # pydicom logged it while writing, too
    caplog.set_level(logging.DEBUG)
    assert main(["data", "import-dicom", str(source), "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "pydicom warned" in captured.out and "not shown" in captured.out
    assert "Marmaduke" not in captured.out + captured.err + caplog.text
    assert_no_identifiers(tmp_path / "out", [source], captured.out, captured.err, caplog.text)


def test_no_dicom_at_all_is_an_error_naming_what_was_found(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("hello")
    argv = ["data", "import-dicom", str(tmp_path / "src"), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "no DICOM images found (1 files not DICOM" in capsys.readouterr().err
    assert main(["data", "import-dicom", str(tmp_path / "nope"), "--out", "x"]) == 2
    assert "nope: not found" in capsys.readouterr().err


def test_without_pydicom_the_error_names_the_extra(tmp_path, monkeypatch):
    make_dicom(tmp_path / "a.dcm", cine(1))
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'fetalgan\[dicom\]'"):
        import_dicom(tmp_path / "a.dcm", tmp_path / "out", progress=False)
