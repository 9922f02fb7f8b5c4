"""`fetalgan data import-nifti`: synthetic volumes stored in three orientations come out the
same, any intensity range fills the grey scale, 2D/4D are refused, slices are chosen by range,
mask and content; and nibabel's own anatomical test image imports with a sensible histogram."""

import csv
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from fetalgan.cli import main  # noqa: E402
from fetalgan.data.nifti import (  # noqa: E402
    SliceOptions,
    import_nifti,
    oriented_slice,
    parse_slices,
    slice_text,
    volume_patient,
    volume_slices,
)
from fetalgan.images import read_grey  # noqa: E402

SHAPE = (20, 24, 16)  # RAS+: X (to the right), Y (to anterior), Z (to superior); all different
MARKER = (slice(14, 18), slice(17, 21), slice(10, 13))  # anterior-right-superior octant
ORIENTATIONS = {  # file axis n holds RAS axis perm[n], reversed where flip[n]
    "RAS": ((0, 1, 2), (False, False, False)),
    "LPS": ((0, 1, 2), (True, True, False)),
    "AIL": ((1, 2, 0), (False, True, True)),  # stored sagittal slice last, two axes reversed
}


def head(low: float = 0.0, high: float = 1.0, seed: int = 0) -> np.ndarray:
    """``SHAPE`` float64 RAS+ volume: a textured ellipsoid 'head' of 0.3..0.6 and a bright 1.0
    marker in the anterior-right-superior octant, with 0..1 mapped to ``low..high``, on a
    background of 0; Z slices 0..2 and 13..15 hold no tissue."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij"))
    centre = (np.array(SHAPE) - 1)[:, None, None, None] / 2
    radius = np.array([0.45 * SHAPE[0], 0.45 * SHAPE[1], 5.5])[:, None, None, None]
    inside = (((grid - centre) / radius) ** 2).sum(axis=0) <= 1
    values = np.zeros(SHAPE)
    tissue = 0.3 + 0.2 * grid[1] / SHAPE[1] + rng.uniform(0, 0.1, SHAPE)
    values[inside] = tissue[inside]
    values[MARKER] = 1.0
    return np.where(values > 0, low + values * (high - low), 0.0)


def stored(data_ras: np.ndarray, name: str, spacing=(1.0, 1.0, 1.0)):
    """``(data, affine)`` of the RAS+ volume as a file in orientation ``name`` would hold it;
    built by hand, so the test does not trust nibabel's own reorientation."""
    perm, flips = ORIENTATIONS[name]
    data = np.transpose(data_ras, perm)
    affine = np.eye(4)
    affine[:3, :3] = 0
    affine[:3, 3] = (-7.0, 3.0, 11.0)  # any origin
    for axis, (ras_axis, flip) in enumerate(zip(perm, flips, strict=True)):
        if flip:
            data = np.flip(data, axis)
            affine[ras_axis, axis] = -spacing[ras_axis]
            affine[ras_axis, 3] += spacing[ras_axis] * (data.shape[axis] - 1)
        else:
            affine[ras_axis, axis] = spacing[ras_axis]
    return np.ascontiguousarray(data), affine


def save(path: Path, data: np.ndarray, affine=None, dtype=None) -> Path:
    image = nib.Nifti1Image(data if dtype is None else data.astype(dtype), affine)
    nib.save(image, path)
    return path


def save_oriented(path: Path, data_ras: np.ndarray, name: str, dtype=np.float32, **kw) -> Path:
    data, affine = stored(data_ras, name, **kw)
    return save(path, data, affine, dtype)


def test_fixture_orientations_are_what_they_claim():
    for name in ORIENTATIONS:
        _, affine = stored(head(), name)
        assert "".join(nib.aff2axcodes(affine)) == name


