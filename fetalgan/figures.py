"""The report's figures: matplotlib (Agg backend) drawings of plain data, written as PNG.

No MLflow and no sweep records here: callers hand over numbers and labels (``fetalgan report``
reads them out of the tracking store). Every function returns the PNG's path, or None (and
writes nothing) when its input has nothing to draw.

Sizes are fixed in pixels at :data:`DPI` so a page can lay the figures out:

- :func:`metric_curves`: ``CURVES_PANEL_PX`` wide per panel, ``CURVES_HEIGHT_PX`` plus
  ``LEGEND_ROW_PX`` per legend row (``LEGEND_COLUMNS`` entries a row) high;
- :func:`metric_vs_hyperparams`: ``PARAM_PANEL_PX`` per panel, at most ``PARAM_COLUMNS``
  panels a row and ``MAX_PARAM_PANELS`` panels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DPI = 100
CURVES_PANEL_PX = (620, 420)  # (width, height) of one learning-curve panel, legend excluded
LEGEND_ROW_PX = 20
LEGEND_COLUMNS = 3
MAX_NAMED_LINES = 15  # more lines than this: colours only, no per-line legend entries
PARAM_PANEL_PX = (360, 320)  # (width, height) of one metric-vs-hyperparameter panel
PARAM_COLUMNS = 4
MAX_PARAM_PANELS = 8
# How a line's last point is drawn, by how the run ended: (marker, legend text).
END_MARKERS = {
    "completed": ("o", "completed"),
    "stopped": ("X", "stopped early (ASHA)"),
    "failed": ("s", "failed / killed"),
    "running": (">", "still running"),
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _use_log(values: Sequence[float], factor: float = 30.0) -> bool:
    """A log axis for all-positive values spanning more than ``factor``."""
    positive = [v for v in values if v > 0]
    return (
        len(positive) == len(values) and len(values) > 1 and max(positive) / min(positive) > factor
    )


def _inches(width_px: float, height_px: float) -> tuple[float, float]:
    return width_px / DPI, height_px / DPI


def metric_curves(
    panels: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
    path: str | Path,
    *,
    ends: Mapping[str, str] | None = None,
    highlight: str | None = None,
    title: str = "",
    events: Mapping[str, Sequence[int]] | None = None,
    event_label: str = "",
    as_steps: bool = False,
) -> Path | None:
    """Metric against epoch, one panel per metric and one line per run, in one PNG.

    ``panels``: y-axis label (``"FID"``) -> {run label -> ``[(epoch, value), ...]``}; the
    same run label has the same colour in every panel; non-finite values are skipped.
    ``ends``: run label -> how the run ended (a key of :data:`END_MARKERS`: completed,
    stopped, failed, running); its last point gets that marker, and the legend (below the
    panels) explains the markers used. ``highlight``: the run label drawn thick (the best run).
    ``events``: run label -> epochs where something happened to the run (PBT's exploits),
    each marked on its line (with ``as_steps`` where the value after it starts), explained by
    ``event_label``.
    ``as_steps``: values that hold between points (a schedule: the value logged at an epoch was
    in force since the previous point) drawn as steps, not slopes.

    Returns ``path``; None (nothing written) when no panel has a finite point. ValueError for an
    ``ends`` state not in :data:`END_MARKERS`.
    """
    ends = dict(ends or {})
    unknown = sorted({s for s in ends.values() if s not in END_MARKERS})
    if unknown:
        raise ValueError(f"ends: unknown state(s) {unknown}; expected one of {list(END_MARKERS)}")
    drawn = {
        label: {
            run: sorted((int(s), float(v)) for s, v in points if math.isfinite(v))
            for run, points in runs.items()
        }
        for label, runs in panels.items()
    }
    drawn = {
        label: {run: points for run, points in runs.items() if points}
        for label, runs in drawn.items()
    }
    drawn = {label: runs for label, runs in drawn.items() if runs}
    if not drawn:
        return None
    plt = _pyplot()
    runs = list(dict.fromkeys(run for runs in drawn.values() for run in runs))
    named = len(runs) <= MAX_NAMED_LINES
    states = [s for s in END_MARKERS if any(ends.get(run) == s for run in runs)]
    legend_rows = math.ceil(((len(runs) if named else 0) + len(states)) / LEGEND_COLUMNS)
    width_px = CURVES_PANEL_PX[0] * len(drawn)
    height_px = CURVES_PANEL_PX[1] + LEGEND_ROW_PX * legend_rows
    fig, axes = plt.subplots(
        1, len(drawn), figsize=_inches(width_px, height_px), dpi=DPI, squeeze=False
    )
    colours = plt.get_cmap("tab20" if len(runs) > 10 else "tab10")
    colour_of = {run: colours(k % colours.N) for k, run in enumerate(runs)}
    handles = {}
    for ax, (label, lines) in zip(axes[0], drawn.items(), strict=True):
        all_values = []
        for run, points in lines.items():
            steps, values = zip(*points, strict=True)
            all_values += values
            thick = run == highlight
            (line,) = ax.plot(steps, values, color=colour_of[run], lw=2.4 if thick else 1.2,
                              zorder=3 if thick else 2,
                              drawstyle="steps-pre" if as_steps else "default")  # fmt: skip
            handles.setdefault(run, line)
            for epoch in (events or {}).get(run, ()):
                if as_steps:  # a schedule: on the step where the new value starts
                    at = [y for x, y in points if x > epoch][:1]
                else:  # a curve: on its point at the event, where it goes on from the new state
                    at = [y for x, y in points if x <= epoch][-1:]
                if at:
                    ax.scatter([epoch], at, marker="v", s=40, color="black", zorder=5)
            if run in ends:
                marker, _ = END_MARKERS[ends[run]]
                stop = marker == "X"  # black and larger: the ASHA stops are what one looks for
                ax.scatter([steps[-1]], [values[-1]], marker=marker, s=70 if stop else 36,
                           color="black" if stop else colour_of[run], zorder=4)  # fmt: skip
        if _use_log(all_values, 2.0 if as_steps else 30.0):  # schedules: rates span decades
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    entries = dict(handles) if named else {}
    if events and any(events.values()) and event_label:
        entries[event_label] = plt.Line2D([], [], ls="", marker="v", color="black")
    for state in states:
        marker, text = END_MARKERS[state]
        entries[text] = plt.Line2D([], [], ls="", marker=marker, color="black")
    if entries:
        fig.legend(entries.values(), entries.keys(), loc="lower center", ncol=LEGEND_COLUMNS,
                   fontsize=7, frameon=False)  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=10)
    legend_fraction = (LEGEND_ROW_PX * legend_rows + 15) / height_px
    fig.tight_layout(rect=(0, legend_fraction, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def metric_vs_hyperparams(
    params: Mapping[str, Sequence[Any]],
    values: Sequence[float],
    path: str | Path,
    *,
    metric: str,
    completed: Sequence[bool] | None = None,
    title: str | None = None,
) -> Path | None:
    """One scatter panel per hyperparameter: ``values`` (the y axis, labelled ``metric``)
    against that hyperparameter's value, one point per run.

    ``params``: hyperparameter -> one value per run (numbers, text, bools, None), each as long
    as ``values``; the first :data:`MAX_PARAM_PANELS` are drawn. Numeric columns get a numeric
    (log when the values span > 30x) axis, the others one tick per distinct value.
    ``completed``: per run, whether it ran all its epochs; the others are drawn hollow red.
    Runs whose value is not finite are left out.

    Returns ``path``; None (nothing written) when ``params`` is empty or no value is finite.
    ValueError when a column's length differs from ``values``'.
    """
    n = len(values)
    completed = [True] * n if completed is None else list(completed)
    for key, column in {**params, "completed": completed}.items():
        if len(column) != n:
            raise ValueError(f"{key}: {len(column)} values for {n} runs")
    keep = [i for i, v in enumerate(values) if math.isfinite(v)]
    keys = list(params)[:MAX_PARAM_PANELS]
    if not keys or not keep:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    cols = min(PARAM_COLUMNS, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=_inches(PARAM_PANEL_PX[0] * cols, PARAM_PANEL_PX[1] * rows),
        dpi=DPI,
        squeeze=False,
    )
    for ax in axes.ravel()[len(keys) :]:
        ax.axis("off")
    ys = [float(values[i]) for i in keep]
    done = [bool(completed[i]) for i in keep]
    for ax, key in zip(axes.ravel(), keys, strict=False):
        xs = [params[key][i] for i in keep]
        numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
        if not numeric:
            labels = sorted({str(x) for x in xs})
            xs = [labels.index(str(x)) for x in xs]
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
        elif _use_log([float(x) for x in xs]):
            ax.set_xscale("log")
        else:  # few ticks, in scientific notation for small learning rates
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        ax.scatter([x for x, d in zip(xs, done, strict=True) if d],
                   [y for y, d in zip(ys, done, strict=True) if d], color="tab:blue", s=28)  # fmt: skip
        ax.scatter([x for x, d in zip(xs, done, strict=True) if not d],
                   [y for y, d in zip(ys, done, strict=True) if not d], facecolors="none",
                   edgecolors="tab:red", s=28)  # fmt: skip
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
