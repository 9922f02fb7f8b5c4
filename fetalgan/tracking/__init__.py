"""MLflow tracking of sweeps: one experiment per sweep ``name``, a parent run per sweep, a child
run per trial, the best checkpoint back out. The ONLY module that imports mlflow.

Store: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded
``sqlite:///mlruns.db``. For a sqlite store the experiment's artefacts go to ``mlartifacts/``
beside the database file (``./mlartifacts`` by default); a tracking server decides for itself.

What a child run holds (all logged by the sweep driver, the one writer of the store):

- params: the trial's full TrainConfig, flattened (``data.size``, ``lr_g``, ...);
- metrics per evaluation with ``step = epoch``: ``fid``, ``kid_mean``, ``loss_g``, ...;
- artefacts: ``samples/epoch_NNNN.png``, ``curves.png`` (losses and FID against epoch),
  ``config.yaml``, ``environment.json``, ``checkpoint/last.pt`` and ``checkpoint/best.pt``
  (best by the sweep's metric), ``checkpoint/epoch_NNNN.pt`` for the sweep's
  ``checkpoint_epochs``;
- tags: ``fetalgan.trial_id``, ``fetalgan.role = trial``, ``stopped_early``, ``error``.

Runs end FINISHED, FAILED (error in the ``error`` tag) or KILLED (the driver was interrupted;
``--resume`` sets them running again). A restarted trial is found again by its Tune trial id
(also stored in its checkpoint's ``extra``), so it continues its own run.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
import weakref
from pathlib import Path
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
ARTIFACT_DIR = "mlartifacts"
TRIAL_TAG = "fetalgan.trial_id"
ROLE_TAG = "fetalgan.role"
PACKAGES = ("fetalgan", "torch", "torchvision", "numpy", "ray", "mlflow", "optuna", "pytorch-fid")
# Result values that are not curves: logged as tags once (strings) or skipped.
TAG_KEYS = ("weights_sha256",)


class NoBestRunError(ValueError):
    """An experiment has no finished trial run with the metric (or no checkpoint artefact)."""


# --------------------------------------------------------------------------------------------
# Store location and reachability
# --------------------------------------------------------------------------------------------


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlruns.db``. A
    relative sqlite path is made absolute (Ray workers and later commands may run elsewhere)."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        uri = f"sqlite:///{path.resolve()}" if not path.is_absolute() else uri
    elif "://" not in uri:  # a bare directory: MLflow's file store
        raise ValueError(
            f"tracking URI {uri!r}: use sqlite:///PATH.db (embedded) or http://HOST:PORT "
            "(a server, e.g. mlflow/server.sh); MLflow 3's file store is not supported"
        )
    return uri


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment's artefacts go: ``mlartifacts/`` beside a sqlite database file;
    None (the server's default) for a tracking server."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        return (db.parent / ARTIFACT_DIR).resolve().as_uri()
    return None


def check_tracking(tracking_uri: str, *, timeout_s: float = 5.0) -> None:
    """Fail fast, before any Ray work, when the store cannot be used: a server that does not
    answer ``GET /health``, or a sqlite file in a directory that cannot be created."""
    if tracking_uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        url = tracking_uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                body = response.read(64).decode(errors="replace").strip()
        except (urllib.error.URLError, OSError) as err:
            raise ValueError(
                f"MLflow tracking server {tracking_uri} is not reachable ({err}); start it "
                "(mlflow/server.sh) or point --tracking-uri / MLFLOW_TRACKING_URI elsewhere"
            ) from None
        if body != "OK":
            raise ValueError(f"MLflow tracking server {url} answered {body!r}, expected 'OK'")
    elif tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(
                f"tracking URI {tracking_uri}: cannot create {db.parent} ({err})"
            ) from None


def _quiet() -> None:
    """No table-creation INFO lines or download progress bars between fetalgan's own output."""
    import logging

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _client(tracking_uri: str | None):
    from mlflow import MlflowClient

    _quiet()

    return MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))


