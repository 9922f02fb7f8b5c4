"""The report's test for a difference across data sizes (the DCGAN study's headline result),
in :mod:`fetalgan.study.stats`."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from fetalgan.report.records import RunRecord
from fetalgan.study.stats import across_groups, significance_table


def _trial(size: int, fid: list[tuple[int, float]], psnr: list[tuple[int, float]]) -> RunRecord:
    return RunRecord.from_run(
        {
            "run_id": f"r{size}-{fid[0][1]}",
            "run_name": f"size{size}",
            "status": "FINISHED",
            "tags": {},
            "params": {"data.size": str(size)},
            "history": {"fid": fid, "psnr": psnr},
        }
    )


# Two trials per data size (two seeds), evaluated at epochs 2 and 4.
TRIALS = [
    _trial(100, [(2, 310.0), (4, 250.0)], [(2, 11.0), (4, 11.4)]),
    _trial(100, [(2, 305.0), (4, 262.0)], [(2, 11.2), (4, 11.1)]),
    _trial(300, [(2, 280.0), (4, 240.0)], [(2, 11.3), (4, 11.6)]),
    _trial(300, [(2, 290.0), (4, 233.0)], [(2, 10.9), (4, 11.5)]),
    _trial(500, [(2, 270.0), (4, 221.0)], [(2, 11.1), (4, 11.8)]),
    _trial(500, [(2, 301.0), (4, 228.0)], [(2, 11.0), (4, 11.7)]),
]


def test_across_groups_equals_scipy():
    groups = {100: [3.1, 2.9, 3.6, 3.3], 300: [2.2, 2.8, 2.5], 500: [4.0, 3.7, 3.9, 4.4, 3.8]}
    got = across_groups(groups)
    h = stats.kruskal(*groups.values())
    f = stats.f_oneway(*groups.values())
    assert (got["h"], got["p_h"]) == (h.statistic, h.pvalue)
    assert (got["f"], got["p_f"]) == (f.statistic, f.pvalue)
    assert got["n"] == {100: 4, 300: 3, 500: 5}
    assert got["p_h"] < 0.05  # these groups do differ


def test_untestable_groups_give_nan_not_an_error():
    one_group = across_groups({100: [1.0, 2.0]})
    assert math.isnan(one_group["h"]) and math.isnan(one_group["f"])
    constant = across_groups({100: [1.0, 1.0], 300: [1.0, 1.0]})
    assert math.isnan(constant["h"]) and constant["n"] == {100: 2, 300: 2}
    single_values = across_groups({100: [1.0], 300: [2.0]})  # no degrees of freedom within
    assert math.isnan(single_values["f"])


def test_significance_table_pools_epochs_then_tests_each():
    table = significance_table(TRIALS, ["data.size", "seed"], ["fid", "psnr", "loss_g"])
    rows = [dict(zip(table["header"], r["cells"], strict=True)) for r in table["rows"]]
    assert [(r["metric"], r["epochs"]) for r in rows] == [
        ("fid", "pooled"), ("fid", 2), ("fid", 4), ("psnr", "pooled"), ("psnr", 2), ("psnr", 4),
    ]  # fmt: skip
    pooled_fid = {100: [310.0, 250.0, 305.0, 262.0], 300: [280.0, 240.0, 290.0, 233.0],
                  500: [270.0, 221.0, 301.0, 228.0]}  # fmt: skip
    h = stats.kruskal(*pooled_fid.values())
    f = stats.f_oneway(*pooled_fid.values())
    assert rows[0]["Kruskal-Wallis H"] == pytest.approx(h.statistic, rel=1e-12)
    assert rows[0]["p (H)"] == pytest.approx(h.pvalue, rel=1e-12)
    assert rows[0]["ANOVA F"] == pytest.approx(f.statistic, rel=1e-12)
    assert rows[0]["p (F)"] == pytest.approx(f.pvalue, rel=1e-12)
    assert rows[0]["N per data size"] == "100: 4, 300: 4, 500: 4"
    assert rows[1]["N per data size"] == "100: 2, 300: 2, 500: 2"
    at_4 = stats.kruskal([250.0, 262.0], [240.0, 233.0], [221.0, 228.0])
    assert rows[2]["p (H)"] == pytest.approx(at_4.pvalue, rel=1e-12)
    expected = "yes" if min(rows[5]["p (H)"], rows[5]["p (F)"]) < 0.05 else "no"
    assert rows[5]["differ at p < 0.05?"] == expected


def test_no_table_when_data_size_does_not_vary():
    assert significance_table(TRIALS, ["lr_g"], ["fid"]) is None
