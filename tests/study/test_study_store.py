"""The study file: a seeded, balanced, shuffled set; opaque ids; answers stored once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from real_trees import BRIGHTEST, HC18_SIZES, KEPT, write_fakes, write_hc18, write_planes
from study_helpers import write_image_dirs

from fetalgan.cli import main
from fetalgan.data import real_data
from fetalgan.images import fit_square, read_grey
from fetalgan.study import store
from fetalgan.study.analyse import analyse, reference_images


def _rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT id, position, is_real, source, source_run FROM images ORDER BY position"
        ).fetchall()


def test_balanced_shuffled_and_seeded(tmp_path, image_dirs):
    real_dir, fake_dir = image_dirs
    a, b, c = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "c.db"
    summary = store.create_study(a, real_dir, [fake_dir], n=10, seed=5)
    store.create_study(b, real_dir, [fake_dir], n=10, seed=5)
    store.create_study(c, real_dir, [fake_dir], n=10, seed=6)
    assert summary["real"] == summary["fake"] == 5 and summary["resolution"] == 32

    rows_a, rows_b, rows_c = _rows(a), _rows(b), _rows(c)
    assert [r[1] for r in rows_a] == list(range(10))
    assert sum(r[2] for r in rows_a) == 5
    # same seed: same images in the same order; another seed: another draw
    assert [r[2:4] for r in rows_a] == [r[2:4] for r in rows_b]
    assert [r[2:4] for r in rows_a] != [r[2:4] for r in rows_c]
    # shuffled: reals and fakes interleave (not five of one then five of the other)
    labels = [r[2] for r in rows_a]
    assert labels not in ([1] * 5 + [0] * 5, [0] * 5 + [1] * 5)
    # ids are random and opaque: differ between files of the same seed, say nothing of the key
    ids_a, ids_b = {r[0] for r in rows_a}, {r[0] for r in rows_b}
    assert not ids_a & ids_b
    for image_id in ids_a:
        assert len(image_id) == 16 and int(image_id, 16) >= 0


def test_images_share_resolution_and_encoding(tmp_path, image_dirs):
    """Real scans (48x40 here) are brought to the fakes' 32x32 by the training transform, and
    every image is re-encoded by the one PNG writer: no size or format tells them apart."""
    from fetalgan.images import read_grey, resize_crop

    real_dir, fake_dir = image_dirs
    path = tmp_path / "s.db"
    store.create_study(path, real_dir, [fake_dir], n=8, seed=0)
    conn = store.connect(path)
    key = store.answer_key(conn)
    for image_id, info in key.items():
        png = store.image_png(conn, image_id)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        image = store.decode_image(png)
        assert image.shape == (32, 32)
        source = Path(info["source"].split(":", 1)[1])
        expected = resize_crop(read_grey(source), 32)
        assert np.array_equal(image, expected)
        assert info["is_real"] == (source.parent == real_dir.resolve())
    conn.close()


def test_several_generators_split_evenly_with_runs(tmp_path):
    real_dir, fake_a = write_image_dirs(tmp_path / "x", n_real=10, n_fake=6)
    _, fake_b = write_image_dirs(tmp_path / "y", n_real=1, n_fake=6)
    path = tmp_path / "s.db"
    store.create_study(path, real_dir, [fake_a, fake_b], n=10, fake_runs=["run_a", "run_b"])
    runs = [r[4] for r in _rows(path) if not r[2]]
    assert sorted(runs) == ["run_a"] * 3 + ["run_b"] * 2
    assert all(r[4] is None for r in _rows(path) if r[2])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 7}, "even number"),
        ({"n": 40}, "the study needs 20 real"),
        ({"fake_runs": ["a", "b"]}, "one run id per --fake folder"),
    ],
)
def test_create_refuses_bad_requests(tmp_path, image_dirs, kwargs, message):
    real_dir, fake_dir = image_dirs
    with pytest.raises(ValueError, match=message):
        store.create_study(tmp_path / "s.db", real_dir, [fake_dir], **kwargs)
    assert not (tmp_path / "s.db").exists()


def test_create_never_overwrites(tmp_path, study_file, image_dirs):
    real_dir, fake_dir = image_dirs
    before = study_file.read_bytes()
    with pytest.raises(ValueError, match="already exists"):
        store.create_study(study_file, real_dir, [fake_dir], n=8)
    assert study_file.read_bytes() == before


def test_fakes_of_mixed_sizes_need_a_resolution(tmp_path, image_dirs):
    from fetalgan.images import write_png

    real_dir, fake_dir = image_dirs
    write_png(np.zeros((16, 16), np.uint8), fake_dir / "odd_one.png")
    with pytest.raises(ValueError, match="--resolution"):
        store.create_study(tmp_path / "s.db", real_dir, [fake_dir], n=8)
    store.create_study(tmp_path / "s.db", real_dir, [fake_dir], n=8, resolution=24)
    conn = store.connect(tmp_path / "s.db")
    assert store.images_array(conn, list(store.answer_key(conn))).shape == (8, 24, 24)
    conn.close()


def test_not_a_study_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="study create"):
        store.connect(tmp_path / "missing.db")
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ValueError, match="not a fetalgan study"):
        store.connect(tmp_path / "junk.db")


def test_answers_are_stored_once_and_validated(study_file):
    conn = store.connect(study_file)
    first, second = store.study_images(conn)[:2]
    name = store.add_rater(conn, "  Dr   Ada  ")
    assert name == "Dr Ada" and store.add_rater(conn, "Dr Ada") == "Dr Ada"
    assert store.next_image(conn, name) == first

    assert store.record_answer(conn, name, first.id, "fake", "4") is True
    assert store.record_answer(conn, name, first.id, "fake", 4) is False  # same form again
    with pytest.raises(store.AnswerConflict, match="cannot be changed"):
        store.record_answer(conn, name, first.id, "real", 4)
    for label, quality, message in [
        ("fake", "6", "outside 1..5"),
        ("fake", "0", "outside 1..5"),
        ("fake", "3.5", "whole number"),
        ("fake", "+3", "outside"),
        ("fake", None, "quality: missing"),
        ("maybe", "3", "not one of 'real', 'fake'"),
        (None, "3", "label: missing"),
    ]:
        with pytest.raises(store.AnswerError, match=message):
            store.record_answer(conn, name, second.id, label, quality)
    with pytest.raises(store.AnswerError, match="no such image"):
        store.record_answer(conn, name, "0123456789abcdef", "real", 3)
    with pytest.raises(store.AnswerError, match="unknown"):
        store.record_answer(conn, "nobody", second.id, "real", 3)

    answers = store.all_answers(conn)
    assert [(a.rater, a.image_id, a.label, a.quality) for a in answers] == [
        ("Dr Ada", first.id, "fake", 4)
    ]
    assert store.next_image(conn, name) == second
    assert store.progress(conn, name) == (1, 8)
    conn.close()


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "bell\x07"])
def test_bad_rater_names(study_file, name):
    conn = store.connect(study_file)
    with pytest.raises(store.AnswerError, match="name"):
        store.add_rater(conn, name)
    assert conn.execute("SELECT COUNT(*) FROM raters").fetchone()[0] == 0
    conn.close()


def test_cli_create(tmp_path, image_dirs, capsys):
    real_dir, fake_dir = image_dirs
    out = tmp_path / "cli.db"
    code = main(
        ["study", "create", "--real", str(real_dir), "--fake", str(fake_dir), "-n", "6",
         "--seed", "2", "--fake-run", "abc", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    assert "3 real + 3 synthetic" in capsys.readouterr().out
    assert {r[4] for r in _rows(out) if not r[2]} == {"abc"}
    assert main(["study", "create", "--real", str(real_dir), "--fake", str(fake_dir),
                 "-n", "5", "--out", str(tmp_path / "odd.db")]) == 2  # fmt: skip
    assert "even number" in capsys.readouterr().err


def test_generate_grids_and_hc18_masks_stay_out(tmp_path, image_dirs):
    """`fetalgan generate` writes grid.png beside its images; HC18 has *_Annotation.png masks."""
    from fetalgan.images import write_png

    real_dir, fake_dir = image_dirs
    write_png(np.full((200, 200), 255, np.uint8), fake_dir / "grid.png")
    for i in range(12):
        write_png(np.zeros((48, 40), np.uint8), real_dir / f"{i:03d}_HC_Annotation.png")
    path = tmp_path / "s.db"
    store.create_study(path, real_dir, [fake_dir], n=24)  # every real and fake image
    sources = [r[3] for r in _rows(path)]
    assert len(sources) == 24
    assert not any(s.endswith(("grid.png", "_Annotation.png")) for s in sources)


def test_study_file_is_readable_by_its_owner_only(tmp_path, image_dirs):
    """It holds the answer key and the session key: 0600 whatever the umask."""
    import os

    real_dir, fake_dir = image_dirs
    previous = os.umask(0o022)
    try:
        store.create_study(tmp_path / "study.db", real_dir, [fake_dir], n=8, seed=1)
    finally:
        os.umask(previous)
    assert (tmp_path / "study.db").stat().st_mode & 0o777 == 0o600


def _reals(path: Path) -> list[tuple[Path, np.ndarray]]:
    """Each real image of a study: its source file and the image shown."""
    conn = store.connect(path)
    try:
        key = store.answer_key(conn)
        return [
            (Path(info["source"].split(":", 1)[1]), store.decode_image(store.image_png(conn, i)))
            for i, info in key.items()
            if info["is_real"]
        ]
    finally:
        conn.close()


def test_hc18_reals_never_show_a_mask(tmp_path):
    """HC18's training_set holds a white *_Annotation.png mask beside each scan; scans differ
    in size."""
    root = write_hc18(tmp_path / "hc18")
    fakes = write_fakes(tmp_path / "fake", n=8, size=16)
    path = tmp_path / "hc18.db"
    summary = store.create_study(path, root, [fakes], n=8)  # every real image of the set
    assert summary["real"] == 4
    reals = _reals(path)
    assert sorted(source.stem for source, _ in reals) == sorted(HC18_SIZES)
    for source, image in reals:
        assert image.shape == (16, 16) and image.max() <= BRIGHTEST  # no white mask pixel
        assert np.array_equal(image, fit_square(read_grey(source), 16, "crop"))
    with pytest.raises(ValueError, match=r"--real .*hc18: 4 hc18 images, the study needs 5 real"):
        store.create_study(tmp_path / "more.db", root, [fakes], n=10)


def test_planes_reals_are_the_filtered_rows_at_the_fit(tmp_path):
    root = write_planes(tmp_path / "planes")
    fakes = write_fakes(tmp_path / "fake", n=8, size=16)
    path = tmp_path / "planes.db"
    store.create_study(path, real_data(root, fit="squash", **KEPT), [fakes], n=6)
    reals = _reals(path)
    assert len(reals) == 3
    for source, image in reals:
        assert image.max() <= BRIGHTEST  # every filtered-out row's image is white
        assert np.array_equal(image, fit_square(read_grey(source), 16, "squash"))
    conn = store.connect(path)
    meta = store.read_meta(conn)
    conn.close()
    assert (meta["real_kind"], meta["fit"]) == ("planes", "squash")


def test_cli_create_and_analyse_take_a_dataset(tmp_path, capsys):
    root = write_planes(tmp_path / "planes")
    fakes = write_fakes(tmp_path / "fake", n=8, size=16)
    out = tmp_path / "cli.db"
    code = main(
        ["study", "create", "--real", str(root), "--plane", "Fetal brain", "--brain-plane",
         "Trans-cerebellum", "--fit", "pad", "--fake", str(fakes), "-n", "6", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert ": planes (" in captured.err and "3 real + 3 synthetic" in captured.out
    for source, image in _reals(out):
        assert np.array_equal(image, fit_square(read_grey(source), 16, "pad"))
    # analyse's --real is read the same way, at the study's fit unless given another
    result = analyse(out, real=real_data(root, fit="pad", train_split=False, **KEPT))
    assert result["reference"]["n_real"] == 2 and "(planes)" in result["reference"]["source"]
    hc18 = write_hc18(tmp_path / "hc18")
    conn = store.connect(out)
    reference = reference_images(conn, store.answer_key(conn), hc18)
    conn.close()
    files = sorted((hc18 / "training_set").glob("*HC.png"))
    assert np.array_equal(reference, np.stack([fit_square(read_grey(p), 16, "pad") for p in files]))
    json_path = tmp_path / "a.json"
    assert main(["study", "analyse", str(out), "--real", str(hc18), "--json", str(json_path)]) == 0
    assert '"n_real": 4' in json_path.read_text()
    with pytest.raises(SystemExit):
        main(["study", "create", "--real", str(root), "--fake", str(fakes), "--out",
              str(tmp_path / "x.db"), "--fit", "stretch"])  # fmt: skip
    err = capsys.readouterr().err
    assert "stretch" in err and all(choice in err for choice in ("crop", "squash", "pad"))