def ui_command(tracking_uri: str) -> str:
    """The shell command that opens the MLflow UI on this store."""
    if tracking_uri.startswith("sqlite:///"):
        artifacts = artifact_location(tracking_uri)
        return (
            f"mlflow ui --backend-store-uri {tracking_uri} "
            f"--default-artifact-root {artifacts} --host 127.0.0.1 --port 5000"
        )
    return f"open {tracking_uri} in a browser"


def runs_table_url(
    experiment_id: str, tracking_uri: str, metric: str = "fid", mode: str = "min"
) -> str:
    """The runs table of an experiment, flat (children unfolded) and sorted by ``metric``, with
    metric columns shown (MLflow 3 folds child runs and hides metrics by default)."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith("http") else "http://127.0.0.1:5000"
    ascending = "true" if mode == "min" else "false"
    return (
        f"{base}/#/experiments/{experiment_id}/runs"
        f"?orderByKey=metrics.%60{metric}%60&orderByAsc={ascending}"
    )


# --------------------------------------------------------------------------------------------
# Environment of a run
# --------------------------------------------------------------------------------------------


def _git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _image_digest(image: str) -> str | None:
    """sha256 of a container image file (an Apptainer ``.sif``), or None if it is not a file."""
    import hashlib

    path = Path(image)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


_ENVIRONMENT: dict[str, Any] | None = None


def environment() -> dict[str, Any]:
    """Where and with what the sweep runs: git sha, package versions, host, Python, Slurm job
    and container image when present. Computed once per process (the image digest reads the
    whole image)."""
    global _ENVIRONMENT
    if _ENVIRONMENT is None:
        versions = {}
        for name in PACKAGES:
            try:
                versions[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                versions[name] = None
        env = {
            "git_sha": _git_sha(),
            "host": socket.gethostname(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "packages": versions,
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_nodelist": os.environ.get("SLURM_JOB_NODELIST"),
            "container_image": os.environ.get("FETALGAN_IMAGE"),
        }
        if env["container_image"]:
            env["container_image_sha256"] = _image_digest(env["container_image"])
        _ENVIRONMENT = env
    return _ENVIRONMENT


def _env_tags(env: dict[str, Any]) -> dict[str, str]:
    tags = {
        "git_sha": env.get("git_sha"),
        "host": env.get("host"),
        "slurm_job_id": env.get("slurm_job_id"),
        "container_image": env.get("container_image"),
        "container_image_sha256": env.get("container_image_sha256"),
    }
    return {k: str(v) for k, v in tags.items() if v}


# --------------------------------------------------------------------------------------------
# Logging a sweep
# --------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _link_as(src: Path, name: str, tmp: Path) -> Path:
    """``tmp/name`` pointing at ``src`` (MLflow names an artefact after its file)."""
    tmp.mkdir(parents=True, exist_ok=True)
    dst = tmp / name
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem
        dst.symlink_to(Path(src).resolve())
    return dst


class SweepTracker:
    """Writes one sweep into MLflow. Used by the sweep driver only (one writer per store).

    ``experiment``: the sweep's name. ``metric``/``mode``: what "best" means. Construct it before
    starting Ray: it checks the store and creates the experiment.
    """

    def __init__(
        self,
        experiment: str,
        *,
        metric: str = "fid",
        mode: str = "min",
        tracking_uri: str | None = None,
        checkpoint_epochs: tuple[int, ...] = (),
    ):
        from mlflow import MlflowClient

        _quiet()
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        check_tracking(self.tracking_uri)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment = experiment
        self.metric, self.mode = metric, mode
        self.checkpoint_epochs = set(checkpoint_epochs)
        self.experiment_id = self._ensure_experiment()
        self.parent_run_id: str | None = None
        self._best: dict[str, float] = {}  # run id -> best metric value so far
        self._tmp = Path(tempfile.mkdtemp(prefix="fetalgan-mlflow-"))  # artefact names
        weakref.finalize(self, shutil.rmtree, self._tmp, ignore_errors=True)

    def _ensure_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            try:
                return self.client.create_experiment(
                    self.experiment, artifact_location=artifact_location(self.tracking_uri)
                )
            except MlflowException as err:
                raise ValueError(f"MLflow experiment {self.experiment!r}: {err}") from None
        if exp.lifecycle_stage == "deleted":
            self.client.restore_experiment(exp.experiment_id)
        return exp.experiment_id

    # ---- parent run ----------------------------------------------------------------------

    def start_parent(self, run_id: str | None = None, *, tags: dict[str, str] | None = None) -> str:
        """Create the sweep's parent run, or (resumed sweep) set ``run_id`` running again."""
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=time.strftime(f"{self.experiment}-%Y%m%d-%H%M%S"),
                tags={ROLE_TAG: "sweep", **_env_tags(environment()), **(tags or {})},
            )
            run_id = run.info.run_id
            self.client.log_dict(run_id, environment(), "environment.json")
        self.parent_run_id = run_id
        self.client.set_experiment_tag(self.experiment_id, "fetalgan.metric", self.metric)
        self.client.set_experiment_tag(self.experiment_id, "fetalgan.mode", self.mode)
        return run_id

    def log_sweep_config(self, sweep_yaml: str) -> None:
        self.client.log_text(self.parent_run_id, sweep_yaml, "sweep.yaml")

    def finish_parent(self, status: str, *, register: bool = True) -> dict | None:
        """Tag the parent with the best child, register that child's checkpoint as version of
        the model named after the experiment (alias ``best``), end the parent with ``status``.
        Returns the best run (see :func:`best_run`) or None when no trial finished."""
        best = None
        try:
            best = best_run(
                self.experiment,
                metric=self.metric,
                mode=self.mode,
                tracking_uri=self.tracking_uri,
                parent_run_id=self.parent_run_id,
            )
        except NoBestRunError:
            pass  # no finished trial has the metric yet (all failed, or interrupted early)
        if best is not None:
            self.client.set_tag(self.parent_run_id, "best_run_id", best["run_id"])
            self.client.log_metric(self.parent_run_id, f"best_{self.metric}", best["value"])
            if register:
                best["model_version"] = self.register(best["run_id"])
        self.client.set_terminated(self.parent_run_id, status=status)
        return best

    def register(self, run_id: str) -> str | None:
        """A new version of the registered model ``<experiment>`` from ``run_id``'s
        ``checkpoint/`` artefacts, aliased ``best``; returns the version (None if the store
        has no registry). ``register_model`` cannot be used: it wants a logged model."""
        from mlflow.exceptions import MlflowException

        name = self.experiment
        try:
            if not self.client.search_registered_models(filter_string=f"name = '{name}'"):
                self.client.create_registered_model(
                    name, description="fetalgan sweep: best checkpoint"
                )
            run = self.client.get_run(run_id)
            version = self.client.create_model_version(
                name, source=f"{run.info.artifact_uri}/checkpoint", run_id=run_id
            )
            self.client.set_registered_model_alias(name, "best", version.version)
        except MlflowException as err:
            warnings.warn(
                f"MLflow model registry: could not register run {run_id}: {err}", stacklevel=2
            )
            return None
        return version.version

    # ---- trial runs ----------------------------------------------------------------------

    def find_trial_run(self, trial_id: str) -> str | None:
        """The child run of this parent for Tune trial ``trial_id``, if one exists."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{TRIAL_TAG}` = '{trial_id}' and "
                f"tags.mlflow.parentRunId = '{self.parent_run_id}'"
            ),
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def start_trial(self, trial_id: str, trial_name: str, config: dict, config_yaml: str) -> str:
        """The trial's child run: created with params, config and environment the first time,
        set running again when the trial restarts (after a crash or a driver resume)."""
        run_id = self.find_trial_run(trial_id)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            if "error" in self.client.get_run(run_id).data.tags:  # a crash it restarts from
                self.client.delete_tag(run_id, "error")
            self._best.setdefault(run_id, self._history_best(run_id))
            return run_id
        from mlflow.entities import Param

        from fetalgan.config import flatten

        env = environment()
        run = self.client.create_run(
            self.experiment_id,
            run_name=trial_name,
            tags={
                "mlflow.parentRunId": self.parent_run_id,
                TRIAL_TAG: trial_id,
                ROLE_TAG: "trial",
                **_env_tags(env),
            },
        )
        run_id = run.info.run_id
        params = [
            Param(k, json.dumps(v) if isinstance(v, list) else str(v))
            for k, v in flatten(config).items()
        ]
        for start in range(0, len(params), 100):  # MLflow's batch limit
            self.client.log_batch(run_id, params=params[start : start + 100])
        self.client.log_text(run_id, config_yaml, "config.yaml")
        self.client.log_dict(run_id, env, "environment.json")
        self._best[run_id] = math.inf if self.mode == "min" else -math.inf
        return run_id

    def _history_best(self, run_id: str) -> float:
        values = [m.value for m in self.client.get_metric_history(run_id, self.metric)]
        pick = min if self.mode == "min" else max
        return pick(values) if values else (math.inf if self.mode == "min" else -math.inf)

    def log_result(self, run_id: str, result: dict[str, Any]) -> bool:
        """Log one evaluation's metrics at ``step = result['epoch']``; returns whether it is the
        run's best so far by the sweep's metric."""
        from mlflow.entities import Metric, RunTag

        epoch = int(result["epoch"])
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), now, epoch)
            for k, v in result.items()
            if k != "epoch" and _is_number(v)
        ]
        tags = [RunTag(k, str(result[k])) for k in TAG_KEYS if k in result]
        for key in ("worker_host", "worker_ip"):
            if key in result:
                tags.append(RunTag(key, str(result[key])))
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        value = result.get(self.metric)
        if not _is_number(value):
            return False
        best = self._best.get(run_id, math.inf if self.mode == "min" else -math.inf)
        better = value < best if self.mode == "min" else value > best
        if better:
            self._best[run_id] = value
        return better

    def log_evaluation_files(
        self,
        run_id: str,
        epoch: int,
        *,
        checkpoint_file: Path | None,
        sample_grid: Path | None,
        is_best: bool,
    ) -> None:
        """The evaluation's sample grid, curves, and checkpoints (last; best when ``is_best``;
        ``epoch_NNNN.pt`` when the epoch is one of ``checkpoint_epochs``)."""
        if sample_grid is not None and Path(sample_grid).is_file():
            grid = _link_as(Path(sample_grid), f"epoch_{epoch:04d}.png", self._tmp)
            self.client.log_artifact(run_id, str(grid), "samples")
        self.log_curves(run_id)
        if checkpoint_file is not None and Path(checkpoint_file).is_file():
            names = ["last.pt"]
            if is_best:
                names.append("best.pt")
            if epoch in self.checkpoint_epochs:
                names.append(f"epoch_{epoch:04d}.pt")
            for name in names:
                self.client.log_artifact(
                    run_id, str(_link_as(Path(checkpoint_file), name, self._tmp)), "checkpoint"
                )

    def log_curves(self, run_id: str) -> None:
        """``curves.png``: losses (left) and the sweep metric / FID (right) against epoch."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        def history(key):
            points = sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))
            return [p[0] for p in points], [p[1] for p in points]

        fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(9, 3.5))
        for key in ("loss_d", "loss_g"):
            ax_loss.plot(*history(key), marker="o", ms=3, label=key)
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("loss (mean over the epoch)")
        ax_loss.legend()
        for key in dict.fromkeys(("fid", self.metric)):
            steps, values = history(key)
            if steps:
                ax_metric.plot(steps, values, marker="o", ms=3, label=key)
        ax_metric.set_xlabel("epoch")
        ax_metric.legend()
        fig.tight_layout()
        self._tmp.mkdir(parents=True, exist_ok=True)
        path = self._tmp / "curves.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        self.client.log_artifact(run_id, str(path))

    def end_trial(
        self, run_id: str, status: str, *, error: str | None = None, stopped_early: bool = False
    ) -> None:
        """End a child run: FINISHED, FAILED (``error`` tag) or KILLED; tag ``stopped_early``."""
        if error:
            self.client.set_tag(run_id, "error", error[-5000:])
        self.client.set_tag(run_id, "stopped_early", str(bool(stopped_early)).lower())
        self.client.set_terminated(run_id, status=status)

    def running_trial_runs(self) -> list[str]:
        """Child runs of this parent still marked RUNNING."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}' and attributes.status = 'RUNNING'",
        )
        return [r.info.run_id for r in runs]


# --------------------------------------------------------------------------------------------
# The best checkpoint back out
# --------------------------------------------------------------------------------------------


def _experiment(client, experiment: str, tracking_uri: str | None):
    """The MLflow experiment named ``experiment``; ValueError listing the ones there."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise ValueError(
            f"MLflow experiment {experiment!r} not found in {resolve_tracking_uri(tracking_uri)}; "
            f"experiments there: {', '.join(names) or 'none'}"
        )
    return exp


