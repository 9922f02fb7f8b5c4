"""The best generator as a loadable MLflow model (pyfunc), and its checkpoint back out.

``log_generator_model(run_id, checkpoint, name, tracking_uri=...)`` logs a pyfunc model named
``model`` (:data:`~fetalgan.tracking.names.MODEL_NAME`) for an existing, possibly finished,
run: the checkpoint is the model's ``checkpoint`` artefact, the fetalgan package travels as its
code, its requirements are pinned to what is installed here (without local version labels:
``torch==2.14.1``, not ``torch==2.14.1+cu130``, so another platform's build satisfies them).
Its signature says what a request holds (``n``, ``seed``, ``batch_size``: integers, as an input
row or as inference params) and what comes back (``(N, R, R) uint8``), with an input example.
It registers the model as a new version of ``name`` with alias ``best``. Then, in any process
that can reach the store::

    model = mlflow.pyfunc.load_model("models:/NAME@best")
    images = model.predict({"n": 16, "seed": 0})  # (16, R, R) uint8
    images = model.predict({}, params={"n": 16, "seed": 0})  # the same images

gives exactly the images ``fetalgan generate`` writes for that checkpoint and seed.
``model_checkpoint("models:/NAME@best", dst, tracking_uri=...)`` downloads only the checkpoint
(what ``fetalgan generate --best`` reads).

Imports ``mlflow.pyfunc`` when imported (the model class must be a module-level subclass of
``PythonModel`` so that MLflow pickles it by reference): import this module only where a model
is logged or read.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from fetalgan.tracking.names import MODEL_NAME

CHECKPOINT_ARTIFACT = "checkpoint"  # key of the checkpoint in the model's ``artifacts``
# What loading the model and sampling needs, pinned to the installed versions. Explicit, so
# that MLflow does not infer requirements (which loads the model and resolves packages).
REQUIREMENTS = ("torch", "torchvision", "numpy", "pyyaml", "diffusers", "mlflow")
DEFAULT_BATCH_SIZE = 256
REQUEST_FIELDS = ("n", "seed", "batch_size")  # what a predict request may give, all integers
# Logged with the model; MLflow runs it through the model when logging it, so it is small.
INPUT_EXAMPLE = {"n": 1, "seed": 0}
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # fetalgan/: the model's code dependency


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """A fetalgan checkpoint as a pyfunc model, on the CPU.

    ``predict`` takes ``{"n": N, "seed": S}`` (optionally ``"batch_size"``), or a one-row
    DataFrame with those columns, or the same fields as inference ``params`` (a field given
    both ways must agree), and returns ``(N, R, R) uint8`` images: the images of
    ``fetalgan generate CHECKPOINT -n N --seed S``."""

    # MLflow wraps ``predict`` of a subclass to validate its input by the type hints, and warns
    # when there are none (a warnings filter cannot silence it: MLflow resets the filters
    # around it). The input here is a dict or a DataFrame, checked by ``_request``; MLflow's
    # own subclasses (ChatModel, ...) opt out with this attribute.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from fetalgan.generate import load_generator

        self._networks, self._cfg = load_generator(
            context.artifacts[CHECKPOINT_ARTIFACT], device="cpu"
        )

    def predict(self, context, model_input, params=None):
        from fetalgan.sampling import sample_images

        request = _request(model_input, params)
        images = sample_images(
            self._networks,
            self._cfg,
            request["n"],
            seed=request["seed"],
            batch_size=request["batch_size"],
        )
        return images[:, 0].contiguous().numpy()


def _scalar(key: str, value: Any) -> Any:
    """One value of a request field: a list/array/Series of length one gives its element."""
    if hasattr(value, "tolist"):  # numpy array or scalar, pandas Series
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"predict: {key!r} must be one value, got {len(value)}")
        value = value[0]
    return value


def _int_field(row: dict, key: str, default: int | None) -> int:
    value = _scalar(key, row.get(key))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if default is None:
            raise ValueError(f"predict: input needs {key!r}, e.g. {{'n': 16, 'seed': 0}}")
        return default
    if isinstance(value, bool) or not float(value).is_integer():
        raise ValueError(f"predict: {key!r} must be an integer, got {value!r}")
    return int(value)


def _request(model_input, params: dict | None = None) -> dict[str, int]:
    """``{"n", "seed", "batch_size"}`` from a dict or a one-row pandas DataFrame (MLflow hands
    an empty one when the request came only as params), and inference ``params`` (MLflow
    fills the ones not given with None)."""
    if hasattr(model_input, "iloc") and hasattr(model_input, "columns"):  # DataFrame
        if len(model_input) == 0 and len(model_input.columns) == 0:
            row = {}
        elif len(model_input) != 1:
            raise ValueError(
                f"predict: a DataFrame input must have exactly one row, got {len(model_input)}"
            )
        else:
            row = model_input.iloc[0].to_dict()
    elif isinstance(model_input, dict):
        row = dict(model_input)
    else:
        raise ValueError(
            "predict: expected a dict {'n': N, 'seed': S[, 'batch_size': B]} or a one-row "
            f"DataFrame with those columns, got {type(model_input).__name__}"
        )
    unknown = set(row) - set(REQUEST_FIELDS)
    if unknown:
        raise ValueError(
            f"predict: unknown input field(s) {sorted(unknown)}; use n, seed, batch_size"
        )
    for key, value in (params or {}).items():
        if key not in REQUEST_FIELDS or value is None:
            continue
        given = _scalar(key, row.get(key))
        if given is not None and not (isinstance(given, float) and math.isnan(given)):
            if given != value:
                raise ValueError(
                    f"predict: {key!r} is {given!r} in the input but {value!r} in params; "
                    "give it one way"
                )
        row[key] = value
    return {
        "n": _int_field(row, "n", None),
        "seed": _int_field(row, "seed", 0),
        "batch_size": _int_field(row, "batch_size", DEFAULT_BATCH_SIZE),
    }


# --------------------------------------------------------------------------------------------
# Logging, registering, reading back
# --------------------------------------------------------------------------------------------


def _quiet() -> None:
    """MLflow's lines at fetalgan's logging level (see ``store.quiet``), without its
    CloudPickle warning about :class:`GeneratorModel` (see :class:`_ByReference`)."""
    from fetalgan.tracking.store import quiet

    quiet()
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    if not any(isinstance(f, _ByReference) for f in pyfunc_logger.filters):
        pyfunc_logger.addFilter(_ByReference())


@contextlib.contextmanager
def _store(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (tracking and registry) at ``tracking_uri`` for the block,
    then restore exactly what was there before, ``MLFLOW_TRACKING_URI`` and
    ``MLFLOW_REGISTRY_URI`` included (``mlflow.set_tracking_uri`` exports its value to the
    environment, and MLflow's own ``_use_tracking_uri`` unsets it afterwards). Not
    thread-safe: the fluent API's URIs are process globals."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    env = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    old_tracking, old_registry = tracking_utils._tracking_uri, registry_utils._registry_uri
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(old_tracking)
        registry_utils._registry_uri = old_registry
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def pip_requirements() -> list[str]:
    """``REQUIREMENTS`` pinned to the installed versions (one not installed is left out),
    without local version labels: ``torch==2.14.1+cu130`` is pinned as ``torch==2.14.1``, which
    pip resolves on a machine with another CUDA, or none."""
    pins = []
    for name in REQUIREMENTS:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        pins.append(f"{name}=={version.partition('+')[0]}")
    return pins


def model_signature(checkpoint_file: Path):
    """The generator model's signature: the request fields (:data:`REQUEST_FIELDS`, integers)
    as optional input columns and as inference params (default None: not given), the output
    ``(N, R, R) uint8`` at the resolution of one image sampled from ``checkpoint_file``."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    from fetalgan.generate import load_generator
    from fetalgan.sampling import sample_images

    networks, cfg = load_generator(checkpoint_file, device="cpu")
    height, width = sample_images(networks, cfg, 1, seed=0).shape[-2:]
    return ModelSignature(
        inputs=Schema([ColSpec("long", key, required=False) for key in REQUEST_FIELDS]),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, height, width))]),
        params=ParamSchema([ParamSpec(key, "long", None) for key in REQUEST_FIELDS]),
    )


