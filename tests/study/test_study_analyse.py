"""``analyse`` against numbers worked out by hand from answers put straight into a study file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fetalgan.cli import main
from fetalgan.study import store
from fetalgan.study.analyse import MEAN_RATER, analyse, cohen_kappa

# Answers by the k-th real (R) and k-th synthetic (F) image in shown order; None: not answered.
ANSWERS = {
    "A": {"R": [("real", 5), ("real", 4), ("real", 5), ("real", 4)],
          "F": [("fake", 1), ("fake", 2), ("fake", 2), ("fake", 3)]},
    "B": {"R": [("real", 4), ("real", 4), ("real", 3), ("real", 5)],
          "F": [("real", 2), ("real", 2), ("real", 3), ("real", 4)]},
    "C": {"R": [("real", 3), ("real", 2), ("fake", 4), None],
          "F": [("fake", 1), ("fake", 3), ("real", 2), None]},
}  # fmt: skip

# Worked out by hand from ANSWERS (see the comments for the arithmetic).
EXPECTED_RATERS = {
    # A: all 8 right; quality real (5+4+5+4)/4, fake (1+2+2+3)/4
    "A": dict(n_answered=8, accuracy=1.0, fakes_called_real=0.0, reals_called_fake=0.0,
              mean_quality_real=4.5, mean_quality_fake=2.0, complete=True),
    # B: calls everything real: reals right, fakes wrong; (4+4+3+5)/4, (2+2+3+4)/4
    "B": dict(n_answered=8, accuracy=0.5, fakes_called_real=1.0, reals_called_fake=0.0,
              mean_quality_real=4.0, mean_quality_fake=2.75, complete=True),
    # C: 6 answers, right on R1 R2 F1 F2; F3 called real; R3 called fake; (3+2+4)/3, (1+3+2)/3
    "C": dict(n_answered=6, accuracy=4 / 6, fakes_called_real=1 / 3, reals_called_fake=1 / 3,
              mean_quality_real=3.0, mean_quality_fake=2.0, complete=False),
}  # fmt: skip
EXPECTED_ALL = dict(
    n_answered=22,
    accuracy=(8 + 4 + 4) / 22,
    fakes_called_real=(0 + 4 + 1) / 11,
    reals_called_fake=(0 + 0 + 1) / 11,
    mean_quality_real=(18 + 16 + 9) / 11,
    mean_quality_fake=(8 + 11 + 6) / 11,
)
# kappa = (p_o - p_e) / (1 - p_e):
#   A/B (8 images): p_o = 4/8, p_e = 4/8 * 8/8 + 4/8 * 0 = 1/2 -> 0
#   A/C (6 images): p_o = 4/6, p_e = 3/6 * 3/6 + 3/6 * 3/6 = 1/2 -> (2/3 - 1/2) / (1/2) = 1/3
#   B/C (6 images): p_o = 3/6, p_e = 6/6 * 3/6 + 0 = 1/2 -> 0
EXPECTED_AGREEMENT = {
    ("A", "B"): dict(n_common=8, percent_agreement=0.5, kappa=0.0),
    ("A", "C"): dict(n_common=6, percent_agreement=4 / 6, kappa=1 / 3),
    ("B", "C"): dict(n_common=6, percent_agreement=3 / 6, kappa=0.0),
}
# Spearman A/B = Pearson of mid-ranks. A's quality [5,4,5,4,1,2,2,3] and B's [4,4,3,5,2,2,3,4]
# (R1..R4, F1..F4) ranked by hand:
RANKS_A = [7.5, 5.5, 7.5, 5.5, 1, 2.5, 2.5, 4]
RANKS_B = [6, 6, 3.5, 8, 1.5, 1.5, 3.5, 6]
# Mean quality of F1..F4 over the raters who answered: (1+2+1)/3, (2+2+3)/3, (2+3+2)/3, (3+4)/2
MEAN_FAKE_QUALITY = [4 / 3, 7 / 3, 7 / 3, 3.5]


def _answer_all(path) -> tuple[list[str], list[str]]:
    """Store ANSWERS; returns the ids of the real and of the synthetic images in shown order."""
    conn = store.connect(path)
    key = store.answer_key(conn)
    reals = [i for i, k in key.items() if k["is_real"]]
    fakes = [i for i, k in key.items() if not k["is_real"]]
    for rater, answers in ANSWERS.items():
        store.add_rater(conn, rater)
        for ids, kind in ((reals, "R"), (fakes, "F")):
            for image_id, answer in zip(ids, answers[kind], strict=True):
                if answer is not None:
                    store.record_answer(conn, rater, image_id, *answer)
    conn.close()
    return reals, fakes


def _approx(value, expected):
    return value == pytest.approx(expected, abs=1e-12)


def test_rater_numbers_match_the_hand_computation(study_file):
    _answer_all(study_file)
    result = analyse(study_file, with_image_metrics=False)
    assert (result["n_images"], result["n_real"], result["n_fake"]) == (8, 4, 4)
    assert set(result["raters"]) == set(EXPECTED_RATERS)
    for rater, expected in EXPECTED_RATERS.items():
        for key, value in expected.items():
            assert _approx(result["raters"][rater][key], value), (rater, key)
    for key, value in EXPECTED_ALL.items():
        assert _approx(result["all_raters"][key], value), key


def test_agreement_matches_the_hand_computation(study_file):
    _answer_all(study_file)
    result = analyse(study_file, with_image_metrics=False)
    rows = {(a["rater_a"], a["rater_b"]): a for a in result["agreement"]}
    assert set(rows) == set(EXPECTED_AGREEMENT)
    for pair, expected in EXPECTED_AGREEMENT.items():
        for key, value in expected.items():
            assert _approx(rows[pair][key], value), (pair, key)
    rho = np.corrcoef(RANKS_A, RANKS_B)[0, 1]
    assert rows[("A", "B")]["quality_spearman"] == pytest.approx(rho, abs=1e-12)


def test_kappa_against_scikit_learn_when_present():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = list(rng.choice(["real", "fake"], 30, p=[0.3, 0.7]))
        b = list(rng.choice(["real", "fake"], 30))
        assert cohen_kappa(a, b) == pytest.approx(sklearn_metrics.cohen_kappa_score(a, b))
    assert cohen_kappa(["fake"] * 5, ["fake"] * 5) is None  # the clinician's all-fake case
    assert cohen_kappa([], []) is None


def test_image_metrics_and_their_correlation_with_quality(study_file):
    """Per synthetic image, |LBPv - rLBPv| at V8 (LBP histogram computed here with
    scikit-image) and PSNR (each fake against every real, averaged) and their Pearson r with
    the mean quality and with rater A's."""
    from skimage.feature import local_binary_pattern
    from skimage.metrics import peak_signal_noise_ratio

    reals, fakes = _answer_all(study_file)
    result = analyse(study_file, pairs_per_fake=None)
    conn = store.connect(study_file)
    real_images = store.images_array(conn, reals)
    fake_images = store.images_array(conn, fakes)
    conn.close()

    def histogram(image):
        codes = local_binary_pattern(image, P=8, R=1, method="default").astype(int)
        return np.bincount(codes.ravel(), minlength=256) / codes.size

    r_lbpv = np.mean([histogram(im) for im in real_images], axis=0)
    v8 = [abs(histogram(im)[8] - r_lbpv[8]) for im in fake_images]
    psnr = [
        np.mean([peak_signal_noise_ratio(r, f, data_range=255) for r in real_images])
        for f in fake_images
    ]
    per_image = result["per_image"]
    assert list(per_image) == fakes
    for image_id, value_v8, value_psnr in zip(fakes, v8, psnr, strict=True):
        assert per_image[image_id]["lbpv_v8"] == pytest.approx(value_v8, rel=1e-9)
        assert per_image[image_id]["psnr"] == pytest.approx(value_psnr, rel=1e-9)
    rows = {(c["metric"], c["rater"]): c for c in result["correlations"]}
    mean_row = rows[("lbpv_v8", MEAN_RATER)]
    assert mean_row["n"] == 4
    assert mean_row["r"] == pytest.approx(np.corrcoef(v8, MEAN_FAKE_QUALITY)[0, 1], abs=1e-9)
    a_row = rows[("psnr", "A")]
    assert a_row["r"] == pytest.approx(np.corrcoef(psnr, [1, 2, 2, 3])[0, 1], abs=1e-9)
    assert 0 <= a_row["p"] <= 1
    assert rows[("psnr", "C")]["n"] == 3  # C did not rate F4


