"""The sweep's durable tracking queue: writes replayed in order per trial, waiting out a store
that does not answer, surviving a driver restart, into a real sqlite MLflow store."""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path

import pytest

from fetalgan.config import TrainConfig, to_dict
from fetalgan.evaluation import Evaluation
from fetalgan.tracking.write_queue import DONE_FILE, QUEUE_FILE, Queued, WriteQueue
from fetalgan.tracking.writes import (
    KINDS,
    EndTrial,
    LogEvaluation,
    LogEvaluationFiles,
    LogLastWeights,
    SetRestarts,
    StartTrial,
    Unreadable,
    read_write,
)


class HealthEndpoint:
    """A local ``GET /health`` that answers ``OK`` while ``up`` (and refuses otherwise): the
    queue's probe of whether the store is back."""

    def __init__(self):
        self.up = False
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                body = b"OK" if endpoint.up else b"down"
                self.send_response(200 if endpoint.up else 503)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


class Recorder:
    """Stands in for SweepTracker behind the health endpoint: records each write it is given
    while the endpoint is up, raises (as MLflow's client does) while it is down."""

    checkpoint_epochs: set[int] = set()

    def __init__(self, endpoint: HealthEndpoint, calls: list):
        self.endpoint, self.calls = endpoint, calls

    def _call(self, name, run_id, **kwargs):
        if not self.endpoint.up:
            raise ConnectionError("Max retries exceeded")
        self.calls.append((name, run_id, kwargs))

    def start_trial(self, trial_id, name, config):
        self._call("start_trial", None, trial=trial_id)
        return f"run-{trial_id}"

    def find_trial_run(self, trial_id):
        return None

    def log_evaluation(self, run_id, evaluation, **kwargs):
        self._call("log_evaluation", run_id, epoch=evaluation.epoch)

    def log_evaluations(self, run_id, evaluations):  # a trial's queued numbers in one request
        if not self.endpoint.up:
            raise ConnectionError("Max retries exceeded")
        for arguments in evaluations:
            self.log_evaluation(run_id, **arguments)

    def log_evaluation_files(self, run_id, evaluation, **files):
        present = {k: Path(v).read_text() for k, v in files.items() if v is not None}
        self._call("log_evaluation_files", run_id, epoch=evaluation.epoch, files=present)

    def end_trial(self, run_id, status, **kwargs):
        self._call("end_trial", run_id, status=status)


@pytest.fixture
def endpoint():
    health = HealthEndpoint()
    yield health
    health.close()


def _queue(directory, endpoint, calls, **kwargs) -> WriteQueue:
    return WriteQueue(
        directory,
        {"tracking_uri": endpoint.url},
        probe_s=0.05,
        retry_s=0.01,
        tracker_factory=lambda args: Recorder(endpoint, calls),
        **kwargs,
    )


def _evaluation(epoch: int, *, is_best: bool = False) -> Evaluation:
    return Evaluation(epoch=epoch, values={"fid": 10.0 - epoch}, is_best=is_best)