def best_run(
    experiment: str,
    *,
    metric: str | None = None,
    mode: str | None = None,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """The best FINISHED trial run of ``experiment`` (ASHA-stopped trials count) by ``metric``
    (default: the sweep's, stored on the experiment) at its last evaluation.

    Returns ``{run_id, run_name, metric, value, mode, params, checkpoint_uri}``; raises
    ValueError for an unknown experiment, NoBestRunError (a ValueError) when no run has it.
    """
    client = _client(tracking_uri)
    exp = _experiment(client, experiment, tracking_uri)
    metric = metric or exp.tags.get("fetalgan.metric", "fid")
    mode = mode or exp.tags.get("fetalgan.mode", "min")
    if mode not in ("min", "max"):
        raise ValueError(f"mode: expected min or max, got {mode!r}")
    query = f"tags.`{ROLE_TAG}` = 'trial' and attributes.status = 'FINISHED'"
    if parent_run_id:
        query += f" and tags.mlflow.parentRunId = '{parent_run_id}'"
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=query,
        order_by=[f"metrics.`{metric}` {'ASC' if mode == 'min' else 'DESC'}"],
        max_results=1000,
    )
    runs = [r for r in runs if _is_number(r.data.metrics.get(metric))]
    if not runs:
        raise NoBestRunError(
            f"experiment {experiment!r}: no finished trial run has metric {metric!r}"
        )
    pick = min if mode == "min" else max
    run = pick(runs, key=lambda r: r.data.metrics[metric])
    run_id = run.info.run_id
    return {
        "run_id": run_id,
        "run_name": run.info.run_name,
        "metric": metric,
        "value": run.data.metrics[metric],
        "mode": mode,
        "params": dict(run.data.params),
        "checkpoint_uri": f"runs:/{run_id}/checkpoint/{_checkpoint_name(client, run_id)}",
    }


