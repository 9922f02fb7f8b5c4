"""Analysis of a reader study: how often raters were fooled, how they rated quality, whether
they agree with each other, and which image metrics follow their quality ratings.

- Per rater (and pooled over all answers): accuracy (answers matching the key / answers),
  fraction of the synthetic images called real (the fetal head study's 56.14 % for its two
  engineers), fraction of the real images called fake, each with the counts behind it (k of
  n), Cohen's kappa of the rater's labels against the answer key, mean quality of real and of
  synthetic images.
- Inter-rater agreement for every pair of raters, over the images both answered: Cohen's kappa
  of the real/fake labels (``(p_o - p_e) / (1 - p_e)``, undefined when ``p_e = 1``), percent
  agreement, and Spearman's rho of the quality scores.
- Per synthetic image: the LBPv elements V8, V20, V143, V240 themselves (the image's own LBP
  histogram, what the study's Fig. 2 plots), |LBPv - rLBPv| at those elements and its L1 sum
  (against the real set's mean histogram, rLBPv), PSNR and normalised MI
  against real images (:mod:`fetalgan.metrics.image`), and, given ``metrics_from``, the FID of
  the generator (MLflow run) that made it. Each metric is correlated (Pearson r and two-sided
  p, ``scipy.stats.pearsonr``) with each rater's quality score and with the mean score over
  raters, over the synthetic images, and drawn as regression plots like the study's Fig. 2.

The real reference set is the study's own real images unless ``real`` names a larger one (a
dataset as ``fetalgan.data.real_data`` reads it, brought to the study's resolution by the
training transform the study was made with, its ``fit``).

The tests themselves (Cohen's kappa, Spearman, Pearson) are pure functions in
:mod:`fetalgan.study.stats`, beside the sweep report's test across data sizes.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fetalgan.files import atomic_write_text
from fetalgan.metrics.image import LBPV_ELEMENT_KEYS, LBPV_ELEMENTS
from fetalgan.study import store
from fetalgan.study.stats import cohen_kappa, pearson, spearman

if TYPE_CHECKING:
    from fetalgan.config import DataConfig

MEAN_RATER = "mean of raters"
LBP_ELEMENT_KEYS = tuple(f"lbp_v{k}" for k in LBPV_ELEMENTS)  # the elements themselves
IMAGE_METRICS = (*LBP_ELEMENT_KEYS, *LBPV_ELEMENT_KEYS, "lbpv_l1", "psnr", "mi")
METRIC_LABELS = {
    "fid": "FID of the generator",
    **{f"lbp_v{k}": f"V{k} (LBPv element)" for k in LBPV_ELEMENTS},
    "lbpv_v8": "|V8 - rV8|",
    "lbpv_v20": "|V20 - rV20|",
    "lbpv_v143": "|V143 - rV143|",
    "lbpv_v240": "|V240 - rV240|",
    "lbpv_l1": "LBPv L1 distance to rLBPv",
    "psnr": "PSNR vs reals (dB)",
    "mi": "normalised MI vs reals",
}


# --------------------------------------------------------------------------------------------
# Answers alone
# --------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _fraction(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def answer_stats(answers: list[store.Answer]) -> dict[str, Any]:
    """Counts and rates of a list of answers (one rater's, or everyone's)."""
    real = [a for a in answers if a.is_real]
    fake = [a for a in answers if not a.is_real]
    correct = sum((a.label == "real") == a.is_real for a in answers)
    fakes_called_real = sum(a.label == "real" for a in fake)
    reals_called_fake = sum(a.label == "fake" for a in real)
    truth = ["real" if a.is_real else "fake" for a in answers]
    return {
        "n_answered": len(answers),
        "n_real": len(real),
        "n_fake": len(fake),
        "n_correct": correct,
        "accuracy": _fraction(correct, len(answers)),
        "n_fakes_called_real": fakes_called_real,
        "fakes_called_real": _fraction(fakes_called_real, len(fake)),
        "n_reals_called_fake": reals_called_fake,
        "reals_called_fake": _fraction(reals_called_fake, len(real)),
        # agreement of the labels with the answer key beyond chance
        "kappa_vs_key": cohen_kappa([a.label for a in answers], truth) if answers else None,
        "mean_quality_real": _mean([a.quality for a in real]),
        "mean_quality_fake": _mean([a.quality for a in fake]),
    }


def rater_stats(answers: list[store.Answer], n_images: int) -> dict[str, dict[str, Any]]:
    """``{rater: answer_stats + complete}`` for each rater."""
    by_rater: dict[str, list[store.Answer]] = defaultdict(list)
    for a in answers:
        by_rater[a.rater].append(a)
    out = {}
    for rater, items in sorted(by_rater.items()):
        out[rater] = answer_stats(items) | {"complete": len(items) == n_images}
    return out


def agreement(answers: list[store.Answer]) -> list[dict[str, Any]]:
    """For each pair of raters, over the images both answered: Cohen's kappa of the labels,
    percent agreement, Spearman's rho (and p) of the quality scores."""
    by_rater: dict[str, dict[str, store.Answer]] = defaultdict(dict)
    for a in answers:
        by_rater[a.rater][a.image_id] = a
    rows = []
    for rater_a, rater_b in combinations(sorted(by_rater), 2):
        common = sorted(set(by_rater[rater_a]) & set(by_rater[rater_b]))
        labels_a = [by_rater[rater_a][i].label for i in common]
        labels_b = [by_rater[rater_b][i].label for i in common]
        rho, p = spearman(
            [by_rater[rater_a][i].quality for i in common],
            [by_rater[rater_b][i].quality for i in common],
        )
        rows.append(
            {
                "rater_a": rater_a,
                "rater_b": rater_b,
                "n_common": len(common),
                "percent_agreement": _fraction(
                    sum(x == y for x, y in zip(labels_a, labels_b, strict=True)), len(common)
                ),
                "kappa": cohen_kappa(labels_a, labels_b),
                "quality_spearman": rho,
                "quality_spearman_p": p,
            }
        )
    return rows


