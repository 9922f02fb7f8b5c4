"""`fetalgan sweep FILE --resume` keeps the settings the sweep started with: a sweep file edited
since then is refused, naming each changed key; `--set` stays allowed, and a value that differs
from the starting one is shown. (Resuming itself: tests/test_sweep.py.)"""

from __future__ import annotations

import pytest
import yaml

from fetalgan.config import load_sweep, to_dict
from fetalgan.sweep.experiment import SAVED_FILE, SAVED_SWEEP, check_unedited
from fetalgan.sweep.run import RunOptions, run_sweep

SWEEP = {
    "name": "edits",
    "num_samples": 2,
    "search": {"kind": "random"},
    "base": {"resolution": 32, "lr_g": 0.001, "data": {"kind": "phantom", "size": 8}},
    "space": {"lr_d": {"loguniform": [1.0e-4, 1.0e-3]}},
}


@pytest.fixture
def started(tmp_path):
    """A sweep file and the experiment directory its first run left (what run_sweep keeps)."""
    path = tmp_path / "edits.yaml"
    path.write_text(yaml.safe_dump(SWEEP))
    exp_dir = tmp_path / "rr" / "edits"
    exp_dir.mkdir(parents=True)
    (exp_dir / SAVED_SWEEP).write_text(yaml.safe_dump(to_dict(load_sweep(path))))
    (exp_dir / SAVED_FILE).write_text(path.read_text())
    return path, exp_dir


def test_an_edited_sweep_file_is_refused_naming_the_keys(started):
    path, exp_dir = started
    edited = yaml.safe_load(path.read_text())
    edited["num_samples"] = 8
    edited["base"]["lr_g"] = 0.01
    del edited["space"]
    path.write_text(yaml.safe_dump(edited))
    with pytest.raises(ValueError) as caught:
        run_sweep(path, resume=True, storage=exp_dir.parent, options=RunOptions(tracking=False))
    message = str(caught.value)
    assert message.startswith(f"{path}: edited since the sweep started")
    for change in ("base.lr_g: 0.001 -> 0.01", "num_samples: 2 -> 8", "space.lr_d.loguniform"):
        assert change in message, message
    assert "resolution" not in message  # unchanged keys are not listed


def test_set_on_resume_is_allowed_and_shown(started, capsys):
    path, exp_dir = started
    saved = load_sweep(exp_dir / SAVED_SWEEP)
    check_unedited(path, exp_dir, ["num_samples=8", "lr_g=0.001", "max_concurrent=1"], saved)
    out = capsys.readouterr().out
    assert "--set num_samples=8: the resumed sweep keeps num_samples = 2" in out
    assert "lr_g" not in out and "max_concurrent" not in out  # the same values: nothing to say


def test_an_unedited_file_resumes(started):
    path, exp_dir = started
    # Past the check, run_sweep looks for Tune's saved state (none in this fabricated dir).
    with pytest.raises(FileNotFoundError, match="no sweep to resume there"):
        run_sweep(path, resume=True, storage=exp_dir.parent, options=RunOptions(tracking=False))
