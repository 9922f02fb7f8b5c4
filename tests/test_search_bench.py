"""The search-efficiency bench's table (bench/search_efficiency.py): searches are compared with
the grid seed by seed, and the "vs grid" figure comes with how far resampling the seeds moves
it. Runs no sweep."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench():
    path = REPO / "bench/search_efficiency.py"
    spec = importlib.util.spec_from_file_location("search_efficiency", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(method, seed, fid, epochs=100):
    return {
        "method": method,
        "seed": seed,
        "fid": fid,
        "lowest_fid": fid,
        "chosen": {},
        "trials": 12,
        "epochs": epochs,
        "wall_s": 1.0,
    }


def test_searches_are_paired_with_the_grid_by_seed():
    bench = _bench()
    grid = {0: 0.04, 1: 0.02, 2: 0.03, 3: 0.05}
    rows = [_row("grid", s, f, 768) for s, f in grid.items()]
    # twice the grid on every seed, listed out of order, one seed the grid lacks
    rows += [_row("search", s, 2 * grid[s]) for s in (3, 1, 0, 2)] + [_row("search", 9, 0.001)]
    own, paired_grid = bench.paired(rows, "search")
    assert own == [0.08, 0.04, 0.06, 0.10] and paired_grid == [0.04, 0.02, 0.03, 0.05]
    assert bench.ratio_interval(own, paired_grid) == pytest.approx((1.0, 1.0))
    spread_out = [0.02, 0.04, 0.06, 0.20]  # half the grid on one seed, four times on another
    low, high = bench.ratio_interval(spread_out, paired_grid)
    assert low < 0 < high


def test_merged_runs_make_the_table(tmp_path):
    """``--seeds 0 --merge``: no sweep, the table from earlier runs, a search row per method
    with how many seeds came within 5 % of the grid."""
    grid = [_row("grid", s, 0.04, 768) for s in range(3)]
    search = [_row("optuna_asha", 0, 0.041), _row("optuna_asha", 1, 0.03)]
    search.append(_row("optuna_asha", 2, 0.08))
    files = []
    for name, runs in (("grid", grid), ("search", search)):
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps({"runs": runs}))
    out = subprocess.run(
        [sys.executable, str(REPO / "bench/search_efficiency.py"), "--seeds", "0", "--merge"]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    row = next(line for line in out.splitlines() if line.startswith("| optuna_asha"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2].startswith("0.0410 (0.0300–0.0800)")
    assert cells[3] == "+2.5%"
    assert cells[5] == "2 of 3"
    assert cells[8] == "13%"  # 100 of 768 epochs


def test_early_verdicts_say_whether_a_rung_would_have_kept_the_eventual_best(tmp_path):
    """Four grid trials; the one that ends best is last at epoch 4 and first from epoch 8:
    a rung at 4 keeping the top quarter would have cut it, one at 8 keeps it."""
    bench = _bench()
    curves = {
        "a": {4: 1.0, 8: 0.9, 12: 0.5, 16: 0.40},
        "b": {4: 2.0, 8: 0.8, 12: 0.6, 16: 0.50},
        "c": {4: 3.0, 8: 0.7, 12: 0.7, 16: 0.60},
        "winner": {4: 4.0, 8: 0.1, 12: 0.2, 16: 0.05},
    }
    for name, curve in curves.items():
        trial = tmp_path / f"trial_{name}"
        trial.mkdir()
        lines = [json.dumps({"epoch": e, "fid": f, "loss_g": 1.0}) for e, f in curve.items()]
        lines.insert(1, json.dumps({"epoch": 5, "loss_g": 1.0}))  # a report without FID
        (trial / "result.json").write_text("\n".join(lines) + "\n")
    verdicts = bench.early_verdicts(tmp_path, settle=12)
    assert list(verdicts) == [4, 8]
    assert not verdicts[4]["kept"] and verdicts[8]["kept"]
    # ends (lowest from epoch 12) 0.4 0.5 0.6 0.05 rank 2 3 4 1 against 1 2 3 4 at epoch 4
    assert verdicts[4]["rho"] == pytest.approx(1 - 6 * (1 + 1 + 1 + 9) / (4 * 15))