def test_writes_wait_for_the_store_and_survive_a_driver_restart(tmp_path, endpoint):
    calls: list = []
    directory = tmp_path / "queue"
    grid = tmp_path / "grid.png"
    grid.write_text("grid of epoch 1")
    queue = _queue(directory, endpoint, calls)
    for trial in ("a", "b"):
        queue.put(trial, StartTrial(name=trial, config={}))
        for epoch in (1, 2):
            queue.put(trial, LogEvaluation(evaluation=_evaluation(epoch)))
        queue.put(trial, LogEvaluationFiles(evaluation=_evaluation(2), sample_grid=grid))
    grid.unlink()  # Tune dropped its checkpoint: the queue kept its own link
    assert not queue.drain(0.5)  # the store is away: nothing gets through, nothing is lost
    assert calls == [] and queue.pending() == 8 and queue.down_for() is not None
    assert "not answered" in queue.describe() and endpoint.url in queue.describe()
    queue.close()  # the driver stops

    endpoint.up = True
    queue = _queue(directory, endpoint, calls)  # the next driver (--resume)
    assert queue.replayed_from_disk == 8
    queue.put("a", EndTrial(status="FINISHED"))
    assert queue.drain(30)
    assert queue.runs == {"a": "run-a", "b": "run-b"}
    for trial in ("a", "b"):
        mine = [
            (name, kw)
            for name, run, kw in calls
            if kw.get("trial") == trial or run == f"run-{trial}"
        ]
        assert [name for name, _ in mine][:4] == [
            "start_trial",
            "log_evaluation",
            "log_evaluation",
            "log_evaluation_files",
        ]
        assert [kw["epoch"] for name, kw in mine if name == "log_evaluation"] == [1, 2]
        assert mine[3][1]["files"] == {"sample_grid": "grid of epoch 1"}
        if trial == "a":  # in order within a trial (trials replay side by side, in any order)
            assert mine[-1] == ("end_trial", {"status": "FINISHED"})
    queue.close()
    assert not (directory / QUEUE_FILE).exists() and not (directory / "spool").exists()


def test_a_write_done_before_a_crash_is_not_replayed(tmp_path, endpoint):
    calls: list = []
    directory = tmp_path / "queue"
    directory.mkdir()
    records = [
        {"seq": 0, "op": "start_trial", "trial": "a", "args": {"name": "a", "config": {}}},
        {
            "seq": 1,
            "op": "log_evaluation",
            "trial": "a",
            "args": {"evaluation": _evaluation(1).to_dict()},
        },
    ]
    lines = [json.dumps({**r, "files": {}}) for r in records]
    (directory / QUEUE_FILE).write_text("\n".join(lines) + '\n{"seq": 2, "op": "end_tr')  # torn
    (directory / DONE_FILE).write_text(json.dumps({"seq": 0, "run_id": "run-a"}) + "\n")
    endpoint.up = True
    queue = _queue(directory, endpoint, calls)
    assert queue.drain(30)
    assert calls == [("log_evaluation", "run-a", {"epoch": 1})]
    queue.close()


def test_a_best_file_a_later_queued_best_replaces_is_not_uploaded(tmp_path, endpoint):
    calls: list = []
    queue = _queue(tmp_path / "queue", endpoint, calls, workers=1)
    queue.put("a", StartTrial(name="a", config={}))
    for epoch in (1, 2, 3):
        best = tmp_path / f"best_{epoch}.pt"
        best.write_text(f"best of epoch {epoch}")
        queue.put(
            "a", LogEvaluationFiles(evaluation=_evaluation(epoch, is_best=True), best_weights=best)
        )
    endpoint.up = True
    assert queue.drain(30)
    uploads = [kw["files"] for name, _, kw in calls if name == "log_evaluation_files"]
    assert uploads == [{}, {}, {"best_weights": "best of epoch 3"}]
    queue.close()


def test_a_write_the_answering_store_refuses_is_set_aside(tmp_path, endpoint):
    calls: list = []
    endpoint.up = True
    queue = _queue(tmp_path / "queue", endpoint, calls)
    queue.put("a", StartTrial(name="a", config={}))
    queue.put("a", SetRestarts(restarts=1))  # the Recorder has no such method
    queue.put("a", EndTrial(status="FINISHED"))
    with pytest.warns(UserWarning, match="set_restarts of trial a refused"):
        assert queue.drain(30)
    assert [name for name, _, _ in calls] == ["start_trial", "end_trial"]
    failed = [json.loads(line) for line in (tmp_path / "queue" / "failed.jsonl").open()]
    assert [f["seq"] for f in failed] == [1]
    queue.close()


