"""The study's own protocol: a chosen share of synthetic images, the counts behind each
percentage, kappa against the key, and the LBPv elements themselves beside |V - rV|."""

from __future__ import annotations

import numpy as np
import pytest

from fetalgan.cli import main
from fetalgan.study import store
from fetalgan.study.analyse import analyse, cohen_kappa, format_summary
from fetalgan.study.store import create_study


def _composition(path) -> tuple[int, int]:
    conn = store.connect(path)
    key = store.answer_key(conn)
    conn.close()
    n_real = sum(k["is_real"] for k in key.values())
    return n_real, len(key) - n_real


@pytest.mark.parametrize(
    ("n", "fraction", "real", "fake"),
    [(8, 0.5, 4, 4), (10, 0.7, 3, 7), (12, 0.25, 9, 3), (9, 0.84, 1, 8)],
)
def test_fake_fraction_builds_the_asked_composition(tmp_path, image_dirs, n, fraction, real, fake):
    real_dir, fake_dir = image_dirs
    summary = create_study(tmp_path / "s.db", real_dir, [fake_dir], n=n, fake_fraction=fraction)
    assert (summary["real"], summary["fake"]) == (real, fake)
    assert _composition(tmp_path / "s.db") == (real, fake)


def test_the_study_set_of_68_with_57_synthetic_images(tmp_path):
    """56.14 % = 32/57: 68 images with 57 synthetic (--fake-fraction 0.84 gives round(57.12))."""
    from study_helpers import write_image_dirs

    real_dir, fake_dir = write_image_dirs(tmp_path / "images", n_real=12, n_fake=60, size=16)
    code = main(["study", "create", "--real", str(real_dir), "--fake", str(fake_dir), "-n", "68",
                 "--fake-fraction", "0.84", "--out", str(tmp_path / "s.db")])  # fmt: skip
    assert code == 0 and _composition(tmp_path / "s.db") == (11, 57)
    assert round(100 * 32 / 57, 2) == 56.14


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 8, "fake_fraction": 1.0}, r"--fake-fraction: must be in \(0, 1\)"),
        ({"n": 4, "fake_fraction": 0.1}, "gives 0 synthetic and 4 real"),
        ({"n": 7, "fake_fraction": 0.5}, "even number"),
    ],
)
def test_impossible_compositions_are_refused(tmp_path, image_dirs, kwargs, message):
    real_dir, fake_dir = image_dirs
    with pytest.raises(ValueError, match=message):
        create_study(tmp_path / "s.db", real_dir, [fake_dir], **kwargs)


def test_counts_behind_each_percentage_and_kappa_against_the_key(tmp_path, image_dirs):
    real_dir, fake_dir = image_dirs
    path = tmp_path / "s.db"
    create_study(path, real_dir, [fake_dir], n=10, fake_fraction=0.7, seed=1)  # 3 real, 7 fake
    conn = store.connect(path)
    key = store.answer_key(conn)
    reals = [i for i, k in key.items() if k["is_real"]]
    fakes = [i for i, k in key.items() if not k["is_real"]]
    store.add_rater(conn, "engineer")
    labels = {}
    for i, image_id in enumerate(reals):  # reals: real, real, fake
        labels[image_id] = "fake" if i == 2 else "real"
    for i, image_id in enumerate(fakes):  # fakes: 4 of 7 called real
        labels[image_id] = "real" if i < 4 else "fake"
    for image_id, label in labels.items():
        store.record_answer(conn, "engineer", image_id, label, 3)
    conn.close()

    result = analyse(path)
    s = result["raters"]["engineer"]
    assert (s["n_fakes_called_real"], s["n_fake"]) == (4, 7)
    assert s["fakes_called_real"] == pytest.approx(4 / 7)
    assert (s["n_reals_called_fake"], s["n_real"]) == (1, 3)
    assert (s["n_correct"], s["n_answered"]) == (2 + 3, 10)
    truth = ["real" if key[i]["is_real"] else "fake" for i in labels]
    assert s["kappa_vs_key"] == pytest.approx(cohen_kappa(list(labels.values()), truth))
    text = format_summary(result)
    assert "57.14% (4/7)" in text and "33.33% (1/3)" in text and "50.00% (5/10)" in text


def test_lbpv_elements_themselves_beside_their_distance_to_rlbpv(tmp_path, image_dirs):
    from skimage.feature import local_binary_pattern

    real_dir, fake_dir = image_dirs
    path = tmp_path / "s.db"
    create_study(path, real_dir, [fake_dir], n=8, seed=2)
    conn = store.connect(path)
    key = store.answer_key(conn)
    reals = [i for i, k in key.items() if k["is_real"]]
    fakes = [i for i, k in key.items() if not k["is_real"]]
    real_images = store.images_array(conn, reals)
    fake_images = store.images_array(conn, fakes)
    store.add_rater(conn, "clinician")
    for q, image_id in enumerate(fakes + reals):
        store.record_answer(conn, "clinician", image_id, "fake", 1 + q % 5)
    conn.close()

    def histogram(image):
        codes = local_binary_pattern(image, P=8, R=1, method="default").astype(int)
        return np.bincount(codes.ravel(), minlength=256) / codes.size

    r_lbpv = np.mean([histogram(im) for im in real_images], axis=0)
    result = analyse(path, pairs_per_fake=None, out=tmp_path / "fig")
    for image_id, image in zip(fakes, fake_images, strict=True):
        row = result["per_image"][image_id]
        for k in (8, 20, 143, 240):
            assert row[f"lbp_v{k}"] == pytest.approx(histogram(image)[k], abs=1e-15)
            assert row[f"lbpv_v{k}"] == pytest.approx(abs(histogram(image)[k] - r_lbpv[k]))
    metrics = {c["metric"] for c in result["correlations"]}
    assert {"lbp_v8", "lbpv_v8", "lbp_v240", "lbpv_v240"} <= metrics
    assert "lbp_vK: the LBPv element itself" in format_summary(result)