class _ByReference(logging.Filter):
    """Drops MLflow's warning that a ``python_model`` object is serialised with CloudPickle:
    :class:`GeneratorModel` is a module-level class of the package the model carries as its
    code, so what is pickled is a reference to it and no state of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Passing a Python object as `python_model`" not in record.getMessage()


def log_generator_model(
    run_id: str,
    checkpoint_file: Path,
    name: str,
    *,
    tracking_uri: str,
    alias: str = "best",
) -> str | None:
    """Log ``checkpoint_file`` as the pyfunc model ``model`` of run ``run_id`` (which may be
    finished: its status and end time are left as they are), register it as a new version of
    the registered model ``name`` and point ``alias`` at that version. Returns the version, or
    None (with a warning) when the store has no model registry.

    The model is a LoggedModel in the run's experiment with ``source_run_id = run_id``, listed
    in the run's outputs. No run is started; the process's tracking URI is restored.
    ValueError for an unknown run, or when another MLflow run is active in this thread (the
    model would be attached to that run)."""
    from mlflow.entities import LoggedModelOutput
    from mlflow.exceptions import MlflowException

    checkpoint_file = Path(checkpoint_file)
    if not checkpoint_file.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint_file} not found")
    _quiet()
    active = mlflow.active_run()
    if active is not None and active.info.run_id != run_id:
        raise ValueError(
            f"MLflow run {active.info.run_id} is active; end it before logging the model of "
            f"run {run_id} (it would be attached to the active run)"
        )
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ValueError(f"MLflow run {run_id!r} not found in {tracking_uri}") from None

    with _store(tracking_uri):
        # The LoggedModel is created here, in the run's experiment and with the run as its
        # source, rather than by log_model: that would take the experiment from the fluent
        # context and need the run active (re-opening a finished run) to link it.
        logged = mlflow.initialize_logged_model(
            name=MODEL_NAME,
            source_run_id=run_id,
            experiment_id=run.info.experiment_id,
            params={key: str(value) for key, value in run.data.params.items()},
        )
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=GeneratorModel(),
            artifacts={CHECKPOINT_ARTIFACT: str(checkpoint_file.resolve())},
            code_paths=[str(PACKAGE_DIR)],
            pip_requirements=pip_requirements(),
            signature=model_signature(checkpoint_file),
            input_example=INPUT_EXAMPLE,
            model_id=logged.model_id,
        )
        if active is None:  # log_model links the model to the active run only
            client.log_outputs(run_id, [LoggedModelOutput(model_id=info.model_id, step=0)])
        try:
            version = _register(client, name, info.model_uri, info.model_id)
        except MlflowException as err:
            warnings.warn(
                f"MLflow model registry of {tracking_uri}: model {info.model_uri} of run "
                f"{run_id} logged but not registered as {name!r} ({err.message})",
                stacklevel=2,
            )
            return None
    try:
        client.set_registered_model_alias(name, alias, version)
    except MlflowException as err:
        raise ValueError(
            f"registered model {name!r} version {version}: cannot set alias {alias!r} "
            f"({err.message})"
        ) from None
    return version


def _register(client, name: str, model_uri: str, model_id: str) -> str:
    """A new version of the registered model ``name`` (created first if new) from the logged
    model ``model_uri`` (``models:/<model_id>``): what ``mlflow.register_model`` does for such a
    URI, without the two lines it prints on stderr whatever the logging level."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return str(client.create_model_version(name, source=model_uri, model_id=model_id).version)