def _checkpoint_name(client, run_id: str) -> str:
    names = {Path(f.path).name for f in client.list_artifacts(run_id, "checkpoint")}
    for name in ("best.pt", "last.pt"):
        if name in names:
            return name
    raise NoBestRunError(
        f"MLflow run {run_id} has no checkpoint/best.pt or checkpoint/last.pt artefact"
    )


def _model_source(models_uri: str, tracking_uri: str) -> str:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> the version's artefact source."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    ref = models_uri[len("models:/") :].strip("/")
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = ref.split("/", 1)
            version = client.get_model_version(name, number)
    except (MlflowException, ValueError) as err:
        raise ValueError(
            f"{models_uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION "
            f"registered in {tracking_uri} ({err})"
        ) from None
    return version.source


def download_checkpoint(source: str, dst: str | Path, *, tracking_uri: str | None = None) -> Path:
    """Download a checkpoint file into ``dst`` and return its path. ``source``: a run id (its
    ``checkpoint/best.pt``, else ``last.pt``), ``runs:/ID/PATH``, or ``models:/NAME@best``."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    _quiet()
    uri = resolve_tracking_uri(tracking_uri)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    if "://" not in source and ":/" not in source:  # a bare run id
        client = _client(uri)
        try:
            client.get_run(source)
        except MlflowException:
            raise ValueError(f"MLflow run {source!r} not found in {uri}") from None
        source = f"runs:/{source}/checkpoint/{_checkpoint_name(client, source)}"
    elif source.startswith("models:/"):  # resolved here: MLflow's own lookup ignores the URI
        source = _model_source(source, uri)
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=str(dst), tracking_uri=uri
            )
        )
    except MlflowException as err:
        raise ValueError(f"{source}: cannot download from {uri} ({err})") from None
    if local.is_dir():  # a model version: the whole checkpoint/ folder
        for name in ("best.pt", "last.pt"):
            if (local / name).is_file():
                return local / name
        raise FileNotFoundError(f"{source}: no best.pt or last.pt in the downloaded {local}")
    return local


def fetch_checkpoint(
    *, experiment: str | None = None, run_id: str | None = None, tracking_uri: str | None = None
) -> Path:
    """The checkpoint of ``run_id``, or of the best run of ``experiment``, downloaded into
    ``<cache>/checkpoints/<run id>/`` (what ``fetalgan generate --best/--run`` reads)."""
    from fetalgan.data.cache import cache_root

    if (experiment is None) == (run_id is None):
        raise ValueError("give exactly one of --best EXPERIMENT or --run RUN_ID")
    if experiment is not None:
        best = best_run(experiment, tracking_uri=tracking_uri)
        run_id, source = best["run_id"], best["checkpoint_uri"]
        print(f"best run of {experiment}: {run_id} ({best['metric']} = {best['value']:.4g})")
    else:
        source = run_id
    return download_checkpoint(
        source, cache_root() / "checkpoints" / run_id, tracking_uri=tracking_uri
    )


# ============================================================================================
# Queries for reports and the reader study (``fetalgan report``, ``fetalgan study analyse``).
# Read-only except log_run_artifacts; they hand back plain Python data, never MLflow objects.
# ============================================================================================


def _run_record(client, run, *, with_history: bool) -> dict[str, Any]:
    info, data = run.info, run.data
    record = {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "status": info.status,
        "start_time": info.start_time,  # ms since the epoch
        "end_time": info.end_time,
        "params": dict(data.params),
        "parent_run_id": data.tags.get("mlflow.parentRunId"),
        "tags": {k: v for k, v in data.tags.items() if not k.startswith("mlflow.")},
        "metrics": dict(data.metrics),  # the latest value of each
    }
    if with_history:
        record["history"] = {
            key: sorted((m.step, m.value) for m in client.get_metric_history(info.run_id, key))
            for key in sorted(data.metrics)
        }
    return record


def sweep_runs(
    experiment: str,
    *,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
    with_history: bool = True,
) -> dict[str, Any]:
    """One sweep of ``experiment``: its parent run (``parent_run_id``, default the newest
    sweep run) and that parent's trial runs, each with params, tags, latest metrics and (with
    ``with_history``) every metric's ``[(step, value), ...]`` sorted by step (step = epoch).

    Returns ``{tracking_uri, experiment, experiment_id, metric, mode, parent, parents,
    trials}``; ``parent`` is None (and ``trials`` every trial run of the experiment) when the
    experiment has no sweep run; ``parents`` lists all sweep run ids, newest first.
    """
    client = _client(tracking_uri)
    exp = _experiment(client, experiment, tracking_uri)
    parents = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{ROLE_TAG}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    parent = None
    if parent_run_id is not None:
        parent = next((r for r in parents if r.info.run_id == parent_run_id), None)
        if parent is None:
            raise ValueError(
                f"run {parent_run_id!r} is not a sweep run of experiment {experiment!r}; its "
                f"sweep runs: {', '.join(r.info.run_id for r in parents) or 'none'}"
            )
    elif parents:
        parent = parents[0]
    query = f"tags.`{ROLE_TAG}` = 'trial'"
    if parent is not None:
        query += f" and tags.mlflow.parentRunId = '{parent.info.run_id}'"
    trials = client.search_runs(
        [exp.experiment_id],
        filter_string=query,
        order_by=["attributes.start_time ASC"],
        max_results=5000,
    )
    return {
        "tracking_uri": resolve_tracking_uri(tracking_uri),
        "experiment": experiment,
        "experiment_id": exp.experiment_id,
        "metric": exp.tags.get("fetalgan.metric", "fid"),
        "mode": exp.tags.get("fetalgan.mode", "min"),
        "parent": None if parent is None else _run_record(client, parent, with_history=False),
        "parents": [r.info.run_id for r in parents],
        "trials": [_run_record(client, r, with_history=with_history) for r in trials],
    }


def list_run_artifacts(
    run_id: str, path: str | None = None, *, tracking_uri: str | None = None
) -> list[str]:
    """Artefact paths (files and folders) directly under ``path`` of run ``run_id``."""
    return [f.path for f in _client(tracking_uri).list_artifacts(run_id, path)]


def download_run_artifact(
    run_id: str, path: str, dst: str | Path, *, tracking_uri: str | None = None
) -> Path | None:
    """Download artefact ``path`` of ``run_id`` into ``dst``; None when the run has no such
    artefact."""
    from mlflow.exceptions import MlflowException

    parent = str(Path(path).parent) if "/" in path else None
    if path not in list_run_artifacts(run_id, parent, tracking_uri=tracking_uri):
        return None
    Path(dst).mkdir(parents=True, exist_ok=True)
    try:
        return Path(_client(tracking_uri).download_artifacts(run_id, path, dst_path=str(dst)))
    except MlflowException as err:
        raise ValueError(f"run {run_id}: cannot download artefact {path} ({err})") from None


def log_run_artifacts(
    run_id: str,
    files: list[str | Path],
    artifact_path: str,
    *,
    tracking_uri: str | None = None,
) -> None:
    """Log ``files`` to run ``run_id`` under ``artifact_path`` (a file of the same name is
    replaced). Works on a finished run."""
    client = _client(tracking_uri)
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path)


def run_metric_best(
    run_id: str,
    metric: str,
    *,
    experiment: str | None = None,
    tracking_uri: str | None = None,
) -> float | None:
    """The best value of ``metric`` over run ``run_id``'s history (min or max by the
    experiment's mode), None when the run never logged it. ValueError for an unknown run, or a
    run outside ``experiment`` when one is given."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ValueError(
            f"MLflow run {run_id!r} not found in {resolve_tracking_uri(tracking_uri)}"
        ) from None
    mode = "min"
    if experiment is not None:
        exp = _experiment(client, experiment, tracking_uri)
        if run.info.experiment_id != exp.experiment_id:
            raise ValueError(f"MLflow run {run_id} is not in experiment {experiment!r}")
        mode = exp.tags.get("fetalgan.mode", "min")
    values = [m.value for m in client.get_metric_history(run_id, metric) if math.isfinite(m.value)]
    if not values:
        return None
    return min(values) if mode == "min" else max(values)
