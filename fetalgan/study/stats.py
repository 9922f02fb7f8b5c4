"""The statistical tests of fetalgan's studies, pure functions over plain numbers: agreement of
two raters' labels (Cohen's kappa), rank and linear correlation (Spearman, Pearson) for the
reader study (:mod:`fetalgan.study.analyse`), and the difference of a metric across groups
(Kruskal-Wallis and one-way ANOVA) for the sweep report's test across data sizes (the DCGAN
study's "did not differ significantly with p > 0.05"). scipy is imported by the functions
that use it."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fetalgan.evaluation import is_number
from fetalgan.metrics.image import LBPV_KEYS

if TYPE_CHECKING:
    from fetalgan.report.records import RunRecord

# Metrics tested for a difference across data sizes, in the study's order (FID, MI, PSNR, LBPv).
SIGNIFICANCE_METRICS = (
    "fid",
    "kid_mean",
    "mi_normalised",
    "mi_bits",
    "psnr",
    "ssim",
    *LBPV_KEYS,
)
ALPHA = 0.05  # the study's threshold ("did not differ significantly with p > 0.05")


# --------------------------------------------------------------------------------------------
# Two raters, two measures
# --------------------------------------------------------------------------------------------


def cohen_kappa(labels_a: list[str], labels_b: list[str]) -> float | None:
    """Cohen's kappa of two raters' labels of the same items: ``(p_o - p_e) / (1 - p_e)`` with
    ``p_o`` the observed agreement and ``p_e = sum_k p_a(k) p_b(k)`` the chance agreement.
    None when undefined (no items, or ``p_e = 1``: both gave one and the same label to all)."""
    if len(labels_a) != len(labels_b):
        raise ValueError(f"kappa: {len(labels_a)} labels against {len(labels_b)}")
    n = len(labels_a)
    if n == 0:
        return None
    p_o = sum(a == b for a, b in zip(labels_a, labels_b, strict=True)) / n
    categories = set(labels_a) | set(labels_b)
    p_e = sum((labels_a.count(k) / n) * (labels_b.count(k) / n) for k in categories)
    if math.isclose(p_e, 1.0):
        return None
    return (p_o - p_e) / (1 - p_e)


def _is_constant(values) -> bool:
    return len(set(np.asarray(values, dtype=float).tolist())) < 2


def spearman(x, y) -> tuple[float | None, float | None]:
    """Spearman's rho and p; (None, None) with fewer than 3 pairs or a constant side."""
    from scipy.stats import spearmanr

    if len(x) < 3 or _is_constant(x) or _is_constant(y):
        return None, None
    result = spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


def pearson(x, y) -> tuple[float | None, float | None]:
    """Pearson r and two-sided p; (None, None) with fewer than 3 pairs or a constant side."""
    from scipy.stats import pearsonr

    if len(x) < 3 or _is_constant(x) or _is_constant(y):
        return None, None
    result = pearsonr(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return float(result.statistic), float(result.pvalue)


# --------------------------------------------------------------------------------------------
# A metric across groups (the sweep report's data sizes)
# --------------------------------------------------------------------------------------------


def sort_key(value: Any) -> tuple:
    """Numbers in order before text (a group or table key: a data size, an epoch, a name)."""
    return (0, value, "") if isinstance(value, int | float) else (1, 0, str(value))


def across_groups(groups: dict[Any, list[float]]) -> dict[str, Any]:
    """Kruskal-Wallis H and one-way ANOVA F across ``groups`` (group -> values), with their
    p-values (``scipy.stats.kruskal``, ``scipy.stats.f_oneway``) and N per group. A test
    that cannot be computed (fewer than two groups, no spread, no degrees of freedom within
    groups) gives NaN for its figures."""
    import warnings

    from scipy import stats

    samples = {g: [v for v in values if is_number(v)] for g, values in groups.items()}
    samples = {g: v for g, v in samples.items() if v}
    out: dict[str, Any] = {
        "n": {g: len(v) for g, v in sorted(samples.items(), key=lambda kv: sort_key(kv[0]))},
        "h": math.nan, "p_h": math.nan, "f": math.nan, "p_f": math.nan,
    }  # fmt: skip
    if len(samples) < 2:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant or single-value groups: NaN, said above
        try:
            h = stats.kruskal(*samples.values())
            out["h"], out["p_h"] = float(h.statistic), float(h.pvalue)
        except ValueError:  # all values identical
            pass
        if sum(len(v) for v in samples.values()) > len(samples):
            f = stats.f_oneway(*samples.values())
            out["f"], out["p_f"] = float(f.statistic), float(f.pvalue)
    return out


def significance_table(
    trials: Sequence[RunRecord],
    varying: list[str],
    metrics: list[str],
    *,
    epochs: list[int] | None = None,
) -> dict | None:
    """Per metric, a difference across ``data.size`` tested with Kruskal-Wallis and one-way
    ANOVA (:func:`across_groups`): one row pooled over the evaluation epochs (each trial's
    value at every evaluation epoch in ``epochs``, all when None, one observation each), then
    one row per evaluation epoch. None when ``data.size`` does not vary. ``trials``: a
    sweep's (:class:`fetalgan.report.records.RunRecord`); the table is the report's (header,
    rows of cells)."""
    if "data.size" not in varying:
        return None
    header = ["metric", "epochs", "N per data size", "Kruskal-Wallis H", "p (H)",
              "ANOVA F", "p (F)", f"differ at p < {ALPHA}?"]  # fmt: skip
    rows = []
    for metric in [m for m in SIGNIFICANCE_METRICS if m in metrics]:
        by_epoch: dict[int, dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
        for trial in trials:
            size = trial.param("data.size")
            for step, value in trial.series(metric):
                if not epochs or step in epochs:
                    by_epoch[step][size].append(value)
        if not by_epoch:
            continue
        pooled: dict[Any, list[float]] = defaultdict(list)
        for groups in by_epoch.values():
            for size, values in groups.items():
                pooled[size] += values
        for label, groups in [("pooled", pooled), *sorted(by_epoch.items())]:
            test = across_groups(groups)
            ps = [p for p in (test["p_h"], test["p_f"]) if not math.isnan(p)]
            verdict = "—" if not ps else ("yes" if min(ps) < ALPHA else "no")
            sizes = ", ".join(f"{g}: {n}" for g, n in test["n"].items())
            rows.append(
                {"run_id": "", "cells": [metric, label, sizes, test["h"], test["p_h"],
                                         test["f"], test["p_f"], verdict]}
            )  # fmt: skip
    return {"header": header, "rows": rows}