def test_oriented_slice_by_hand():
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # value = 12 x + 4 y + z
    axial = oriented_slice(volume, "axial", 1)
    assert axial.shape == (3, 2)
    assert axial[0, 0] == volume[1, 2, 1]  # top-left: most anterior, patient's right
    assert axial[2, 1] == volume[0, 0, 1]  # bottom-right: posterior, patient's left
    coronal = oriented_slice(volume, "coronal", 0)
    assert coronal.shape == (4, 2) and coronal[0, 0] == volume[1, 0, 3]  # superior, right
    sagittal = oriented_slice(volume, "sagittal", 0)
    assert sagittal.shape == (4, 3) and sagittal[0, 0] == volume[0, 2, 3]  # superior, anterior


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_every_orientation_gives_the_same_images_marker_top_left(tmp_path, axis):
    results = {}
    for name in ORIENTATIONS:
        path = save_oriented(tmp_path / f"{name}.nii.gz", head(high=1000), name, dtype=np.int16)
        results[name] = volume_slices(path, SliceOptions(axis=axis))
    reference = results["RAS"]
    for name, result in results.items():
        assert result.indices == reference.indices, name
        assert np.array_equal(result.images, reference.images), name
    images = reference.images
    height, width = images.shape[1:]
    expected = {"axial": (24, 20), "coronal": (16, 20), "sagittal": (16, 24)}[axis]
    assert (height, width) == expected
    bright = np.argwhere(images == 255)  # the marker (the 99.5th percentile lies inside it)
    assert len(bright) > 0
    rows, cols = bright[:, 1], bright[:, 2]
    assert rows.max() < height / 2 and cols.max() < width / 2  # all in the top-left quadrant
    marker_axis = MARKER[{"sagittal": 0, "coronal": 1, "axial": 2}[axis]]
    assert set(np.array(reference.indices)[np.unique(bright[:, 0])]) <= set(
        range(marker_axis.start, marker_axis.stop)
    )


@pytest.mark.parametrize(
    ("low", "high", "dtype"),
    [(-610, 30393, np.int16), (0.0, 1e-3, np.float32), (1e6, 5e6, np.float64)],
)
def test_any_intensity_range_spreads_over_the_grey_scale(tmp_path, low, high, dtype):
    volume = head(low=1000, high=12000) if dtype == np.int16 else head(low=low, high=high)
    if dtype == np.int16:  # a few outliers at the ends of the int16 range, as in real scans
        volume[0, 0, 5], volume[1, 0, 5] = low, high
    path = save_oriented(tmp_path / "v.nii.gz", volume, "LPS", dtype=dtype)
    result = volume_slices(path)
    images = result.images
    content = images[images > 0]
    assert (images == 255).mean() < 0.05
    assert 0.2 < (images > 0).mean() < 0.9  # head on black, neither all white nor all black
    assert len(np.unique(content)) > 50
    low_grey, high_grey = np.percentile(content, [5, 95])
    assert high_grey - low_grey > 50  # a min-max window over the int16 outliers gives ~15
    assert result.lo < result.hi <= float(volume.astype(dtype).max())


def test_nibabel_anatomical_image_has_a_sensible_histogram():
    from nibabel.testing import data_path

    path = Path(data_path) / "anatomical.nii"
    if not path.is_file():
        pytest.skip(f"{path}: not in this nibabel installation")
    data = np.asarray(nib.load(path).dataobj)
    assert (data.dtype.kind, data.dtype.itemsize, data.min(), data.max()) == ("i", 2, -610, 30393)
    result = volume_slices(path)
    images = result.images
    assert images.shape == (25, 41, 33)  # all 25 axial slices, (Y, X)
    assert (images == 255).mean() < 0.02
    assert (images == 0).mean() < 0.02
    assert 100 < np.median(images) < 220
    assert len(np.unique(images)) > 200


