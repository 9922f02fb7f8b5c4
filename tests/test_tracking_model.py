"""The best generator as an MLflow pyfunc model, against a real sqlite store in tmp_path: logged
for a finished run, loaded by alias in a fresh process, its images those of ``generate``."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from tiny import tiny_train_config

import mlflow
from fetalgan.checkpoint import load_checkpoint
from fetalgan.generate import generate, load_generator
from fetalgan.images import read_grey
from fetalgan.sampling import sample_images
from fetalgan.tracking.model import _request, _store, log_generator_model, model_checkpoint
from fetalgan.tracking.names import MODEL_NAME
from fetalgan.train import train
from mlflow import MlflowClient

NAME = "generator"


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A tiny trained DCGAN checkpoint, logged and registered (alias ``best``) for a run that
    was already FINISHED."""
    tmp = tmp_path_factory.mktemp("model")
    cfg = tiny_train_config(
        tmp / "cache", **{"data.size": 16, "data.phantom_n": 16, "epochs": 1, "eval_n": 8}
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: fastest on one thread
    try:
        train(cfg, run_dir=tmp / "run", progress=False)
    finally:
        torch.set_num_threads(threads)
    checkpoint = tmp / "run" / "checkpoints" / "last.pt"

    uri = f"sqlite:///{tmp}/mlruns.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("exp", artifact_location=(tmp / "mlartifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    client.log_metric(run_id, "fid", 12.5, step=1)
    client.set_terminated(run_id, status="FINISHED")
    before = client.get_run(run_id).info

    global_uri, env_uri = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    version = log_generator_model(run_id, checkpoint, NAME, tracking_uri=uri)
    assert mlflow.get_tracking_uri() == global_uri  # the process's tracking URI is restored
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_uri
    assert mlflow.active_run() is None
    return {
        "tmp": tmp,
        "uri": uri,
        "client": client,
        "experiment": experiment,
        "run_id": run_id,
        "before": before,
        "version": version,
        "checkpoint": checkpoint,
    }


def predict_in_fresh_process(logged, requests: dict[str, object]) -> dict[str, np.ndarray]:
    """``mlflow.pyfunc.load_model("models:/NAME@best").predict(request)`` for each request, in
    a new Python process that knows only the store's URI. A request keyed ``frame...`` goes
    as a one-row DataFrame, one keyed ``params...`` as ``predict(input, params=params)``."""
    out = logged["tmp"] / "predicted.npz"
    script = textwrap.dedent(
        f"""
        import numpy as np, pandas as pd, mlflow
        model = mlflow.pyfunc.load_model("models:/{NAME}@best")
        requests = {requests!r}
        results = {{}}
        for key, request in requests.items():
            if key.startswith("frame"):
                results[key] = model.predict(pd.DataFrame([request]))
            elif key.startswith("params"):
                results[key] = model.predict(request["input"], params=request["params"])
            else:
                results[key] = model.predict(request)
            assert isinstance(results[key], np.ndarray), type(results[key])
        import fetalgan
        results["fetalgan_file"] = np.array(fetalgan.__file__)
        np.savez({str(out)!r}, **results)
        """
    )
    env = os.environ | {"MLFLOW_TRACKING_URI": logged["uri"]}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=logged["tmp"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


def test_loaded_model_gives_the_images_of_generate(logged, tmp_path):
    got = predict_in_fresh_process(
        logged,
        {
            "dict": {"n": 16, "seed": 0},
            "frame": {"n": 16, "seed": 0, "batch_size": 5},
            "dict_seed1": {"n": 4, "seed": 1},
            # the signature's inference params, alone or beside an input row
            "params": {"input": {}, "params": {"n": 16, "seed": 0, "batch_size": 3}},
            "params_seed1": {"input": {"n": 4}, "params": {"seed": 1}},
        },
    )
    # fetalgan came with the model (code_paths), not from this checkout's import path
    assert "/code/fetalgan/" in str(got["fetalgan_file"])

    networks, cfg = load_generator(logged["checkpoint"], device="cpu")
    expected = sample_images(networks, cfg, 16, seed=0).numpy()[:, 0]
    paths = generate(logged["checkpoint"], 16, tmp_path / "g", seed=0, device="cpu", progress=False)
    written = np.stack([read_grey(p) for p in paths])
    assert np.array_equal(written, expected)

    for key in ("dict", "frame", "params"):
        assert got[key].dtype == np.uint8
        assert got[key].shape == (16, 32, 32)
        assert np.array_equal(got[key], written), key
    assert got["dict"].std() > 0  # real images, not a constant
    other = sample_images(networks, cfg, 4, seed=1).numpy()[:, 0]
    assert np.array_equal(got["dict_seed1"], other)
    assert np.array_equal(got["params_seed1"], other)
    assert not np.array_equal(got["dict_seed1"], written[:4])


def test_model_is_attached_to_the_finished_run_and_registered(logged):
    client, run_id = logged["client"], logged["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.end_time == logged["before"].end_time
    assert [m.step for m in client.get_metric_history(run_id, "fid")] == [1]

    assert logged["version"] == "1"
    version = client.get_model_version_by_alias(NAME, "best")
    assert str(version.version) == "1"
    assert version.run_id == run_id
    assert version.source.startswith("models:/m-")  # a LoggedModel, not a folder of files
    model = client.get_logged_model(version.source[len("models:/") :])
    assert model.name == MODEL_NAME
    assert model.source_run_id == run_id
    assert model.experiment_id == logged["experiment"]
    assert model.status.name == "READY"
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]


def test_model_signature_input_example_and_requirements(logged, tmp_path):
    """The signature names the request fields as inputs and as inference params and the
    output's shape; the input example is logged; requirements are pinned without local
    version labels (``torch==2.14.1``, never ``+cu130``/``+cpu``)."""
    import importlib.metadata

    from mlflow.models import Model

    uri = f"models:/{NAME}@best"
    with _store(logged["uri"]):  # models:/ URIs read the fluent API's store
        info = mlflow.models.get_model_info(uri)
        requirements = mlflow.pyfunc.get_model_dependencies(uri)
        local = mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "m"))
    signature = info.signature
    assert [(c.name, c.type.name, c.required) for c in signature.inputs.inputs] == [
        ("n", "long", False),
        ("seed", "long", False),
        ("batch_size", "long", False),
    ]
    assert [(p.name, p.dtype.name, p.default) for p in signature.params.params] == [
        ("n", "long", None),
        ("seed", "long", None),
        ("batch_size", "long", None),
    ]
    (output,) = signature.outputs.inputs
    assert output.type == np.dtype(np.uint8) and output.shape == (-1, 32, 32)
    example = Model.load(local).load_input_example(local)
    assert example == {"n": 1, "seed": 0}
    pins = [line.strip() for line in open(requirements) if line.strip()]
    assert pins and all("+" not in pin for pin in pins), pins
    torch_version = importlib.metadata.version("torch").partition("+")[0]
    assert f"torch=={torch_version}" in pins


