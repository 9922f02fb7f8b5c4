"""``fetalgan.figures`` on small hand-made data: each figure is a PNG of the documented pixel
size with something drawn on it, and input with nothing to draw writes nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fetalgan import figures
from fetalgan.images import read_grey

FID = {"a": [(1, 300.0), (2, 150.0), (3, 90.0)], "b": [(1, 280.0), (2, 200.0)]}
KID = {"a": [(1, 0.3), (2, 0.15), (3, 0.09)], "b": [(1, 0.28), (2, 0.2)]}


def _drawn(path) -> np.ndarray:
    """The PNG as (H, W) uint8 grey, checked to be a PNG with more than a blank page."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = read_grey(path)
    assert (image < 128).sum() > 1000, "nothing dark drawn"
    return image


def _curves_size(panels: int, legend_entries: int) -> tuple[int, int]:
    rows = math.ceil(legend_entries / figures.LEGEND_COLUMNS)
    return (
        figures.CURVES_PANEL_PX[1] + figures.LEGEND_ROW_PX * rows,
        figures.CURVES_PANEL_PX[0] * panels,
    )


def test_metric_curves_one_panel_per_metric(tmp_path):
    path = figures.metric_curves(
        {"FID": FID, "KID": KID},
        tmp_path / "curves.png",
        ends={"a": "completed", "b": "stopped"},
        highlight="a",
        title="demo: learning curves",
    )
    assert path == tmp_path / "curves.png"
    # legend: two runs and two end markers
    assert _drawn(path).shape == _curves_size(panels=2, legend_entries=4) == (460, 1240)


def test_metric_curves_many_runs_have_no_per_run_legend(tmp_path):
    runs = {f"run{k}": [(1, 100.0 + k), (2, 50.0 + k)] for k in range(20)}
    path = figures.metric_curves(
        {"FID": runs}, tmp_path / "c.png", ends=dict.fromkeys(runs, "failed")
    )
    assert _drawn(path).shape == _curves_size(panels=1, legend_entries=1)


def test_metric_curves_skip_what_cannot_be_drawn(tmp_path):
    # KID has only non-finite values and run "c" no points: one panel, legend of a and b only
    path = figures.metric_curves(
        {"FID": {**FID, "c": []}, "KID": {"a": [(1, math.nan)], "b": [(1, math.inf)]}},
        tmp_path / "c.png",
    )
    assert _drawn(path).shape == _curves_size(panels=1, legend_entries=2)


@pytest.mark.parametrize(
    "panels",
    [{}, {"FID": {}}, {"FID": {"a": []}}, {"FID": {"a": [(1, math.nan)]}, "KID": {"b": []}}],
)
def test_metric_curves_without_points_write_nothing(tmp_path, panels):
    assert figures.metric_curves(panels, tmp_path / "c.png") is None
    assert not (tmp_path / "c.png").exists()


def test_metric_curves_name_the_valid_end_states(tmp_path):
    with pytest.raises(ValueError, match="'finished'.*completed.*stopped.*failed.*running"):
        figures.metric_curves({"FID": FID}, tmp_path / "c.png", ends={"a": "finished"})


@pytest.mark.parametrize(
    ("n_params", "shape"),
    [(1, (320, 360)), (3, (320, 1080)), (5, (640, 1440)), (11, (640, 1440))],  # at most 8 panels
)
def test_metric_vs_hyperparams_one_panel_per_param(tmp_path, n_params, shape):
    values = [120.0, 80.0, 95.0, math.nan]
    kinds = [
        [1e-4, 1e-3, 1e-2, 1e-5],  # numeric, > 30x: log axis
        [100, 300, 500, 999],
        ["dcgan", "ddpm", "dcgan", "tbgan"],  # text: one tick each
        [True, False, True, None],  # bools and None are categories too
    ]
    params = {f"p{k}": kinds[k % len(kinds)] for k in range(n_params)}
    path = figures.metric_vs_hyperparams(
        params, values, tmp_path / "h.png", metric="fid", completed=[True, False, True, True]
    )
    assert path == tmp_path / "h.png"
    assert _drawn(path).shape == shape


@pytest.mark.parametrize(
    ("params", "values"),
    [({}, [1.0, 2.0]), ({"lr_g": [1e-4, 1e-3]}, [math.nan, math.inf]), ({"lr_g": []}, [])],
)
def test_metric_vs_hyperparams_without_points_write_nothing(tmp_path, params, values):
    assert figures.metric_vs_hyperparams(params, values, tmp_path / "h.png", metric="fid") is None
    assert not (tmp_path / "h.png").exists()


def test_metric_vs_hyperparams_columns_match_the_values(tmp_path):
    with pytest.raises(ValueError, match="lr_g: 1 values for 2 runs"):
        figures.metric_vs_hyperparams(
            {"lr_g": [1e-4]}, [80.0, 90.0], tmp_path / "h.png", metric="fid"
        )
    with pytest.raises(ValueError, match="completed: 3 values for 2 runs"):
        figures.metric_vs_hyperparams(
            {"lr_g": [1e-4, 1e-3]}, [80.0, 90.0], tmp_path / "h.png", metric="fid",
            completed=[True, True, False],
        )  # fmt: skip
