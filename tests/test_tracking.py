"""MLflow tracking against a real sqlite store in tmp_path (no Ray, no training)."""

from pathlib import Path

import numpy as np
import pytest

from fetalgan.config import DataConfig, TrainConfig
from fetalgan.envinfo import environment
from fetalgan.evaluation import Evaluation, Objective
from fetalgan.tracking import (
    SweepTracker,
    best_run,
    check_tracking,
    download_checkpoint,
    download_sample_grid,
    metric_at_best,
    names,
    resolve_tracking_uri,
    runs_table_url,
    sample_grid_files,
)
from mlflow import MlflowClient


@pytest.fixture
def store(tmp_path):
    return f"sqlite:///{tmp_path}/store/mlruns.db"


def fake_evaluation(tmp_path: Path, epoch: int) -> tuple[Path, Path, Path]:
    """A full checkpoint (networks + an optimiser state), its weights-only best.pt and a grid,
    each telling its epoch."""
    import torch
    from PIL import Image

    from fetalgan.checkpoint import save_checkpoint, save_weights

    tmp_path.mkdir(parents=True, exist_ok=True)
    state = {
        "epoch": epoch,
        "config": {},
        "networks": {"generator": {"w": torch.full((64,), float(epoch))}},
        "optimizers": {"generator": {"state": {0: {"exp_avg": torch.zeros(64)}}}},
        "rng": {},
    }
    checkpoint = save_checkpoint(tmp_path / f"ckpt_{epoch}.pt", state)
    best = save_weights(tmp_path / f"best_{epoch}.pt", state)
    grid = tmp_path / f"grid_{epoch}.png"
    Image.new("L", (8, 8), color=epoch).save(grid)
    return checkpoint, best, grid


def epoch_of(path: Path) -> int:
    from fetalgan.checkpoint import is_full, load_checkpoint

    state = load_checkpoint(path)
    assert not is_full(state) and "optimizers" not in state  # MLflow holds weights only
    return state["epoch"]


def log_trial(tracker, tmp_path, trial_id, values, status="FINISHED", *, metric="fid"):
    """A trial logged as the sweep driver logs one: each evaluation's record (with the running
    best the trainer computes), its sample grid and checkpoints."""
    objective = tracker.objective
    config = TrainConfig(lr_g=1e-3, data=DataConfig(size=10))
    run_id = tracker.start_trial(trial_id, f"trial {trial_id}", config)
    best = None
    for epoch, value in enumerate(values, start=1):
        is_best = best is None or (value < best if objective.mode == "min" else value > best)
        best = value if is_best else best
        evaluation = Evaluation(
            epoch=epoch,
            losses={"loss_g": 1.0 / epoch},
            values={metric: value},
            n_fake=16,
            objective=objective,
            best_value=best,
            is_best=is_best,
            weights_sha256="abc123",
            reference="phantom-32-10",
        )
        tracker.log_evaluation(
            run_id,
            evaluation,
            system={"cpu_percent": 50.0 + epoch},
            tags={names.WORKER_HOST_TAG: "n1"},
        )
        checkpoint, best_weights, grid = fake_evaluation(tmp_path, epoch)
        tracker.log_evaluation_files(
            run_id,
            evaluation,
            best_weights=best_weights if is_best else None,
            sample_grid=grid,
            checkpoint_file=checkpoint,
        )
    tracker.log_last_weights(run_id, checkpoint)
    tracker.end_trial(run_id, status, stopped_early=len(values) < 3)
    return run_id


def test_best_is_the_best_value_over_the_history_not_the_last(tmp_path, store):
    """A logs FID 40 -> 10 -> 30, B 40 -> 25 -> 20: A is best (10), and what `best` serves is
    A's best.pt, the epoch-2 weights that scored 10."""
    tracker = SweepTracker("exp", tracking_uri=store, checkpoint_epochs=(2,))
    parent = tracker.start_parent()
    runs = {
        "a": log_trial(tracker, tmp_path / "a", "a", [40.0, 10.0, 30.0]),
        "b": log_trial(tracker, tmp_path / "b", "b", [40.0, 25.0, 20.0]),
        "c": log_trial(tracker, tmp_path / "c", "c", [90.0]),  # stopped early
    }
    best = tracker.finish_parent("FINISHED", register=False)
    assert best["run_id"] == runs["a"] and best["value"] == 10.0
    assert best["checkpoint_uri"] == f"runs:/{runs['a']}/checkpoint/best.pt"
    assert best_run("exp", tracking_uri=store)["run_id"] == runs["a"]

    client = MlflowClient(store)
    # Independent of fetalgan's query: the lowest FID anywhere in the children's histories.
    lowest = min(
        (m.value, run_id)
        for run_id in runs.values()
        for m in client.get_metric_history(run_id, "fid")
    )
    assert lowest == (10.0, runs["a"])
    assert [m.value for m in client.get_metric_history(runs["a"], "best_fid")] == [40, 10, 10]
    assert client.get_run(parent).data.tags["fetalgan.best_run_id"] == runs["a"]
    assert client.get_run(parent).data.metrics["best_fid"] == 10.0
    assert client.get_run(parent).info.status == "FINISHED"
    served = download_checkpoint(best["checkpoint_uri"], tmp_path / "dl", tracking_uri=store)
    assert epoch_of(served) == 2
    last = download_checkpoint(
        f"runs:/{runs['a']}/checkpoint/last.pt", tmp_path / "dl_last", tracking_uri=store
    )
    assert epoch_of(last) == 3
    # The FID of the evaluation best.pt holds, as the reader study reads it.
    assert metric_at_best(runs["b"], "fid", tracking_uri=store) == 20.0
    assert metric_at_best(runs["b"], "loss_g", tracking_uri=store) == pytest.approx(1 / 3)