def _model_version(client, models_uri: str, tracking_uri: str):
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> the ModelVersion."""
    from mlflow.exceptions import MlflowException

    ref = models_uri[len("models:/") :].strip("/") if models_uri.startswith("models:/") else ""
    if "@" in ref:
        model, sep, label = ref.partition("@")
    else:
        model, sep, label = ref.rpartition("/")
    if not (model and sep and label):
        raise ValueError(f"{models_uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    try:
        if sep == "@":
            return client.get_model_version_by_alias(model, label)
        return client.get_model_version(model, label)
    except MlflowException as err:
        known = [m.name for m in client.search_registered_models(max_results=100)]
        raise ValueError(
            f"{models_uri}: no such registered model version in {tracking_uri} "
            f"({err.message}); registered models there: {', '.join(known) or 'none'}"
        ) from None


def model_checkpoint(models_uri: str, dst: Path, *, tracking_uri: str) -> Path:
    """Download the checkpoint of the generator model ``models:/NAME@ALIAS`` (or
    ``models:/NAME/VERSION``) registered by :func:`log_generator_model` into ``dst``; returns
    the checkpoint file. Only the checkpoint is downloaded, not the model's code. ValueError
    for an unknown model, alias or version, or a version that is not a fetalgan generator
    model."""
    import yaml
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    _quiet()
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    version = _model_version(client, models_uri, tracking_uri)
    # Where the version's files are (for a logged model: its artefact location).
    root = client.get_model_version_download_uri(version.name, version.version)
    root = root.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="fetalgan-mlmodel-") as tmp:
        try:
            mlmodel = download_artifacts(
                artifact_uri=f"{root}/MLmodel", dst_path=tmp, tracking_uri=tracking_uri
            )
            flavor = yaml.safe_load(Path(mlmodel).read_text())["flavors"]["python_function"]
            relative = flavor["artifacts"][CHECKPOINT_ARTIFACT]["path"]
        except (MlflowException, OSError, KeyError, TypeError) as err:
            raise ValueError(
                f"{models_uri} (version {version.version}, {root}) is not a fetalgan generator "
                f"model: no {CHECKPOINT_ARTIFACT!r} artefact in an MLmodel there ({err})"
            ) from None
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    try:
        local = download_artifacts(
            artifact_uri=f"{root}/{relative}",
            dst_path=str(dst),
            tracking_uri=tracking_uri,
        )
    except MlflowException as err:
        raise ValueError(f"{models_uri}: cannot download its checkpoint ({err})") from None
    return Path(local)
