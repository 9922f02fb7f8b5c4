"""A sweep's tracking writes, queued on disk and replayed in order by background threads, so the
sweep driver (Tune's event loop) never waits on MLflow.

The driver's callback puts each write (a :mod:`~fetalgan.tracking.writes` object: a trial's
start, an evaluation's numbers, its files, restarts, its end) into the queue and returns at
once. Threads replay the writes through a
:class:`~fetalgan.tracking.writer.SweepTracker`: a trial's writes in the order they were put
(its run is started before its metrics, ended after its last files), different trials' writes in
parallel; an evaluation's numbers may pass the trial's queued files (:data:`MERGED`). While
the store does not answer (``GET /health``), the threads wait and try again,
however long that takes; the trials keep training meanwhile. Nothing is lost when the driver
stops: the queue lives in the experiment directory, and the next driver of the same experiment
(``fetalgan sweep FILE --resume``) replays what is left.

On disk (``DIR``, ``<experiment>/fetalgan_tracking`` for a sweep):

- ``queue.jsonl``: one line per write, ``{seq, op, trial, args, files}`` (the write's kind,
  fields and file fields: :mod:`~fetalgan.tracking.writes`), appended and flushed when put (a
  torn last line, from a driver killed mid-write, is ignored);
- ``done.jsonl``: the ``seq`` of each write done (with the run id a ``start_trial`` made);
- ``failed.jsonl``: writes the store refused five times while it answered (warned, kept);
- ``spool/SEQ/``: hard links (else copies) of the files a write uploads, taken when it is put:
  Tune keeps only a trial's last two checkpoints, the queue may hold older ones.

Replaying is idempotent: a write replayed after a crash between doing it and recording it
finds its run again (by trial id), and metrics carry the time they were put, so MLflow drops
the duplicate. A ``best.pt`` that a later queued evaluation of the same trial replaces is not
uploaded (its sample grid and numbers are), and a trial's queued evaluation numbers are logged
in one request: a backlog drains at the pace the store allows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fetalgan.tracking.writes import (
    LogEvaluation,
    LogEvaluationFiles,
    StartTrial,
    Unreadable,
    Write,
    read_write,
)

QUEUE_FILE = "queue.jsonl"
DONE_FILE = "done.jsonl"
FAILED_FILE = "failed.jsonl"
SPOOL_DIR = "spool"
REFUSALS = 5  # a write the answering store refuses this often is set aside (failed.jsonl)
# Evaluation numbers go first, and a trial's queued numbers together in one request, passing
# the trial's queued files (uploads: several requests each), which keep their order among
# themselves; other writes are barriers. Under load the numbers stay current while files
# catch up (bench/tracking_load.py). MLflow takes 1000 metrics and 100 tags per request.
MERGED = LogEvaluation
OVERTAKEN = (LogEvaluationFiles,)  # writes a trial's later numbers may be replayed before
MERGE_MAX = 25

_OPEN: dict[Path, WriteQueue] = {}  # one queue per directory in this process
_OPEN_LOCK = threading.Lock()


def open_write_queue(directory: str | Path, tracker_args: dict, **kwargs) -> WriteQueue:
    """The process's queue on ``directory`` (created and started on first use). The sweep
    runner and the Tune callback (which a resumed sweep unpickles) share it this way."""
    directory = Path(directory).resolve()
    with _OPEN_LOCK:
        queue = _OPEN.get(directory)
        if queue is None or queue.closed:
            queue = _OPEN[directory] = WriteQueue(directory, tracker_args, **kwargs)
        return queue


@dataclass
class Queued:
    """A write put in the queue: its place (``seq``), its trial, the write (its files: the
    queue's spooled links)."""

    seq: int
    trial: str
    write: Write

    def record(self) -> dict:
        """The journal line."""
        files = {k: str(v) if v else None for k, v in self.write.files().items()}
        return {
            "seq": self.seq,
            "op": self.write.op,
            "trial": self.trial,
            "args": self.write.args(),
            "files": files,
        }

    @classmethod
    def read(cls, record: dict, where: Path) -> Queued:
        write = read_write(
            record["op"], record.get("args") or {}, record.get("files") or {}, where=str(where)
        )
        return cls(record["seq"], record["trial"], write)


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by a killed driver: never acknowledged
            continue
    return records


class WriteQueue:
    """Ordered, durable tracking writes of one sweep (see the module docstring).

    ``tracker_args``: :class:`SweepTracker`'s keyword arguments plus ``parent_run_id``; the
    tracker is made in a replay thread (so an absent server never blocks the caller).
    ``workers``: replay threads (default 4 for a server, 1 for sqlite, which takes one writer
    at a time). ``probe_s``: how often a waiting thread asks the server whether it is back;
    ``retry_s``: the first pause before retrying a write the answering store refused (doubling).
    ``tracker_factory``: makes the tracker from ``tracker_args`` (default a SweepTracker).
    """

    def __init__(
        self,
        directory: str | Path,
        tracker_args: dict,
        *,
        workers: int | None = None,
        probe_s: float = 2.0,
        retry_s: float = 0.5,
        tracker_factory: Callable[[dict], Any] | None = None,
    ):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.tracker_args = dict(tracker_args)
        self.tracking_uri = self.tracker_args.get("tracking_uri") or ""
        self.probe_s = probe_s
        self.retry_s = retry_s
        self._make_tracker = tracker_factory or _sweep_tracker
        self._tracker = None
        self._tracker_lock = threading.Lock()
        self._lock = threading.Condition()
        self.runs: dict[str, str] = {}  # trial id -> MLflow run id (known once started)
        self._pending: list[Queued] = []  # writes not yet done, in put order
        self._busy: set[str] = set()  # trials with a write being replayed now
        self._down_since: float | None = None  # when the store stopped answering
        self.last_error: str = ""
        self.closed = False
        done = {r["seq"]: r for r in _read_jsonl(self.directory / DONE_FILE)}
        failed = {r["seq"] for r in _read_jsonl(self.directory / FAILED_FILE)}
        self._next_seq = 0
        for record in _read_jsonl(self.directory / QUEUE_FILE):
            self._next_seq = max(self._next_seq, record["seq"] + 1)
            if record["seq"] in done:
                if done[record["seq"]].get("run_id"):
                    self.runs[record["trial"]] = done[record["seq"]]["run_id"]
            elif record["seq"] not in failed:
                self._pending.append(Queued.read(record, self.directory / QUEUE_FILE))
        self.replayed_from_disk = len(self._pending)
        self._files = {
            name: open(self.directory / name, "a", encoding="utf-8")
            for name in (QUEUE_FILE, DONE_FILE, FAILED_FILE)
        }
        if workers is None:
            workers = 1 if self.tracking_uri.startswith("sqlite:") else 4
        self._threads = [
            threading.Thread(target=self._replay, name=f"fetalgan-tracking-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    # ---- the driver's side -------------------------------------------------------------------

    def put(self, trial: str, write: Write) -> int:
        """Queue ``write`` for trial ``trial``; its files are spooled now (hard links).
        Returns the write's sequence number."""
        with self._lock:
            if self.closed:
                raise RuntimeError(f"{self.directory}: tracking queue is closed")
            seq = self._next_seq
            self._next_seq += 1
            if write.FILES:
                spooled = self._spool(seq, write.files())
                write = dataclasses.replace(
                    write, **{k: Path(v) if v else None for k, v in spooled.items()}
                )
            queued = Queued(seq, trial, write)
            self._append(QUEUE_FILE, queued.record())
            self._pending.append(queued)
            self._lock.notify_all()
        return seq

    def _spool(self, seq: int, files: dict[str, str | Path | None]) -> dict[str, str | None]:
        spool = self.directory / SPOOL_DIR / str(seq)
        spool.mkdir(parents=True, exist_ok=True)
        kept: dict[str, str | None] = {}
        for argument, path in files.items():
            if path is None or not Path(path).is_file():
                kept[argument] = None
                continue
            dst = spool / argument / Path(path).name  # MLflow names an artefact after its file
            dst.parent.mkdir(exist_ok=True)
            try:
                os.link(path, dst)
            except OSError:  # another filesystem
                shutil.copyfile(path, dst)
            kept[argument] = str(dst)
        return kept

    def _append(self, name: str, record: dict) -> None:
        out = self._files[name]
        out.write(json.dumps(record) + "\n")
        out.flush()

    def pending(self) -> int:
        """Writes not yet done (being replayed included)."""
        with self._lock:
            return len(self._pending)

    def down_for(self) -> float | None:
        """Seconds since the store stopped answering; None while it answers."""
        with self._lock:
            return None if self._down_since is None else time.monotonic() - self._down_since

    def drain(self, timeout_s: float, *, report_every_s: float = 30.0, say=print) -> bool:
        """Wait up to ``timeout_s`` for every queued write to be done; ``say`` what is left
        every ``report_every_s`` seconds. True when the queue is empty."""
        deadline = time.monotonic() + timeout_s
        next_report = time.monotonic() + report_every_s
        with self._lock:
            while self._pending:
                now = time.monotonic()
                if now >= deadline:
                    return False
                if now >= next_report:
                    say(f"fetalgan sweep: {self.describe_locked()}")
                    next_report = now + report_every_s
                self._lock.wait(min(1.0, deadline - now))
            return True

    def describe(self) -> str:
        with self._lock:
            return self.describe_locked()

    def describe_locked(self) -> str:
        trials = {queued.trial for queued in self._pending}
        text = (
            f"{len(self._pending)} tracking write(s) of {len(trials)} trial(s) queued in "
            f"{self.directory}"
        )
        if self._down_since is not None:
            text += (
                f"; {self.tracking_uri} has not answered for "
                f"{time.monotonic() - self._down_since:.0f} s ({self.last_error})"
            )
        return text

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the replay threads (what is left stays on disk); empty the files when all is
        done. A thread still inside an MLflow call after ``timeout_s`` is left to die with the
        process (its write is replayed next time)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._lock.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            if not any(t.is_alive() for t in self._threads):
                for out in self._files.values():
                    out.close()
            if not self._pending and not any(t.is_alive() for t in self._threads):
                for name in (QUEUE_FILE, DONE_FILE):
                    (self.directory / name).unlink(missing_ok=True)
                shutil.rmtree(self.directory / SPOOL_DIR, ignore_errors=True)
        with _OPEN_LOCK:
            if _OPEN.get(self.directory.resolve()) is self:
                del _OPEN[self.directory.resolve()]

    # ---- the replay threads ------------------------------------------------------------------

    def _next(self) -> list[Queued] | None:
        """The next write of a trial none of the threads is replaying (waits): the oldest
        evaluation numbers that only files of their trial precede (numbers are one small
        request; files wait), else the oldest write that is its trial's oldest. With numbers,
        the trial's later numbers queued before its next write of another kind than files
        (:data:`MERGED`)."""
        with self._lock:
            while not self.closed:
                index = self._pick()
                if index is not None:
                    queued = self._pending[index]
                    self._busy.add(queued.trial)
                    return [queued, *self._merged_with(index)]
                self._lock.wait(1.0)
            return None

    def _pick(self) -> int | None:
        oldest = None
        seen: set[str] = set()  # trials with an earlier pending write
        blocked: set[str] = set()  # trials with an earlier pending write numbers may not pass
        for i, queued in enumerate(self._pending):
            trial = queued.trial
            if trial in self._busy:
                continue
            if isinstance(queued.write, MERGED) and trial not in blocked:
                return i
            if oldest is None and trial not in seen:
                oldest = i
            seen.add(trial)
            if not isinstance(queued.write, OVERTAKEN):
                blocked.add(trial)
        return oldest

    def _merged_with(self, index: int) -> list[Queued]:
        first = self._pending[index]
        if not isinstance(first.write, MERGED):
            return []
        merged = []
        for queued in self._pending[index + 1 :]:
            if queued.trial != first.trial:
                continue
            if isinstance(queued.write, MERGED):
                merged.append(queued)
                if len(merged) + 1 >= MERGE_MAX:
                    break
            elif not isinstance(queued.write, OVERTAKEN):
                break
        return merged

    def _replay(self) -> None:
        while True:
            records = self._next()
            if records is None:
                return
            try:
                self._replay_one(records)
            finally:
                with self._lock:
                    self._busy.discard(records[0].trial)
                    self._lock.notify_all()

    def _replay_one(self, records: list[Queued]) -> None:
        """One write, or several evaluations' numbers of one trial (done or set aside
        together)."""
        first = records[0]
        refusals = 0
        while True:
            try:
                run_id = self._do(first) if len(records) == 1 else self._do_merged(records)
            except Exception as err:  # every failure is retried or set aside
                if self.closed:
                    return
                if not self._store_answers():
                    self._wait_for_store(err)
                    continue
                refusals += 1
                if refusals < REFUSALS:
                    time.sleep(min(10.0, self.retry_s * 2**refusals))
                    continue
                for each in records:
                    self._finish(each, failed=f"{type(err).__name__}: {err}")
                warnings.warn(
                    f"tracking: {first.write.op} of trial {first.trial} refused by "
                    f"{self.tracking_uri}: {err} (kept in {self.directory / FAILED_FILE})",
                    stacklevel=2,
                )
                return
            for each in records:
                self._finish(each, run_id=run_id)
            return

    def _store_answers(self) -> bool:
        from fetalgan.tracking.store import check_tracking

        try:
            check_tracking(self.tracking_uri) if self.tracking_uri else None
        except ValueError:
            return False
        return True

    def _wait_for_store(self, err: Exception) -> None:
        """Wait (probing every ``probe_s``) until the store answers again, or the queue
        closes."""
        with self._lock:
            if self._down_since is None:
                self._down_since = time.monotonic()
            self.last_error = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        while not self.closed:
            time.sleep(self.probe_s)
            if self._store_answers():
                break
        with self._lock:
            self._down_since = None

    def _finish(self, queued: Queued, *, run_id: str | None = None, failed: str = "") -> None:
        with self._lock:
            if self._files[DONE_FILE].closed:
                return
            if failed:
                self._append(FAILED_FILE, {"seq": queued.seq, "error": failed})
            else:
                self._append(DONE_FILE, {"seq": queued.seq, "run_id": run_id})
            self._pending = [q for q in self._pending if q.seq != queued.seq]
            if run_id:
                self.runs[queued.trial] = run_id
            self._lock.notify_all()
        if queued.write.files():
            shutil.rmtree(self.directory / SPOOL_DIR / str(queued.seq), ignore_errors=True)

    def tracker(self):
        with self._tracker_lock:
            if self._tracker is None:
                self._tracker = self._make_tracker(self.tracker_args)
            return self._tracker

    def _run_of(self, trial: str) -> str | None:
        with self._lock:
            run_id = self.runs.get(trial)
        if run_id is None:  # a driver restarted before this trial's start was recorded
            run_id = self.tracker().find_trial_run(trial)
            if run_id is not None:
                with self._lock:
                    self.runs[trial] = run_id
        return run_id

    def _superseded(self, queued: Queued, argument: str) -> bool:
        """A file a later queued write of the same trial replaces in MLflow (``best.pt``)."""
        with self._lock:
            return any(
                q.trial == queued.trial
                and type(q.write) is type(queued.write)
                and q.seq > queued.seq
                and q.write.files().get(argument)
                for q in self._pending
            )

    def _do_merged(self, merged: list[Queued]) -> None:
        """Several :data:`MERGED` writes of one trial in one request."""
        run_id = self._run_of(merged[0].trial)
        if run_id is None:
            return None
        MERGED.apply_together(self.tracker(), run_id, [q.write for q in merged])
        return None

    def _do(self, queued: Queued) -> str | None:
        """One write; the run id when it was a trial's start."""
        write = queued.write
        if isinstance(write, Unreadable):
            raise ValueError(write.reason)
        tracker = self.tracker()
        if isinstance(write, StartTrial):
            return write.start(tracker, queued.trial)
        run_id = self._run_of(queued.trial)
        if run_id is None:  # a result racing a restart, its start not queued: nothing to log
            return None
        replaced = {
            argument: None
            for argument in write.REPLACED
            if write.files().get(argument) and self._superseded(queued, argument)
        }
        if replaced:
            write = dataclasses.replace(write, **replaced)
        write.apply(tracker, run_id)
        return None


def _sweep_tracker(tracker_args: dict):
    from fetalgan.tracking.writer import SweepTracker

    args = dict(tracker_args)
    parent = args.pop("parent_run_id")
    tracker = SweepTracker(**args)
    tracker.parent_run_id = parent
    return tracker