def test_mode_max_and_another_metric_rank_the_same_way(tmp_path, store):
    """metric kid_mean (mode max here, to tell the modes apart): the ranking, the value and
    the checkpoint follow the sweep's objective, not FID."""
    tracker = SweepTracker("kid", tracking_uri=store, objective=Objective("kid_mean", "max"))
    tracker.start_parent()
    a = log_trial(tracker, tmp_path / "a", "a", [0.1, 0.9, 0.2], metric="kid_mean")
    b = log_trial(tracker, tmp_path / "b", "b", [0.1, 0.5, 0.8], metric="kid_mean")
    best = tracker.finish_parent("FINISHED", register=False)
    assert (best["run_id"], best["value"], best["metric"]) == (a, 0.9, "kid_mean")
    assert b != a
    served = download_checkpoint(best["checkpoint_uri"], tmp_path / "dl", tracking_uri=store)
    assert epoch_of(served) == 2


def test_trial_run_layout(tmp_path, store):
    """Typed params, one metric point per evaluation at step = epoch, system metrics, the
    sample grids as images with steps, checkpoints, tags and the standard git commit tag."""
    from fetalgan.config import param_value

    tracker = SweepTracker("exp", tracking_uri=store, checkpoint_epochs=(2,))
    tracker.start_parent()
    run_id = log_trial(tracker, tmp_path, "a", [50.0, 40.0, 45.0])
    client = MlflowClient(store)
    run = client.get_run(run_id)
    params = run.data.params
    assert param_value("lr_g", params["lr_g"]) == 1e-3
    assert param_value("data.size", params["data.size"]) == 10
    assert param_value("betas", params["betas"]) == [0.5, 0.999]
    assert param_value("fail_at_epoch", params["fail_at_epoch"]) is None
    assert param_value("channels_last", params["channels_last"]) is True
    assert [m.step for m in client.get_metric_history(run_id, "fid")] == [1, 2, 3]
    cpu = client.get_metric_history(run_id, "system/cpu_percent")
    assert [(m.step, m.value) for m in cpu] == [(1, 51.0), (2, 52.0), (3, 53.0)]
    assert run.data.metrics["n_fake"] == 16
    assert run.data.tags["fetalgan.worker_host"] == "n1"
    assert run.data.tags["fetalgan.weights_sha256"] == "abc123"
    assert run.data.tags["fetalgan.reference"] == "phantom-32-10"
    assert run.data.tags["fetalgan.stopped_early"] == "false"
    assert run.data.tags["fetalgan.host"] == environment()["host"]
    bare = {"worker_host", "weights_sha256", "reference", "stopped_early", "host", "error"}
    assert not bare & set(run.data.tags)  # fetalgan's own tags only under fetalgan.
    if environment()["git_sha"]:  # the commit this process runs (HEAD may move meanwhile)
        assert run.data.tags["mlflow.source.git.commit"] == environment()["git_sha"]
        assert len(run.data.tags["mlflow.source.git.commit"]) == 40
    files = {f.path for f in client.list_artifacts(run_id, "checkpoint")}
    assert files == {"checkpoint/last.pt", "checkpoint/best.pt", "checkpoint/epoch_0002.pt"}
    epoch_file = download_checkpoint(
        f"runs:/{run_id}/checkpoint/epoch_0002.pt", tmp_path / "dl_e", tracking_uri=store
    )
    assert epoch_of(epoch_file) == 2
    top = {f.path for f in client.list_artifacts(run_id)}
    assert {"config.yaml", "environment.json", "images"} <= top
    assert "curves.png" not in top and "samples" not in top
    grids = sample_grid_files(run_id, tracking_uri=store)
    assert sorted(grids) == [1, 2, 3]
    from PIL import Image

    got = download_sample_grid(run_id, 2, tmp_path / "grid", tracking_uri=store)
    assert np.asarray(Image.open(got)).max() == 2  # the epoch-2 grid (filled with 2)
    latest = download_sample_grid(run_id, None, tmp_path / "latest", tracking_uri=store)
    assert np.asarray(Image.open(latest)).max() == 3
    assert download_sample_grid(run_id, 7, tmp_path / "none", tracking_uri=store) is None


