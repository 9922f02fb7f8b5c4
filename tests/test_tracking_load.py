"""The tracking-load bench's simulated driver (bench/tracking_load.py): a few simulated trials
through the real TrackingCallback and write queue into a real sqlite MLflow store; every
evaluation reported arrives, with its sample grid, and every run ends FINISHED."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("tracking_load", REPO / "bench/tracking_load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_simulated_driver_delivers_every_evaluation(tmp_path):
    from mlflow import MlflowClient

    bench = _bench()
    templates = tmp_path / "templates"
    bench.make_templates(templates, 0.05)
    store = f"sqlite:///{tmp_path}/mlruns.db"
    out = bench.simulate(
        3,
        4,
        0.05,
        templates=templates,
        work=tmp_path / "work",
        tracking_uri=store,
        experiment="load3",
        reports=tmp_path / "reports",
    )
    assert out["queued_left"] == 0
    assert len(out["reported"]) == 3 * 4
    assert sorted(out["hook_seconds"]) == [
        "on_checkpoint",
        "on_experiment_end",
        "on_trial_complete",
        "on_trial_result",
        "on_trial_start",
    ]
    assert len(out["hook_seconds"]["on_checkpoint"]) == 12
    client = MlflowClient(tracking_uri=store)
    assert sorted(out["runs"]) == ["sim00000", "sim00001", "sim00002"]
    for trial, run_id in out["runs"].items():
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["fetalgan.trial_id"] == trial
        steps = sorted(m.step for m in client.get_metric_history(run_id, "fid"))
        assert steps == [1, 2, 3, 4]
        paths = {a.path for a in client.list_artifacts(run_id, "checkpoint")}
        assert paths == {"checkpoint/best.pt", "checkpoint/last.pt"}
        images = [a.path for a in client.list_artifacts(run_id, "images")]
        assert len([p for p in images if p.endswith(".png")]) == 4
    # the trials' staged checkpoints: only Tune's last two are kept
    for trial in out["runs"]:
        staged = list((tmp_path / "work" / "load3" / f"trial_{trial}").glob("checkpoint_*"))
        assert len(staged) == 2


def test_a_backlog_of_numbers_is_replayed_in_one_request_each(tmp_path):
    """A queue found full (a driver restarted behind a backlog): a trial's queued evaluation
    numbers go in one request, its files still one by one and in order, its end last."""
    import json

    from fetalgan.config import TrainConfig, to_dict
    from fetalgan.evaluation import Evaluation
    from fetalgan.tracking import SweepTracker
    from fetalgan.tracking.write_queue import WriteQueue, _sweep_tracker
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path}/mlruns.db"
    tracker = SweepTracker("backlog", tracking_uri=store)
    parent = tracker.start_parent()
    args = {"experiment": "backlog", "tracking_uri": store, "parent_run_id": parent}
    records = [{"op": "start_trial", "args": {"name": "t", "config": to_dict(TrainConfig())}}]
    for epoch in (1, 2, 3):
        evaluation = Evaluation(epoch=epoch, values={"fid": 10.0 - epoch}).to_dict()
        records.append(
            {"op": "log_evaluation", "args": {"evaluation": evaluation, "timestamp_ms": epoch}}
        )
        records.append({"op": "log_evaluation_files", "args": {"evaluation": evaluation}})
    records.append({"op": "end_trial", "args": {"status": "FINISHED"}})
    (tmp_path / "queue").mkdir()
    with open(tmp_path / "queue" / "queue.jsonl", "w") as out:
        for seq, record in enumerate(records):
            out.write(json.dumps({"seq": seq, "trial": "t", "files": {}, **record}) + "\n")
    calls = []

    class Recording:
        def __init__(self, tracker):
            self.tracker = tracker

        def __getattr__(self, name):
            def call(*a, **k):
                calls.append(name)
                return getattr(self.tracker, name)(*a, **k)

            return call

    queue = WriteQueue(
        tmp_path / "queue", args, tracker_factory=lambda a: Recording(_sweep_tracker(a))
    )
    assert queue.drain(60)
    queue.close()
    assert [c for c in calls if c != "find_trial_run"] == [
        "start_trial",
        "log_evaluations",
        "log_evaluation_files",
        "log_evaluation_files",
        "log_evaluation_files",
        "end_trial",
    ]
    client = MlflowClient(tracking_uri=store)
    run_id = queue.runs["t"]
    assert client.get_run(run_id).info.status == "FINISHED"
    history = client.get_metric_history(run_id, "fid")
    assert sorted((m.step, m.value) for m in history) == [(1, 9.0), (2, 8.0), (3, 7.0)]
