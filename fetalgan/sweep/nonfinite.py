"""A trial whose loss turned non-finite fails once, without Tune's retries.

Tune (2.60) retries every trial error up to ``FailureConfig(max_failures)`` times, from the
trial's last checkpoint and RNG state, and has no error class it does not retry
(``Trial.should_recover`` only counts failures). A diverged trial would diverge again the same
way, so: the trainable writes a marker (:func:`marker`, in the experiment directory on the
shared storage, named after the trial) before the
``FloatingPointError`` leaves it (:func:`record`); the driver's :class:`NoRetryAfterNonFinite`
callback, at the start of each step of Tune's loop, sets such a trial's ``max_failures`` to 0
and acknowledges (:data:`SEEN`); the trainable raises once it sees that, so the error ends
the trial (ERROR in Tune, FAILED in MLflow). Should no acknowledgement come (a driver of an
older sweep), a restart fails at once, before loading anything (:func:`refuse_restart`).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from ray import tune

MARKERS = "nonfinite"  # in the experiment dir: TRIAL_ID.txt (the message), TRIAL_ID.seen
WAIT_S = 30.0  # how long the trainable waits for the driver's acknowledgement


def marker(exp_dir: str | Path, trial_id: str) -> Path:
    """Where trial ``trial_id`` records its non-finite loss; ``.seen`` beside it is the
    driver's acknowledgement."""
    return Path(exp_dir) / MARKERS / f"{trial_id}.txt"


def diverged(error: BaseException) -> str | None:
    """The non-finite-loss message of ``error`` (also when a data-parallel worker raised it
    and Ray Train wrapped it), else None."""
    if isinstance(error, FloatingPointError):
        return str(error)
    found = re.search(r"FloatingPointError: (non-finite loss[^\n]*)", str(error))
    return found.group(1) if found else None


def record(path: Path, error: BaseException) -> None:
    """Mark the trial as diverged when ``error`` is a non-finite loss, and wait (at most
    :data:`WAIT_S`) until the driver has seen it, so the error that follows is not retried."""
    message = diverged(error)
    if message is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(message + "\n")
    deadline = time.monotonic() + WAIT_S
    while not path.with_suffix(".seen").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)


def refuse_restart(path: Path) -> None:
    """A restart of a diverged trial ends at once with the same error."""
    if path.is_file():
        raise FloatingPointError(
            f"{path.read_text().strip()} (not retried: it diverged before, and a restart "
            "from the same checkpoint would again)"
        )


class NoRetryAfterNonFinite(tune.Callback):
    """Driver side: a trial that wrote its :func:`marker` gets no more restarts."""

    def __init__(self, exp_dir: str):
        self.exp_dir = exp_dir

    def on_step_begin(self, iteration, trials, **info):
        for trial in trials:
            path = marker(self.exp_dir, trial.trial_id)
            if path.is_file() and not path.with_suffix(".seen").is_file():
                trial.max_failures = 0
                path.with_suffix(".seen").touch()