def test_restarted_trial_continues_its_run(tmp_path, store):
    tracker = SweepTracker("exp", tracking_uri=store)
    tracker.start_parent()
    first = tracker.start_trial("t1", "t1", TrainConfig())
    tracker.log_evaluation(first, Evaluation(epoch=1, values={"fid": 10.0}))
    tracker.end_trial(first, "FAILED", error="RuntimeError: boom")
    again = tracker.start_trial("t1", "t1", TrainConfig())
    assert again == first
    run = MlflowClient(store).get_run(first)
    assert run.info.status == "RUNNING"
    assert "fetalgan.error" not in run.data.tags
    # A resumed sweep (new tracker, same parent) finds it too.
    resumed = SweepTracker("exp", tracking_uri=store)
    resumed.start_parent(tracker.parent_run_id)
    assert resumed.start_trial("t1", "t1", TrainConfig()) == first


def test_failed_run_keeps_the_error(tmp_path, store):
    tracker = SweepTracker("exp", tracking_uri=store)
    tracker.start_parent()
    run_id = tracker.start_trial("t", "t", TrainConfig())
    tracker.end_trial(run_id, "FAILED", error="FloatingPointError: non-finite loss at epoch 1")
    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["fetalgan.error"].startswith("FloatingPointError")
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
        "&workflowType=machine_learning"  # MLflow 3.17's UI: the runs, not the GenAI overview
    )


def test_a_new_sqlite_store_is_readable_by_its_owner_only(tmp_path):
    import os

    uri = f"sqlite:///{tmp_path}/sub/mlruns.db"
    previous = os.umask(0o022)
    try:
        check_tracking(uri)
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=uri).create_experiment("private")  # MLflow fills the file
    finally:
        os.umask(previous)
    db = tmp_path / "sub" / "mlruns.db"
    assert db.stat().st_size > 0 and db.stat().st_mode & 0o777 == 0o600


def test_experiment_opens_on_the_runs_table(tmp_path, store):
    """``mlflow.experimentKind = custom_model_development`` (MLflow 3.17's UI opens an
    experiment without it on an empty GenAI traces page) on an experiment fetalgan creates,
    and on one made before that it reuses."""
    SweepTracker("new", tracking_uri=store)
    client = MlflowClient(store)
    tags = client.get_experiment_by_name("new").tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    client.create_experiment("older")  # as fetalgan made them before, without the tag
    assert "mlflow.experimentKind" not in client.get_experiment_by_name("older").tags
    SweepTracker("older", tracking_uri=store)
    tags = client.get_experiment_by_name("older").tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_runs_carry_mlflow_context_tags(tmp_path, store):
    """User and source, as ``mlflow.start_run`` would set them, on the sweep and trial runs
    (made with ``MlflowClient.create_run``, which sets none)."""
    import getpass

    tracker = SweepTracker("exp", tracking_uri=store)
    parent = tracker.start_parent(tags={names.EXPERIMENT_PATH_TAG: "/x/exp"})
    trial = tracker.start_trial("t", "t", TrainConfig())
    client = MlflowClient(store)
    for run_id in (parent, trial):
        tags = client.get_run(run_id).data.tags
        assert tags["mlflow.user"] == getpass.getuser()
        assert tags["mlflow.source.type"] == "LOCAL"
        assert tags["mlflow.source.name"]  # the entry point (here pytest's)
    assert client.get_run(parent).data.tags["fetalgan.experiment_path"] == "/x/exp"
    assert client.get_run(trial).data.tags["mlflow.parentRunId"] == parent


