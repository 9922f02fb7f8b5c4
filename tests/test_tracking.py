"""MLflow tracking against a real sqlite store in tmp_path (no Ray, no training)."""

from pathlib import Path

import pytest

from fetalgan.tracking import (
    SweepTracker,
    best_run,
    check_tracking,
    download_checkpoint,
    resolve_tracking_uri,
    runs_table_url,
)
from mlflow import MlflowClient


@pytest.fixture
def store(tmp_path):
    return f"sqlite:///{tmp_path}/store/mlruns.db"


def fake_evaluation(tmp_path: Path, epoch: int) -> tuple[Path, Path]:
    from PIL import Image

    checkpoint = tmp_path / f"ckpt_{epoch}.pt"
    checkpoint.write_bytes(f"weights of epoch {epoch}".encode())
    grid = tmp_path / f"grid_{epoch}.png"
    Image.new("L", (8, 8), color=epoch).save(grid)
    return checkpoint, grid


def log_trial(tracker, tmp_path, trial_id, fids, status="FINISHED"):
    config = {"lr_g": 1e-3, "betas": [0.5, 0.999], "data": {"size": 10}}
    run_id = tracker.start_trial(trial_id, f"trial {trial_id}", config, "lr_g: 0.001\n")
    for epoch, fid in enumerate(fids, start=1):
        is_best = tracker.log_result(run_id, {"epoch": epoch, "fid": fid, "loss_g": 1.0 / epoch})
        checkpoint, grid = fake_evaluation(tmp_path, epoch)
        tracker.log_evaluation_files(
            run_id, epoch, checkpoint_file=checkpoint, sample_grid=grid, is_best=is_best
        )
    tracker.end_trial(run_id, status, stopped_early=len(fids) < 3)
    return run_id


def test_sweep_layout_best_run_and_registry(tmp_path, store):
    tracker = SweepTracker("exp", tracking_uri=store, checkpoint_epochs=(2,))
    parent = tracker.start_parent()
    runs = {
        "a": log_trial(tracker, tmp_path, "a", [50.0, 40.0, 45.0]),  # best evaluation: epoch 2
        "b": log_trial(tracker, tmp_path, "b", [60.0, 30.0, 20.0]),  # best at its last epoch
        "c": log_trial(tracker, tmp_path, "c", [90.0]),  # stopped early
    }
    best = tracker.finish_parent("FINISHED")

    client = MlflowClient(store)
    children = client.search_runs(
        [tracker.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    assert sorted(r.info.run_id for r in children) == sorted(runs.values())
    # Independent of fetalgan's query: the lowest last-evaluation FID among the children.
    expected = min(children, key=lambda r: r.data.metrics["fid"])
    assert best["run_id"] == expected.info.run_id == runs["b"]
    assert best["value"] == 20.0
    assert client.get_run(parent).data.tags["best_run_id"] == runs["b"]
    assert client.get_run(parent).info.status == "FINISHED"

    run_a = client.get_run(runs["a"])
    assert run_a.data.params["lr_g"] == "0.001"
    assert run_a.data.params["data.size"] == "10"
    assert run_a.data.params["betas"] == "[0.5, 0.999]"
    assert [m.step for m in client.get_metric_history(runs["a"], "fid")] == [1, 2, 3]
    assert client.get_run(runs["c"]).data.tags["stopped_early"] == "true"
    files = {f.path for f in client.list_artifacts(runs["a"], "checkpoint")}
    assert files == {"checkpoint/last.pt", "checkpoint/best.pt", "checkpoint/epoch_0002.pt"}
    top = {f.path for f in client.list_artifacts(runs["a"])}
    assert {"curves.png", "config.yaml", "environment.json", "samples"} <= top
    samples = {f.path for f in client.list_artifacts(runs["a"], "samples")}
    assert samples == {f"samples/epoch_000{e}.png" for e in (1, 2, 3)}
    # best.pt of run a holds the epoch-2 weights (its best FID), last.pt the epoch-3 ones.
    best_a = download_checkpoint(runs["a"], tmp_path / "dl_a", tracking_uri=store)
    assert best_a.read_bytes() == b"weights of epoch 2"
    assert best_a.parent == tmp_path / "dl_a"  # under the destination
    # The Model Registry has the best run's checkpoint under the experiment's name, alias best.
    version = client.get_model_version_by_alias("exp", "best")
    assert version.run_id == runs["b"]
    from_registry = download_checkpoint("models:/exp@best", tmp_path / "dl_reg", tracking_uri=store)
    assert from_registry.name == "best.pt"
    assert from_registry.read_bytes() == b"weights of epoch 3"


def test_restarted_trial_continues_its_run(tmp_path, store):
    tracker = SweepTracker("exp", tracking_uri=store)
    tracker.start_parent()
    first = tracker.start_trial("t1", "t1", {"lr_g": 1.0}, "")
    tracker.log_result(first, {"epoch": 1, "fid": 10.0})
    tracker.end_trial(first, "FAILED", error="RuntimeError: boom")
    again = tracker.start_trial("t1", "t1", {"lr_g": 1.0}, "")
    assert again == first
    run = MlflowClient(store).get_run(first)
    assert run.info.status == "RUNNING"
    assert "error" not in run.data.tags
    # A resumed sweep (new tracker, same parent) finds it too.
    resumed = SweepTracker("exp", tracking_uri=store)
    resumed.start_parent(tracker.parent_run_id)
    assert resumed.start_trial("t1", "t1", {"lr_g": 1.0}, "") == first


def test_failed_run_keeps_the_error(tmp_path, store):
    tracker = SweepTracker("exp", tracking_uri=store)
    tracker.start_parent()
    run_id = tracker.start_trial("t", "t", {}, "")
    tracker.end_trial(run_id, "FAILED", error="FloatingPointError: non-finite loss at epoch 1")
    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("FloatingPointError")
    with pytest.raises(ValueError, match="no finished trial run has metric 'fid'"):
        best_run("exp", tracking_uri=store)


def test_unknown_experiment_lists_the_known_ones(tmp_path, store):
    SweepTracker("known", tracking_uri=store)
    with pytest.raises(ValueError, match="experiments there: .*known"):
        best_run("nope", tracking_uri=store)


def test_unreachable_server_is_a_clear_error():
    with pytest.raises(ValueError, match=r"http://127.0.0.1:9 is not reachable"):
        check_tracking("http://127.0.0.1:9", timeout_s=2)


def test_tracking_uri_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path}/mlruns.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri() == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:///x.db") == f"sqlite:///{tmp_path}/x.db"
    with pytest.raises(ValueError, match="file store"):
        resolve_tracking_uri("./mlruns")


def test_runs_table_url_sorts_by_the_metric():
    url = runs_table_url("7", "sqlite:///m.db", "fid", "min")
    assert url == (
        "http://127.0.0.1:5000/#/experiments/7/runs?orderByKey=metrics.%60fid%60&orderByAsc=true"
    )
