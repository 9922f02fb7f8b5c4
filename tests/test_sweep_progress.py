"""What a running sweep prints: the trial table and its counts as pure functions (no Ray), and
how ``fetalgan sweep``'s -v / --log-level set the logging level and the sweep's verbosity."""

import argparse
import logging

from fetalgan.cli import build_parser, log_level
from fetalgan.evaluation import Objective
from fetalgan.sweep.progress import TrialRow, counts_line, trial_table


def row(trial_id, status, epoch, latest, best, **sampled):
    return TrialRow(trial_id, status, epoch, 50, latest, best, sampled)


ROWS = [
    row("c", "stopped", 10, 7.277, 7.277, lr_g=0.000461243, lr_d=0.000425679),
    row("a", "running", 30, 0.5, 0.4015, lr_g=0.000428005, lr_d=0.000539035),
    row("d", "pending", None, None, None, lr_g=0.0002307, lr_d=0.0002187),
    row("b", "running", 20, 3.162, 3.162, lr_g=0.000359829, lr_d=0.000489663),
]


def test_table_ranks_by_the_best_value_and_aligns_columns():
    lines = trial_table(ROWS, Objective("fid", "min"))
    assert lines == [
        "  trial  status   epoch  fid    best fid  lr_g      lr_d",
        "  a      running  30/50  0.5    0.4015    0.000428  0.000539",
        "  b      running  20/50  3.162  3.162     0.00036   0.00049",
        "  c      stopped  10/50  7.277  7.277     0.000461  0.000426",
        "  d      pending  -/50   -      -         0.000231  0.000219",
    ]  # the latest FID of a (0.5) is not its best: ranked by the best


def test_table_for_a_metric_to_maximise_and_a_limit():
    lines = trial_table(ROWS, Objective("fid", "max"), limit=2)
    assert [line.split()[0] for line in lines[1:3]] == ["c", "b"]  # highest best first
    assert lines[-1] == "  ... and 2 more"
    assert "best fid" in lines[0]


def test_counts_say_what_is_running_and_what_is_to_come():
    assert counts_line(ROWS, 6) == "2 running, 1 pending, 1 stopped early, 2 to start"
    done = [row("a", "finished", 50, 1.0, 1.0), row("b", "failed", 3, None, None)]
    assert counts_line(done, 2) == "1 finished, 1 failed"
    assert counts_line([], 0) == "no trial yet"


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["sweep", "sweeps/demo.yaml", *argv])


def test_verbosity_flags_set_the_logging_level():
    assert log_level(_args()) == logging.WARNING
    assert log_level(_args("-v")) == logging.INFO
    assert log_level(_args("-vv")) == logging.DEBUG
    assert log_level(_args("--log-level", "ERROR")) == logging.ERROR
    assert log_level(_args("-v", "--log-level", "WARNING")) == logging.WARNING  # named wins
    assert log_level(build_parser().parse_args(["best", "demo"])) == logging.WARNING


def test_sweep_passes_its_verbosity_to_run_sweep(monkeypatch):
    """Default: fetalgan's own progress (1); -v / --log-level INFO: Ray's output too (2);
    -vv / DEBUG: Tune at its most verbose (3)."""
    import fetalgan.sweep

    seen = []

    def fake_run_sweep(path, **kwargs):
        seen.append(kwargs["verbose"])
        return {"interrupted": False, "best": {"trial_id": "a"}}

    monkeypatch.setattr(fetalgan.sweep, "run_sweep", fake_run_sweep)
    from fetalgan.cli import main

    for argv, verbose in (([], 1), (["-v"], 2), (["--log-level", "INFO"], 2), (["-vv"], 3)):
        assert main(["sweep", "sweeps/demo.yaml", *argv]) == 0
        assert seen[-1] == verbose, argv
