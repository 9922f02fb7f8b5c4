"""Interleaved timing for the benchmarks: the reference and fetalgan run alternately
(A B A B ..., ``pairs`` rounds), so load that comes and goes on a shared machine hits both
sides of a pair alike. Each pair gives one ratio; a benchmark reports their median and range.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """``(seconds, result)`` of one call."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def interleave(
    sides: dict[str, Callable[[], object]], pairs: int, *, show: bool = True
) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Run every side once per round, in the given order, for ``pairs`` rounds; the seconds of
    each run by side, and each side's last result."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    results: dict[str, object] = {}
    for round_ in range(pairs):
        for name, fn in sides.items():
            seconds, results[name] = timed(fn)
            times[name].append(seconds)
            if show:
                print(f"    pair {round_ + 1} {name:32s} {seconds:8.3f} s", flush=True)
    return times, results


def ratios(reference: list[float], ours: list[float]) -> list[float]:
    """Per pair: reference time / our time (> 1: we are faster)."""
    return [r / o for r, o in zip(reference, ours, strict=True)]


def summary(values: list[float]) -> str:
    """``2.31x (range 2.10-2.52, 3 pairs)``: the median ratio and its range."""
    return (
        f"{statistics.median(values):.2f}x (range {min(values):.2f}-{max(values):.2f}, "
        f"{len(values)} pairs)"
    )