# --------------------------------------------------------------------------------------------
# Per-image metrics
# --------------------------------------------------------------------------------------------


def reference_images(
    conn, key: dict[str, dict], real: str | Path | DataConfig | None
) -> np.ndarray:
    """The real reference set ``(N, H, W) uint8``: the study's real images, or every image of
    the real set ``real`` (a DataConfig from :func:`fetalgan.data.real_data`, or a folder read
    with the study's ``fit``) at the study's resolution."""
    if real is None:
        return store.images_array(conn, [i for i, k in key.items() if k["is_real"]])
    from fetalgan.data import list_real_files, real_data
    from fetalgan.data.datasets import decode_files

    if isinstance(real, (str, Path)):
        real = real_data(real, fit=study_fit(conn))
    side = int(store.read_meta(conn)["resolution"])
    return np.stack(decode_files(list_real_files(real), side, fit=real.fit, desc="read real"))


def _source(real: str | Path | DataConfig | None) -> str:
    if real is None:
        return "the study's real images"
    return str(real) if isinstance(real, (str, Path)) else f"{real.root} ({real.kind})"


def study_fit(conn) -> str:
    """How the study brought its images to its resolution (``data.fit``); ``crop`` for studies
    made before it was recorded."""
    return store.read_meta(conn).get("fit", "crop")