def test_four_d_refused_unless_one_volume_and_two_d_refused(tmp_path):
    four = save(tmp_path / "bold.nii.gz", np.ones((6, 7, 8, 3), np.float32), np.eye(4))
    with pytest.raises(ValueError, match=r"bold\.nii\.gz: 4D image of shape \(6, 7, 8, 3\)"):
        volume_slices(four)
    single = save(tmp_path / "one.nii.gz", head()[..., None].astype(np.float32), np.eye(4))
    assert volume_slices(single).images.shape[1:] == (24, 20)  # (X, Y, Z, 1): squeezed
    flat = save(tmp_path / "flat.nii", np.ones((6, 7), np.float32), np.eye(4))
    with pytest.raises(ValueError, match=r"flat\.nii: 2D image of shape \(6, 7\)"):
        volume_slices(flat)


def test_default_choice_drops_almost_empty_slices(tmp_path):
    volume = head()  # tissue in Z slices 3..12 (at least 20 % of each), none in 0..2, 13..15
    volume[9:11, 12, 14] = 0.5  # a speck: 2 of 480 pixels, under the default 1 %
    path = save_oriented(tmp_path / "v.nii.gz", volume, "AIL")
    assert volume_slices(path).indices == list(range(3, 13))
    everything = volume_slices(path, SliceOptions(min_foreground=0))
    assert everything.indices == list(range(16))
    assert not everything.images[0].any()  # really empty
    assert (everything.images[14] > 0).sum() == 2
    assert volume_slices(path, SliceOptions(min_foreground=0.004)).indices[-1] == 14


def test_slices_range_and_every(tmp_path):
    path = save_oriented(tmp_path / "v.nii.gz", head(), "LPS")
    assert volume_slices(path, SliceOptions(slices=parse_slices("4:9"))).indices == [4, 5, 6, 7, 8]
    assert volume_slices(path, SliceOptions(slices=parse_slices("-4:"))).indices == [12]
    chosen = volume_slices(path, SliceOptions(slices=parse_slices(":"), every=3))
    assert chosen.indices == [3, 6, 9, 12]  # every 3rd slice with tissue
    assert volume_slices(path, SliceOptions(slices=parse_slices("40:"))).indices == []
    assert [slice_text(parse_slices(t)) for t in ("20:", ":-3", "1:5")] == ["20:", ":-3", "1:5"]
    for bad in ("4", "a:b", "1:2:3"):
        with pytest.raises(ValueError, match="--slices: expected A:B"):
            parse_slices(bad)


def test_mask_chooses_slices_and_sets_the_window(tmp_path):
    volume = head()
    mask = np.zeros(SHAPE, np.uint8)
    mask[5:15, 5:19, 4:9] = 1  # axial slices 4..8; a region without the marker
    mask[9:11, 11:13, 9] = 1  # slice 9: 4 voxels, far below the largest cross-section
    for name in ("LPS", "AIL"):  # the mask is stored as its volume is
        path = save_oriented(tmp_path / f"{name}.nii.gz", volume, name)
        mask_path = save_oriented(tmp_path / f"{name}_mask.nii.gz", mask, name, dtype=np.uint8)
        chosen = volume_slices(path, SliceOptions(mask=mask_path))
        assert chosen.indices == [4, 5, 6, 7, 8, 9]
        assert chosen.hi < 0.7  # in-mask tissue only: the marker (1.0) does not set the window
        large = volume_slices(path, SliceOptions(mask=mask_path, min_mask_fraction=0.5))
        assert large.indices == [4, 5, 6, 7, 8]
    small = save(tmp_path / "small_mask.nii.gz", mask[:10], np.eye(4), np.uint8)
    with pytest.raises(ValueError, match="not on the grid of"):
        volume_slices(path, SliceOptions(mask=small))
    with pytest.raises(ValueError, match="min_mask_fraction: only with a mask"):
        SliceOptions(min_mask_fraction=0.5)