def test_a_second_model_moves_the_alias(logged, tmp_path):
    client = logged["client"]
    run_id = client.create_run(logged["experiment"]).info.run_id
    client.set_terminated(run_id, status="KILLED")
    version = log_generator_model(
        run_id, logged["checkpoint"], f"{NAME}-other", tracking_uri=logged["uri"], alias="top"
    )
    assert version == "1"
    assert client.get_model_version_by_alias(f"{NAME}-other", "top").run_id == run_id
    assert client.get_run(run_id).info.status == "KILLED"
    assert client.get_model_version_by_alias(NAME, "best").run_id == logged["run_id"]


def test_a_reserved_alias_is_a_value_error(logged):
    run_id = logged["client"].create_run(logged["experiment"]).info.run_id
    with pytest.raises(ValueError, match="alias 'latest'"):
        log_generator_model(
            run_id,
            logged["checkpoint"],
            f"{NAME}-x",
            tracking_uri=logged["uri"],
            alias="latest",
        )


def test_model_checkpoint_downloads_the_checkpoint(logged, tmp_path):
    uri = logged["uri"]
    path = model_checkpoint(f"models:/{NAME}@best", tmp_path / "dl", tracking_uri=uri)
    assert path.is_file() and path.parent == tmp_path / "dl"
    assert path.read_bytes() == logged["checkpoint"].read_bytes()
    state = load_checkpoint(path)
    original = load_checkpoint(logged["checkpoint"])
    for name, weights in original["networks"]["generator"].items():
        assert torch.equal(state["networks"]["generator"][name], weights), name
    assert list((tmp_path / "dl").iterdir()) == [path]  # only the checkpoint came down

    by_version = model_checkpoint(f"models:/{NAME}/1", tmp_path / "v", tracking_uri=uri)
    assert by_version.read_bytes() == path.read_bytes()


