"""The names of what an evaluation reports, defined once (no fetalgan import, no torch).

``EVAL_METRICS`` are what ``eval_metrics`` may list; each produces values named after it:
fid; kid_mean, kid_std; lbpv_l1, lbpv_l2, lbpv_v8...; mi_normalised, mi_bits; psnr; ssim.
:func:`metric_source` maps a reported name back to the entry that produces it. The config
checks a sweep's ``metric`` with it, :mod:`fetalgan.evaluation` and the selection use it.
"""

from __future__ import annotations

EVAL_METRICS = ("fid", "kid", "lbpv", "mi", "psnr", "ssim")
LOSS_METRICS = ("loss_g", "loss_d")


def metric_source(metric: str) -> str | None:
    """The ``eval_metrics`` entry that produces ``metric``; None for a loss (always there).
    ValueError for a key no evaluation reports."""
    if metric in LOSS_METRICS or metric.startswith("loss_"):
        return None
    if metric == "mi":  # the trainer logs MI under names that say which one it is
        raise ValueError(
            "metric: 'mi' is not a logged value; expected mi_normalised (scikit-image's "
            "normalised MI, 1..2, as `fetalgan evaluate` reports mi) or mi_bits (raw MI in bits)"
        )
    for source in EVAL_METRICS:  # each produces values named after it: kid_mean, lbpv_l1
        if metric == source or metric.startswith(source + "_"):
            return source
    raise ValueError(
        f"metric: unknown {metric!r}; expected fid, kid_mean, lbpv_l1, mi_normalised, mi_bits, "
        "psnr, ssim, loss_g, loss_d or another key a trial reports "
        "(fid*, kid*, lbpv*, mi_*, psnr*, ssim*, loss_*)"
    )