def image_metrics(
    fake_images: np.ndarray,
    real_images: np.ndarray,
    *,
    pairs_per_fake: int | None = 100,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Per synthetic image (``(N, H, W) uint8``): ``lbpv_v8 .. lbpv_v240``, ``lbpv_l1`` (its LBP
    histogram against rLBPv, the mean histogram of ``real_images``) and ``psnr``, ``mi`` (mean
    over ``pairs_per_fake`` seeded real images; the same reals for every fake image)."""
    from fetalgan.metrics.image import lbp_histogram, lbpv, lbpv_distance, paired_metrics

    real_lbpv = lbpv(real_images)
    rows = []
    for image in fake_images:
        distance = lbpv_distance(real_lbpv, lbp_histogram(image))  # |V - rV|
        paired = paired_metrics(
            real_images,
            image[None],
            metrics=("psnr", "mi"),
            pairs_per_fake=pairs_per_fake,
            seed=seed,
        )
        histogram = lbp_histogram(image)
        row = {
            key: float(histogram[k]) for key, k in zip(LBP_ELEMENT_KEYS, LBPV_ELEMENTS, strict=True)
        }
        row.update({k: distance[k] for k in IMAGE_METRICS if k in distance})
        row.update(psnr=paired["psnr"], mi=paired["mi"])
        rows.append(row)
    return rows


def generator_fid(
    key: dict[str, dict], experiment: str, *, tracking_uri: str | None = None
) -> tuple[dict[str, float], list[str]]:
    """``{fake image id: FID of the run that made it}`` and notes. The FID of a run is its
    best evaluation's by the sweep's metric and mode (the one ``checkpoint/best.pt`` holds,
    which ``generate`` uses). Images
    whose source run was not recorded at ``create`` are taken to come from the experiment's
    best run (what ``fetalgan generate --best`` uses), with a note saying so."""
    from fetalgan.tracking import best_run, metric_at_best

    notes: list[str] = []
    fake_ids = [i for i, k in key.items() if not k["is_real"]]
    runs = {key[i]["source_run"] for i in fake_ids}
    if None in runs:
        best = best_run(experiment, tracking_uri=tracking_uri)
        notes.append(
            f"no source run recorded for some synthetic images (create --fake-run); taken to "
            f"be the best run {best['run_id']} of {experiment}"
        )
        for i in fake_ids:
            if key[i]["source_run"] is None:
                key[i] = key[i] | {"source_run": best["run_id"]}
        runs = {key[i]["source_run"] for i in fake_ids}
    fid = {
        run: metric_at_best(run, "fid", experiment=experiment, tracking_uri=tracking_uri)
        for run in sorted(runs)
    }
    try:
        selected = best_run(experiment, tracking_uri=tracking_uri)
    except ValueError:  # no finished trial with the sweep's metric: nothing was selected
        selected = {}
    test = selected.get("test") or {}
    if test.get("metric") == "fid" and selected["run_id"] in fid:
        # the final selection's generator: its test FID, not its optimistic in-sweep best
        fid[selected["run_id"]] = test["value"]
        notes.append(
            f"run {selected['run_id']} (the final selection's winner): its test FID "
            f"{test['value']:.4g} ({test['draws']} x {test['n_fake']} fakes against the test "
            "reference), not its in-sweep best"
        )
    missing = sorted(run for run, value in fid.items() if value is None)
    if missing:
        notes.append(f"runs without an fid metric: {', '.join(missing)}")
    out = {i: fid[key[i]["source_run"]] for i in fake_ids if fid[key[i]["source_run"]] is not None}
    if len(set(out.values())) < 2:
        notes.append("one generator only: its FID is the same for every image, r is undefined")
    return out, notes


# --------------------------------------------------------------------------------------------
# Correlations and plots
# --------------------------------------------------------------------------------------------


def quality_by_rater(answers: list[store.Answer]) -> dict[str, dict[str, float]]:
    """``{rater: {image id: quality}}`` plus ``MEAN_RATER``: the mean over raters who answered."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for a in answers:
        out[a.rater][a.image_id] = float(a.quality)
    pooled: dict[str, list[float]] = defaultdict(list)
    for a in answers:
        pooled[a.image_id].append(float(a.quality))
    out[MEAN_RATER] = {i: float(np.mean(v)) for i, v in pooled.items()}
    return dict(out)


def correlations(
    per_image: dict[str, dict[str, float]], quality: dict[str, dict[str, float]]
) -> list[dict[str, Any]]:
    """Pearson r, p and n of every metric against every rater's quality (and the mean), over
    the synthetic images that have both."""
    metrics = sorted({m for row in per_image.values() for m in row}, key=_metric_order)
    rows = []
    for metric in metrics:
        for rater, scores in quality.items():
            ids = [i for i in per_image if _usable(per_image[i], metric) and i in scores]
            x = [per_image[i][metric] for i in ids]
            y = [scores[i] for i in ids]
            r, p = pearson(x, y)
            rows.append({"metric": metric, "rater": rater, "n": len(ids), "r": r, "p": p})
    return rows


def _usable(row: dict[str, float], metric: str) -> bool:
    return metric in row and math.isfinite(row[metric])


def _metric_order(name: str) -> int:
    order = ("fid", *IMAGE_METRICS)
    return order.index(name) if name in order else len(order)


def regression_plot(
    per_image: dict[str, dict[str, float]],
    scores: dict[str, float],
    path: str | Path,
    *,
    title: str,
) -> Path:
    """One panel per metric: quality score (x) against the metric (y) over the synthetic
    images, with the least-squares line and Pearson r, p, as in the study's Fig. 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import linregress

    metrics = sorted({m for row in per_image.values() for m in row}, key=_metric_order)
    cols = min(4, max(1, len(metrics)))
    rows = math.ceil(len(metrics) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.ravel()[len(metrics) :]:
        ax.axis("off")
    for ax, metric in zip(axes.ravel(), metrics, strict=False):
        ids = [i for i in per_image if _usable(per_image[i], metric) and i in scores]
        x = np.array([scores[i] for i in ids])
        y = np.array([per_image[i][metric] for i in ids])
        ax.scatter(x, y, s=16, alpha=0.7, color="tab:blue")
        r, p = pearson(x, y)
        if r is not None:
            fit = linregress(x, y)
            xs = np.linspace(x.min(), x.max(), 50)
            ax.plot(xs, fit.intercept + fit.slope * xs, color="tab:red")
            ax.set_title(f"r = {r:.2f}, p = {p:.2g}, n = {len(ids)}", fontsize=9)
        else:
            ax.set_title(f"r undefined, n = {len(ids)}", fontsize=9)
        ax.set_xlabel("quality score")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric), fontsize=9)
        ax.set_xlim(0.5, 5.5)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def analyse(
    study: str | Path,
    *,
    metrics_from: str | None = None,
    tracking_uri: str | None = None,
    real: str | Path | DataConfig | None = None,
    with_image_metrics: bool = True,
    pairs_per_fake: int | None = 100,
    rater: str | None = None,
    out: str | Path | None = None,
    json_path: str | Path | None = None,
) -> dict[str, Any]:
    """Everything above for the study file ``study``; returns it as a JSON-ready dict.

    ``metrics_from``: MLflow experiment giving each generator's FID. ``real``: the real
    reference set (see :func:`reference_images`; default the study's real images). ``rater``: whose scores
    the regression plot shows (default the mean over raters). ``out``: folder for
    ``regression.png``; ``json_path``: write the result there too.
    """
    if metrics_from is not None:  # a tracking server that is down: say so now, not at the end
        from fetalgan.tracking import answering

        answering(tracking_uri)
    conn = store.connect(study)
    try:
        meta = store.read_meta(conn)
        key = store.answer_key(conn)
        answers = store.all_answers(conn)
        if rater is not None and rater not in {a.rater for a in answers}:
            raters = sorted({a.rater for a in answers})
            raise ValueError(
                f"--rater {rater!r}: no answers; raters: {', '.join(raters) or 'none'}"
            )
        notes: list[str] = []
        result: dict[str, Any] = {
            "study": str(study),
            "n_images": len(key),
            "n_real": sum(k["is_real"] for k in key.values()),
            "n_fake": sum(not k["is_real"] for k in key.values()),
            "resolution": int(meta["resolution"]),
            "raters": rater_stats(answers, len(key)),
            "all_raters": answer_stats(answers),
            "agreement": agreement(answers),
        }
        per_image: dict[str, dict[str, float]] = {i: {} for i, k in key.items() if not k["is_real"]}
        if with_image_metrics:
            fake_ids = list(per_image)
            reals = reference_images(conn, key, real)
            rows = image_metrics(
                store.images_array(conn, fake_ids), reals, pairs_per_fake=pairs_per_fake
            )
            for i, row in zip(fake_ids, rows, strict=True):
                per_image[i].update(row)
            result["reference"] = {
                "source": _source(real),
                "n_real": int(len(reals)),
                "pairs_per_fake": pairs_per_fake,
            }
    finally:
        conn.close()

    if metrics_from:
        fid, fid_notes = generator_fid(key, metrics_from, tracking_uri=tracking_uri)
        notes += fid_notes
        for i, value in fid.items():
            per_image[i]["fid"] = value
    quality = quality_by_rater(answers)
    result["per_image"] = {
        i: {"position": key[i]["position"], "source_run": key[i]["source_run"], **per_image[i]}
        | {"quality": {r: q[i] for r, q in quality.items() if i in q}}
        for i in per_image
    }
    result["correlations"] = correlations(per_image, quality) if answers else []
    if out is not None and answers and any(per_image.values()):
        who = rater or MEAN_RATER
        result["regression_plot"] = str(
            regression_plot(
                per_image,
                quality[who],
                Path(out) / "regression.png",
                title=f"synthetic images: metric against quality ({who})",
            )
        )
    if not answers:
        notes.append("no answers yet")
    result["notes"] = notes
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(_finite(result), indent=2, allow_nan=False) + "\n")
    return result


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (PSNR of an identical pair is inf) made None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "—" if value is None else format(value, fmt)


def format_summary(result: dict[str, Any]) -> str:
    """A plain-text summary of :func:`analyse`'s result for the terminal."""
    lines = [
        f"{result['study']}: {result['n_images']} images ({result['n_real']} real, "
        f"{result['n_fake']} synthetic), {result['resolution']} px",
        "",
        f"{'rater':<24} {'n':>4} {'accuracy':>17} {'fake→real':>17} {'real→fake':>17} "
        f"{'kappa':>6} {'Q real':>7} {'Q fake':>7}",
    ]
    rows = list(result["raters"].items()) + [("(all raters)", result["all_raters"])]
    for name, s in rows:
        accuracy = f"{_pct(s['accuracy'])} ({s['n_correct']}/{s['n_answered']})"
        fooled = f"{_pct(s['fakes_called_real'])} ({s['n_fakes_called_real']}/{s['n_fake']})"
        missed = f"{_pct(s['reals_called_fake'])} ({s['n_reals_called_fake']}/{s['n_real']})"
        lines.append(
            f"{name[:24]:<24} {s['n_answered']:>4} {accuracy:>17} {fooled:>17} {missed:>17} "
            f"{_num(s['kappa_vs_key'], '.3f'):>6} "
            f"{_num(s['mean_quality_real']):>7} {_num(s['mean_quality_fake']):>7}"
        )
    lines.append(
        "  fake→real: synthetic images called real (k/n); kappa: the labels against the key"
    )
    if result["agreement"]:
        lines += ["", "agreement (images both answered): kappa of labels, Spearman of quality"]
        for a in result["agreement"]:
            lines.append(
                f"  {a['rater_a']} / {a['rater_b']}: n={a['n_common']} "
                f"kappa={_num(a['kappa'], '.3f')} agree={_pct(a['percent_agreement'])} "
                f"rho={_num(a['quality_spearman'], '.3f')}"
            )
    if result["correlations"]:
        lines += [
            "",
            "Pearson r (p) of synthetic-image metrics with quality (lbp_vK: the LBPv element "
            "itself, as the study's Fig. 2; lbpv_vK: |V - rV|):",
        ]
        raters = list(dict.fromkeys(c["rater"] for c in result["correlations"]))
        lines.append(f"  {'metric':<11}" + "".join(f" {r[:18]:>20}" for r in raters))
        by_metric: dict[str, dict[str, dict]] = defaultdict(dict)
        for c in result["correlations"]:
            by_metric[c["metric"]][c["rater"]] = c
        for metric, cells in by_metric.items():
            text = [
                "undefined"
                if cells[r]["r"] is None
                else f"{cells[r]['r']:+.3f} ({cells[r]['p']:.2g})"
                for r in raters
            ]
            lines.append(f"  {metric:<11}" + "".join(f" {t:>20}" for t in text))
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    if result.get("regression_plot"):
        lines.append(f"wrote {result['regression_plot']}")
    return "\n".join(lines)
