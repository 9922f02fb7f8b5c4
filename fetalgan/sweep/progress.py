"""What a running sweep prints (the driver's Tune callback, in place of Ray's own output): every
``every_s`` seconds when something changed, a table of the trials (status, epoch, the latest
and the best value of the sweep's metric, the sampled values); a line when the scheduler stops
a trial early, when a trial fails (its one-line reason) or restarts from its checkpoint, and
when one finishes; the table once more at the end. Ray's own lines are ``fetalgan sweep -v``'s.

The table is :func:`trial_table` over plain :class:`TrialRow` values, tested without Ray.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ray import tune

from fetalgan.config import TRAIN_KEYS, SweepConfig, expected_trials
from fetalgan.evaluation import Objective, is_number
from fetalgan.sweep.callback import trial_error
from fetalgan.sweep.space import trial_config
from fetalgan.sweep.trainable import TrialSpec

TABLE_EVERY_S = 30.0  # at most one table per this many seconds, and only after a change
TABLE_ROWS = 20  # trials shown in a table (the best first); the rest are counted
# Tune's trial statuses as the table says them (TERMINATED: finished, or stopped early)
STATUS_WORDS = {"PENDING": "pending", "RUNNING": "running", "PAUSED": "paused", "ERROR": "failed"}


@dataclass
class TrialRow:
    """One trial as the table shows it."""

    trial_id: str
    status: str  # pending | running | paused | finished | stopped | failed
    epoch: int | None  # the epoch of its latest report (None: none yet)
    epochs: int  # the epochs it was configured to train
    latest: float | None  # the sweep's metric at its latest evaluation
    best: float | None  # its best value so far (``best_<metric>``)
    sampled: dict[str, object] = field(default_factory=dict)  # its sampled values


def _number(value: float | None) -> str:
    return f"{value:.4g}" if is_number(value) else "-"


def _value(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def trial_table(
    rows: list[TrialRow], objective: Objective, *, limit: int = TABLE_ROWS
) -> list[str]:
    """The trials as aligned text lines, best first (by ``best``; none yet: last), at most
    ``limit`` of them and a line counting the others. Columns: trial, status, epoch (of its
    configured epochs), the metric at the latest evaluation, the best so far, the sampled
    values."""
    sign = 1.0 if objective.mode == "min" else -1.0
    ranked = sorted(
        rows,
        key=lambda r: (0, sign * r.best, r.trial_id) if is_number(r.best) else (1, 0.0, r.trial_id),
    )
    keys = list(dict.fromkeys(k for r in rows for k in r.sampled))
    metric = objective.metric
    header = ["trial", "status", "epoch", metric, f"best {metric}", *keys]
    body = [
        [
            r.trial_id,
            r.status,
            f"{r.epoch if r.epoch is not None else '-'}/{r.epochs}",
            _number(r.latest),
            _number(r.best),
            *(_value(r.sampled[k]) if k in r.sampled else "-" for k in keys),
        ]
        for r in ranked[:limit]
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [header, *body]
    ]
    if len(ranked) > limit:
        lines.append(f"  ... and {len(ranked) - limit} more")
    return lines


def counts_line(rows: list[TrialRow], total: int) -> str:
    """``2 running, 1 stopped early, 1 to start``: the trials by status, in a fixed order."""
    words = {"stopped": "stopped early"}
    order = ("running", "pending", "paused", "finished", "stopped", "failed")
    counts = [(s, sum(r.status == s for r in rows)) for s in order]
    parts = [f"{n} {words.get(s, s)}" for s, n in counts if n]
    if total > len(rows):
        parts.append(f"{total - len(rows)} to start")
    return ", ".join(parts) or "no trial yet"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _when(trial) -> str:
    """``after epoch 20`` (its latest report), or ``before its first report``."""
    epoch = (trial.last_result or {}).get("epoch")
    return f"after epoch {epoch}" if epoch is not None else "before its first report"


def _traceback(trial) -> str:
    """Where the failed trial's traceback is kept: its ``error.txt`` in the sweep's storage
    (Tune copies it there from the driver's session folder, which does not outlive Ray)."""
    kept = Path(trial.path) / "error.txt" if trial.path else trial.error_file
    return f"; traceback in {kept}" if kept else ""


def say(text: str) -> None:
    print(f"fetalgan sweep: {text}", flush=True)


class SweepProgress(tune.Callback):
    """Prints the sweep's progress (see the module). ``cfg``: the sweep; ``spec``: its
    TrialSpec (each trial's epochs come from its config, built once); ``every_s``: the
    shortest time between two tables. Pickled with the experiment's RunConfig as its
    arguments only, like the tracking callback."""

    def __init__(self, cfg: SweepConfig, spec: TrialSpec, every_s: float = TABLE_EVERY_S):
        self.cfg = cfg
        self.spec = spec
        self.every_s = every_s
        self._init_runtime()

    def _init_runtime(self):
        self.epochs: dict[str, int] = {}  # trial id -> its configured epochs
        self.start = time.monotonic()
        self.shown = self.start  # when the last table was printed
        self.changed = False  # a trial reported or changed state since then
        self.exploits: dict[str, int] = {}  # PBT: trial id -> its exploits already told

    def __getstate__(self):
        return {"cfg": self.cfg, "spec": self.spec, "every_s": self.every_s}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_runtime()

    @property
    def objective(self) -> Objective:
        return self.spec.objective

    def epochs_of(self, trial) -> int:
        if trial.trial_id not in self.epochs:
            config = trial_config(self.spec.base, trial.config, self.spec.encoded)
            self.epochs[trial.trial_id] = config.epochs
        return self.epochs[trial.trial_id]

    def ended_early(self, trial) -> bool:
        """Its last report is before its last epoch (as tracking's ``stopped_early``)."""
        epoch = (trial.last_result or {}).get("epoch")
        return epoch is not None and epoch < self.epochs_of(trial)

    def row(self, trial) -> TrialRow:
        result = trial.last_result or {}
        epoch = result.get("epoch")
        epochs = self.epochs_of(trial)
        status = STATUS_WORDS.get(trial.status)
        if status is None:  # TERMINATED
            status = "stopped" if self.ended_early(trial) else "finished"
        return TrialRow(
            trial_id=trial.trial_id,
            status=status,
            epoch=int(epoch) if epoch is not None else None,
            epochs=epochs,
            latest=result.get(self.objective.metric),
            best=result.get(self.objective.best_key),
            sampled={k: v for k, v in trial.config.items() if k in TRAIN_KEYS},
        )

    def table(self, trials) -> None:
        rows = [self.row(t) for t in trials]
        elapsed = _clock(time.monotonic() - self.start)
        lines = [
            f"fetalgan sweep {self.cfg.name}, {elapsed}: {counts_line(rows, self._total())}",
            *trial_table(rows, self.objective),
        ]
        print("\n".join(lines), flush=True)
        self.shown = time.monotonic()
        self.changed = False

    def _total(self) -> int:
        return expected_trials(self.cfg)

    def _scores(self, trial) -> str:
        result = trial.last_result or {}
        metric = self.objective.metric
        latest, best = result.get(metric), result.get(self.objective.best_key)
        return f"{metric} {_number(latest)}, best {_number(best)}"

    # ---- Tune's hooks ----------------------------------------------------------------------

    def on_step_end(self, iteration, trials, **info):
        if self.changed and time.monotonic() - self.shown >= self.every_s:
            self.table(trials)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.changed = True

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.changed = True
        if self.spec.pbt_keys and "evaluation" in result:
            self._tell_exploits(trial, json.loads(result["evaluation"]).get("exploits") or [])

    def _tell_exploits(self, trial, exploits: list[dict]) -> None:
        """PBT/PB2: a line per exploit, the first time a result carries it."""
        for exploit in exploits[self.exploits.get(trial.trial_id, 0) :]:
            values = " ".join(f"{k}={_value(v)}" for k, v in exploit["config"].items())
            say(
                f"trial {trial.trial_id} copied trial {exploit['donor']}'s state at epoch "
                f"{exploit['epoch']} and goes on with {values}"
            )
        self.exploits[trial.trial_id] = len(exploits)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.changed = True
        row = self.row(trial)
        if self.ended_early(trial):
            by = "ASHA" if self.cfg.scheduler.kind == "asha" else "the scheduler"
            say(
                f"trial {trial.trial_id} stopped by {by} at epoch {row.epoch} of "
                f"{row.epochs} ({self._scores(trial)})"
            )
        else:
            say(f"trial {trial.trial_id} finished {row.epochs} epochs ({self._scores(trial)})")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.changed = True
        say(
            f"trial {trial.trial_id} crashed {_when(trial)} ({trial_error(trial)}); "
            f"restarting from its last checkpoint (restart {trial.num_failures} of at most "
            f"{self.cfg.max_failures})"
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        self.changed = True
        say(
            f"trial {trial.trial_id} failed {_when(trial)}: {trial_error(trial)}{_traceback(trial)}"
        )

    def on_experiment_end(self, trials, **info):
        if trials:
            self.table(trials)