@pytest.mark.parametrize(
    "models_uri",
    [f"models:/{NAME}@nope", "models:/unknown@best", f"models:/{NAME}/7", "runs:/abc/model"],
)
def test_model_checkpoint_unknown_model_is_a_value_error(logged, tmp_path, models_uri):
    with pytest.raises(ValueError, match="models:/"):
        model_checkpoint(models_uri, tmp_path / "dl", tracking_uri=logged["uri"])


def test_a_version_that_is_not_a_generator_model_is_a_value_error(logged, tmp_path):
    """A version whose source is a plain folder of checkpoints (no MLmodel)."""
    client = logged["client"]
    run_id = client.create_run(logged["experiment"]).info.run_id
    client.log_artifact(run_id, str(logged["checkpoint"]), "checkpoint")
    client.create_registered_model("plain")
    source = f"{client.get_run(run_id).info.artifact_uri}/checkpoint"
    version = client.create_model_version("plain", source=source, run_id=run_id)
    client.set_registered_model_alias("plain", "best", version.version)
    with pytest.raises(ValueError, match="not a fetalgan generator model"):
        model_checkpoint("models:/plain@best", tmp_path / "dl", tracking_uri=logged["uri"])


def test_unknown_run_is_a_value_error(logged):
    with pytest.raises(ValueError, match="not found"):
        log_generator_model("0" * 32, logged["checkpoint"], NAME, tracking_uri=logged["uri"])


def test_predict_input_forms():
    assert _request({"n": 3}) == {"n": 3, "seed": 0, "batch_size": 256}
    # inference params (MLflow fills the ones not given with None), alone or with the input
    empty = pd.DataFrame()
    given = {"n": 4, "seed": 2, "batch_size": None}
    assert _request(empty, given) == {"n": 4, "seed": 2, "batch_size": 256}
    assert _request({"n": 4, "seed": 2}, given) == {"n": 4, "seed": 2, "batch_size": 256}
    assert _request({"n": 4}, {"seed": 7}) == {"n": 4, "seed": 7, "batch_size": 256}
    with pytest.raises(ValueError, match="'n' is 4 in the input but 5 in params"):
        _request({"n": 4}, {"n": 5})
    with pytest.raises(ValueError, match="input needs 'n'"):
        _request(empty, {"n": None, "seed": 1})
    assert _request({"n": [4], "seed": np.int64(2)}) == {"n": 4, "seed": 2, "batch_size": 256}
    frame = pd.DataFrame([{"n": 5, "seed": 1, "batch_size": None}])
    assert _request(frame) == {"n": 5, "seed": 1, "batch_size": 256}
    for bad in (
        {"seed": 0},
        {"n": 2.5},
        {"n": 2, "size": 3},
        pd.DataFrame([{"n": 1}, {"n": 2}]),
        [1, 2],
    ):
        with pytest.raises(ValueError, match="predict"):
            _request(bad)


def test_requirements_drop_local_version_labels(monkeypatch):
    """A CUDA or CPU build of torch (``2.14.1+cu130``, ``2.14.1+cpu``) is pinned by its
    public version, which pip can install anywhere; a package not installed is left out."""
    import importlib.metadata

    from fetalgan.tracking import model

    installed = {"torch": "2.14.1+cu130", "torchvision": "0.29.1+cpu", "numpy": "2.3.0"}

    def version(name):
        if name not in installed:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(model.importlib.metadata, "version", version)
    assert model.pip_requirements() == ["torch==2.14.1", "torchvision==0.29.1", "numpy==2.3.0"]