def test_cli_writes_json_and_the_regression_plot(study_file, tmp_path, capsys):
    _answer_all(study_file)
    out, json_path = tmp_path / "analysis", tmp_path / "analysis.json"
    code = main(["study", "analyse", str(study_file), "--out", str(out), "--json",
                 str(json_path), "--rater", "A"])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "fake→real" in text and "33.33%" in text and "45.45%" in text  # C, and all raters
    data = json.loads(json_path.read_text())
    assert math.isclose(data["all_raters"]["fakes_called_real"], 5 / 11)
    assert (out / "regression.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["study", "analyse", str(study_file), "--rater", "Zoe", "--no-image-metrics",
                 "--out", str(out)]) == 2  # fmt: skip
    assert "no answers; raters: A, B, C" in capsys.readouterr().err


def test_no_answers_yet(study_file):
    result = analyse(study_file, with_image_metrics=False)
    assert result["raters"] == {} and result["all_raters"]["accuracy"] is None
    assert result["notes"] == ["no answers yet"]


def test_generator_fid_from_mlflow(tmp_path):
    """Two generators (runs) with different best FIDs: each synthetic image gets its run's
    best FID, and the correlation with quality is computed over them."""
    from study_helpers import write_image_dirs

    from fetalgan.config import TrainConfig
    from fetalgan.evaluation import Evaluation
    from fetalgan.tracking import SweepTracker

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    tracker = SweepTracker("gens", tracking_uri=uri)
    tracker.start_parent()
    runs = []
    for k, fids in enumerate(([90.0, 40.0, 55.0], [120.0, 80.0])):
        run_id = tracker.start_trial(f"t{k}", f"gen{k}", TrainConfig(lr_g=k + 1.0))
        for epoch, fid in enumerate(fids, start=1):
            tracker.log_evaluation(run_id, Evaluation(epoch=epoch, values={"fid": fid}))
        tracker.end_trial(run_id, "FINISHED")
        runs.append(run_id)
    real_dir, fake_a = write_image_dirs(tmp_path / "a", n_real=8, n_fake=4)
    _, fake_b = write_image_dirs(tmp_path / "b", n_real=1, n_fake=4)
    path = tmp_path / "s.db"
    store.create_study(path, real_dir, [fake_a, fake_b], n=8, fake_runs=runs)
    conn = store.connect(path)
    key = store.answer_key(conn)
    store.add_rater(conn, "A")
    quality = {}
    for image_id, info in key.items():  # gen0 images rated 4, gen1 images 2; reals 5
        q = 5 if info["is_real"] else 4 if info["source_run"] == runs[0] else 2
        quality[image_id] = q
        store.record_answer(conn, "A", image_id, "real", q)
    conn.close()

    result = analyse(path, metrics_from="gens", tracking_uri=uri, with_image_metrics=False)
    best = {runs[0]: 40.0, runs[1]: 80.0}
    for row in result["per_image"].values():
        assert row["fid"] == best[row["source_run"]]
    rows = {(c["metric"], c["rater"]): c for c in result["correlations"]}
    assert rows[("fid", "A")]["r"] == pytest.approx(-1.0)  # lower FID, higher quality
    assert rows[("fid", "A")]["n"] == 4
    with pytest.raises(ValueError, match="'nope' not found"):
        analyse(path, metrics_from="nope", tracking_uri=uri, with_image_metrics=False)