def test_nan_voxels_become_black_with_a_warning(tmp_path, caplog):
    volume = head()
    volume[8:12, 10:14, 8] = np.nan
    path = save_oriented(tmp_path / "v.nii.gz", volume, "RAS")
    with caplog.at_level(logging.WARNING, logger="fetalgan.data.nifti"):
        result = volume_slices(path)
    assert "16 NaN or infinite voxels, written as 0" in caplog.text
    axial = result.images[result.indices.index(8)]
    assert not axial[24 - 14 : 24 - 10, 20 - 12 : 20 - 8].any()
    assert (result.images == 255).mean() < 0.05


def test_non_square_pixels_and_missing_orientation_are_warned(tmp_path, caplog):
    stretched = save_oriented(tmp_path / "s.nii.gz", head(), "LPS", spacing=(0.8, 0.8, 3.0))
    plain = save(tmp_path / "plain.nii.gz", head().astype(np.float32), None)
    with caplog.at_level(logging.WARNING, logger="fetalgan.data.nifti"):
        volume_slices(stretched)  # axial: 0.8 x 0.8 mm in plane
        assert caplog.text == ""
        volume_slices(stretched, SliceOptions(axis="coronal"))
        assert "coronal voxels are 0.8 x 3 mm in plane" in caplog.text
        volume_slices(plain)
        assert "no orientation in the header" in caplog.text


def test_missing_nibabel_names_the_extra(tmp_path, monkeypatch):
    path = save_oriented(tmp_path / "v.nii.gz", head(), "RAS")
    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'fetalgan\[nifti\]'"):
        volume_slices(path)


def test_folder_import_writes_pngs_and_manifest(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    save_oriented(src / "b_T2w.nii.gz", head(seed=1), "AIL")
    save_oriented(src / "a_T2w.nii", head(seed=2), "LPS")
    (src / "notes.txt").write_text("not a volume")
    summary = import_nifti(src, tmp_path / "out", SliceOptions(axis="coronal"), progress=False)
    with open(summary.manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    names = [row["file"] for row in rows]
    assert names[0].startswith("a_T2w_coronal_") and names[-1].startswith("b_T2w_coronal_")
    assert names == sorted(names)  # sorted volumes, then index
    assert names == sorted(p.name for p in summary.paths)
    assert {row["patient"] for row in rows} == {"a_T2w", "b_T2w"}  # no BIDS subject: the stem
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == sorted(names)
    expected = volume_slices(src / "b_T2w.nii.gz", SliceOptions(axis="coronal"))
    b_rows = [row for row in rows if row["volume"].endswith("b_T2w.nii.gz")]
    assert [int(row["index"]) for row in b_rows] == expected.indices
    assert float(b_rows[0]["hi"]) == pytest.approx(expected.hi, rel=1e-5)
    for row, image in zip(b_rows, expected.images, strict=True):
        assert np.array_equal(read_grey(tmp_path / "out" / row["file"]), image)


def test_cli_import_and_its_errors(tmp_path, capsys):
    path = save_oriented(tmp_path / "fetus.nii.gz", head(high=3000), "LPS", dtype=np.int16)
    out = tmp_path / "slices"
    argv = ["data", "import-nifti", str(path), "--out", str(out), "--slices", "0:8"]
    assert main([*argv, "--every", "2", "--percentiles", "1", "99"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == [
        "fetus_axial_0003.png",  # 0..2: no tissue
        "fetus_axial_0005.png",
        "fetus_axial_0007.png",
    ]
    assert "wrote 3 axial slices of 1 volume(s)" in capsys.readouterr().out
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["file"], r["axis"], r["index"]) for r in rows][0] == (
        "fetus_axial_0003.png",
        "axial",
        "3",
    )
    save(tmp_path / "bold.nii.gz", np.ones((4, 4, 4, 2), np.float32), np.eye(4))
    assert main(["data", "import-nifti", str(tmp_path / "bold.nii.gz"), "--out", str(out)]) == 2
    assert "fetalgan: error: " in capsys.readouterr().err
    assert main([*argv, "--min-mask-fraction", "0.5"]) == 2
    assert "only with a mask" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "import-nifti", str(path), "--out", str(out), "--slices", "x"])
    assert exit_info.value.code == 2