def test_every_write_reaches_a_sqlite_store_once(tmp_path):
    from fetalgan.tracking import SweepTracker
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path}/mlruns.db"
    tracker = SweepTracker("queued", tracking_uri=store)
    parent = tracker.start_parent()
    args = {"experiment": "queued", "tracking_uri": store, "parent_run_id": parent}
    queue = WriteQueue(tmp_path / "queue", args)
    queue.put("t1", StartTrial(name="t1", config=to_dict(TrainConfig())))
    reported = int(time.time() * 1000)
    for epoch in (1, 2, 2):  # the second epoch 2: a write replayed after a crash
        queue.put("t1", LogEvaluation(evaluation=_evaluation(epoch), timestamp_ms=reported + epoch))
    queue.put("t1", EndTrial(status="FINISHED"))
    assert queue.drain(60)
    queue.close()
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(queue.runs["t1"])
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == str(TrainConfig().epochs)
    history = client.get_metric_history(run.info.run_id, "fid")
    assert sorted((m.step, m.value) for m in history) == [(1, 9.0), (2, 8.0)]


def test_each_write_kind_reads_back_from_its_journal_line(tmp_path):
    """Every kind's journal line (``op``, ``args``, ``files``, the format journals had before
    the writes were typed) reads back as the same write: a resumed sweep replays them."""
    grid = tmp_path / "grid.png"
    writes = [
        StartTrial(name="t1 lr=0.1", config={"lr_g": 0.1}),
        LogEvaluation(
            evaluation=_evaluation(3, is_best=True),
            system={"cpu_percent": 5.0},
            tags={"fetalgan.worker_host": "node1"},
            timestamp_ms=123,
        ),
        LogEvaluationFiles(evaluation=_evaluation(3), sample_grid=grid),
        LogLastWeights(checkpoint_file=tmp_path / "checkpoint.pt"),
        SetRestarts(restarts=2),
        EndTrial(status="FAILED", error="Traceback ..."),
    ]
    assert {type(w) for w in writes} == set(KINDS.values())
    for write in writes:
        line = json.loads(json.dumps(Queued(7, "t1", write).record()))
        assert set(line) == {"seq", "op", "trial", "args", "files"} and line["op"] == write.op
        assert Queued.read(line, tmp_path / QUEUE_FILE) == Queued(7, "t1", write)
    # the lines the string-keyed queue wrote (files only where given, args only where given)
    assert read_write("end_trial", {"status": "KILLED"}, {}) == EndTrial(status="KILLED")
    assert read_write(
        "log_evaluation_files", {"evaluation": _evaluation(2).to_dict()}, {"sample_grid": None}
    ) == LogEvaluationFiles(evaluation=_evaluation(2))
    unknown = read_write("log_weather", {"rain": 1}, {}, where="queue.jsonl")
    assert isinstance(unknown, Unreadable) and unknown.op == "log_weather"
    assert "unknown write 'log_weather'" in unknown.reason
    assert isinstance(read_write("set_restarts", {"times": 1}, {}), Unreadable)


def test_a_journal_line_of_an_unknown_kind_is_set_aside(tmp_path, endpoint):
    calls: list = []
    directory = tmp_path / "queue"
    directory.mkdir()
    records = [
        {"seq": 0, "op": "start_trial", "trial": "a", "args": {"name": "a", "config": {}}},
        {"seq": 1, "op": "log_weather", "trial": "a", "args": {"rain": 1}},
        {"seq": 2, "op": "end_trial", "trial": "a", "args": {"status": "FINISHED"}},
    ]
    (directory / QUEUE_FILE).write_text(
        "".join(json.dumps({**r, "files": {}}) + "\n" for r in records)
    )
    endpoint.up = True
    queue = _queue(directory, endpoint, calls)
    with pytest.warns(UserWarning, match="log_weather of trial a refused"):
        assert queue.drain(30)
    assert [name for name, _, _ in calls] == ["start_trial", "end_trial"]
    failed = [json.loads(line) for line in (directory / "failed.jsonl").open()]
    assert [f["seq"] for f in failed] == [1] and "unknown write" in failed[0]["error"]
    queue.close()