def test_runs_logged_with_the_bare_tag_names_still_read(tmp_path, store):
    """A sweep logged before the tags moved under ``fetalgan.``: the best run, the parent's
    experiment folder, a trial's end and where it ran read from the bare names; a restarted
    trial loses its bare ``error`` tag as it loses the new one."""
    from fetalgan.report import SweepRecord, environment_table, trial_hosts, trial_state
    from fetalgan.tracking.queries import sweep_parent_run, sweep_runs

    tracker = SweepTracker("old", tracking_uri=store)
    parent = tracker.start_parent()
    client = MlflowClient(store)
    client.delete_tag(parent, "fetalgan.host")
    client.set_tag(parent, "experiment_path", "/old/ray_results/old")
    client.set_tag(parent, "host", "login-1")
    stopped = tracker.start_trial("s", "s", TrainConfig())
    tracker.log_evaluation(stopped, Evaluation(epoch=1, values={"fid": 30.0}))
    client.set_tag(stopped, "stopped_early", "true")
    client.set_tag(stopped, "worker_host", "gpu-7")
    client.set_tag(stopped, "worker_ip", "10.0.0.7")
    client.set_terminated(stopped, "FINISHED")
    crashed = tracker.start_trial("c", "c", TrainConfig())
    client.set_tag(crashed, "error", "RuntimeError: boom")
    client.set_terminated(crashed, "FAILED")

    assert sweep_parent_run("old", tracking_uri=store)["experiment_path"] == "/old/ray_results/old"
    sweep = SweepRecord.from_runs(sweep_runs("old", tracking_uri=store))
    trials = {t.run_id: t for t in sweep.trials}
    assert trial_state(trials[stopped]) == "stopped"
    assert names.tag(trials[crashed].tags, names.ERROR_TAG) == "RuntimeError: boom"
    assert trial_hosts(sweep)[0] == {"host": "gpu-7", "ip": "10.0.0.7", "trials": 1}
    hosts = next(row for row in environment_table(sweep) if row["key"] == "host")
    assert ("login-1", 1) in hosts["values"]
    assert names.tag({"stopped_early": "true", "fetalgan.stopped_early": "false"},
                     names.STOPPED_EARLY_TAG) == "false"  # the new name first  # fmt: skip
    assert names.tag({}, names.BEST_RUN_TAG, "none") == "none"

    assert tracker.start_trial("c", "c", TrainConfig()) == crashed  # restarted
    assert "error" not in client.get_run(crashed).data.tags


def test_trial_runs_list_their_real_sets_as_mlflow_dataset_inputs(tmp_path, store):
    """train() describes its training set and eval_reference on its first evaluation; the
    writer logs them as the run's dataset inputs with their contexts (the UI's Datasets
    column), a replayed or resumed write adds none, and another subset is another dataset."""
    import json

    from tiny import tiny_train_config

    from fetalgan.train import train

    cfg = tiny_train_config(tmp_path / "cache", epochs=2, eval_metrics=["lbpv"])
    train(cfg, run_dir=tmp_path / "run", progress=False)
    from fetalgan.checkpoint import load_checkpoint

    history = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["history"]
    evaluations = [Evaluation.from_dict(h) for h in history]
    assert [len(e.datasets) for e in evaluations] == [2, 0]  # the first evaluation only
    tracker = SweepTracker("ds", tracking_uri=store)
    tracker.start_parent()
    run_id = tracker.start_trial("t1", "t1", cfg)
    for evaluation in evaluations * 2:  # logged twice: a replay after a driver restart
        tracker.log_evaluation(run_id, evaluation)
    inputs = MlflowClient(store).get_run(run_id).inputs.dataset_inputs
    by_context = {i.tags[0].value: i.dataset for i in inputs}
    assert sorted(by_context) == ["evaluation", "training"] and len(inputs) == 2
    training, reference = by_context["training"], by_context["evaluation"]
    assert training.name == reference.name == "phantom:seed0"
    assert training.digest != reference.digest  # other images: another digest
    assert json.loads(training.profile)["images"] == cfg.data.size
    assert json.loads(reference.profile)["images"] == evaluations[0].reference_n
    assert training.source_type == "code" and "fetalgan.data.phantom" in training.source


def test_file_sets_are_described_by_kind_folder_and_choice(tmp_path):
    import json

    from fetalgan.data.datasets import describe_set

    root = tmp_path / "hc18" / "training_set"
    root.mkdir(parents=True)
    data = DataConfig(kind="hc18", root=str(root.parent), size=100, fit="squash")
    described = describe_set(data, key="ab" * 32, n=100, context="training")
    assert described["name"] == "hc18" and described["digest"] == "ab" * 8
    assert json.loads(described["source"]) == {"uri": str(root.parent.resolve())}
    profile = json.loads(described["profile"])
    assert profile == {"images": 100, "size": 100, "order": "seeded", "skip": 0, "fit": "squash"}
    planes = DataConfig(
        kind="planes", root=str(tmp_path / "p"), plane="Fetal brain", patients=[0, 0.5]
    )
    described = describe_set(planes, key="cd" * 32, n=7, context="test")
    assert described["name"] == "planes:p"
    assert json.loads(described["profile"])["plane"] == "Fetal brain"
    assert json.loads(described["profile"])["patients"] == [0, 0.5]