def test_folder_with_a_folder_of_masks_and_the_folder_errors(tmp_path):
    src, masks = tmp_path / "src", tmp_path / "masks"
    src.mkdir()
    masks.mkdir()
    mask = np.zeros(SHAPE, np.uint8)
    mask[5:15, 5:19, 6:8] = 1
    for name in ("LPS", "AIL"):
        save_oriented(src / f"{name}.nii.gz", head(), name)
        save_oriented(masks / f"{name}.nii.gz", mask, name, dtype=np.uint8)
    summary = import_nifti(src, tmp_path / "out", SliceOptions(mask=masks), progress=False)
    assert [p.name for p in summary.paths] == [
        "AIL_axial_0006.png",
        "AIL_axial_0007.png",
        "LPS_axial_0006.png",
        "LPS_axial_0007.png",
    ]
    with pytest.raises(ValueError, match="give a folder of masks named as the volumes"):
        import_nifti(src, tmp_path / "out", SliceOptions(mask=masks / "LPS.nii.gz"))
    save_oriented(src / "LPS.nii", head(), "LPS")
    with pytest.raises(ValueError, match=r"LPS\.nii.*same name as"):
        import_nifti(src, tmp_path / "out")
    with pytest.raises(ValueError, match="no NIfTI volumes"):
        import_nifti(masks.parent / "out", tmp_path / "again")  # only PNGs there
    with pytest.raises(FileNotFoundError, match="not found"):
        import_nifti(tmp_path / "nowhere", tmp_path / "out")


def test_later_imports_add_to_the_manifest_and_patients_follow_bids(tmp_path):
    out = tmp_path / "out"
    first = save_oriented(tmp_path / "sub-07_acq-haste_run-1_T2w.nii.gz", head(seed=1), "LPS")
    second = save_oriented(tmp_path / "sub-07_acq-haste_run-2_T2w.nii", head(seed=2), "AIL")
    import_nifti(first, out, SliceOptions(slices=slice(3, 6)), progress=False)
    import_nifti(second, out, SliceOptions(slices=slice(5, 7)), progress=False)
    import_nifti(first, out, SliceOptions(slices=slice(5, 7)), progress=False)  # 5 again
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    runs = [(Path(row["volume"]).name.split("_")[2], row["index"]) for row in rows]
    assert runs == [
        ("run-1", "3"),
        ("run-1", "4"),
        ("run-1", "5"),
        ("run-1", "6"),
        ("run-2", "5"),
        ("run-2", "6"),
    ]
    assert {row["patient"] for row in rows} == {"sub-07"}  # two stacks of one fetus
    assert sorted(p.name for p in out.glob("*.png")) == [row["file"] for row in rows]
    assert volume_patient("STA30.nii.gz") == "STA30"
    assert volume_patient("sub-001_rec-mial_T2w.nii.gz") == "sub-001"
    foreign = tmp_path / "dicom_out"
    foreign.mkdir()
    (foreign / "manifest.csv").write_text("file,patient,frame\nx.png,p,0\n")
    with pytest.raises(ValueError, match="not a manifest of fetalgan data import-nifti"):
        import_nifti(first, foreign, progress=False)
    assert not list(foreign.glob("*.png"))  # refused before writing anything


def test_the_cli_names_the_missing_extra_without_a_traceback(tmp_path, monkeypatch, capsys):
    from fetalgan.cli import main

    path = save_oriented(tmp_path / "v.nii.gz", head(), "RAS")
    monkeypatch.setitem(sys.modules, "nibabel", None)
    assert main(["data", "import-nifti", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "fetalgan: error:" in err and "pip install 'fetalgan[nifti]'" in err
    assert "Traceback" not in err
