"""Writing a sweep into MLflow: one experiment per sweep ``name``, a parent run per sweep, a
child run per trial. Used by the sweep driver only (the store has one writer).

What a child run holds:

- params: the trial's full TrainConfig, flattened (``data.size``, ``lr_g``, ...), each as
  :func:`fetalgan.config.param_text` writes it (read back typed by ``config.param_value``);
- metrics per evaluation with ``step = epoch``: the :class:`~fetalgan.evaluation.Evaluation`'s
  numbers (``fid``, ``kid_mean``, ``loss_g``, ``best_<metric>``, ``n_fake``, ...) and the
  trial's system metrics under ``system/`` (CPU %, RSS, GPU utilisation and memory);
- images: each evaluation's sample grid, ``log_image(key="samples", step=epoch)``, so the UI's
  step slider pages through them;
- artefacts: ``config.yaml``, ``environment.json``, and weights without optimiser states:
  ``checkpoint/best.pt`` (best by the sweep's metric and mode, replaced when it improves),
  ``checkpoint/last.pt`` (at the end of the trial), ``checkpoint/epoch_NNNN.pt`` for the
  sweep's ``checkpoint_epochs``. The full training state lives only in Tune's checkpoint;
- tags: fetalgan's own under ``fetalgan.`` (:mod:`~fetalgan.tracking.names`; runs logged before
  carry the bare names, read through ``names.tag``): ``trial_id``, ``role = trial``,
  ``host``, ``worker_host``/``worker_ip``, ``weights_sha256``, ``reference``, ``reference_n``,
  ``reference_key``, ``stopped_early``, ``error``, ``restarts``; MLflow's standard
  ``mlflow.user``, ``mlflow.source.name``, ``mlflow.source.type`` and
  ``mlflow.source.git.commit``.

Runs end FINISHED, FAILED (error in the ``fetalgan.error`` tag) or KILLED (the driver was
interrupted; ``--resume`` sets them running again). A restarted trial is found again by its
Tune trial id, so it continues its own run. At the end the parent is tagged with the best child
(``fetalgan.best_run_id``) and the best child's generator is logged and registered as a loadable
MLflow model (``models:/<name>@best``).
"""

from __future__ import annotations

import functools
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from fetalgan.envinfo import environment, environment_tags
from fetalgan.evaluation import Evaluation, Objective, is_number
from fetalgan.tracking import names
from fetalgan.tracking.queries import NoBestRunError, best_run
from fetalgan.tracking.store import (
    artifact_location,
    check_tracking,
    quiet,
    resolve_tracking_uri,
)


class SweepTracker:
    """Writes one sweep into MLflow. Construct it before starting Ray: it checks the store and
    creates the experiment. ``objective``: the sweep's metric and mode (what best means)."""

    def __init__(
        self,
        experiment: str,
        *,
        objective: Objective | None = None,
        tracking_uri: str | None = None,
        checkpoint_epochs: tuple[int, ...] = (),
    ):
        from mlflow import MlflowClient

        quiet()
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        check_tracking(self.tracking_uri)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment = experiment
        self.objective = objective or Objective()
        self.checkpoint_epochs = set(checkpoint_epochs)
        self.experiment_id = self._ensure_experiment()
        self.parent_run_id: str | None = None

    def _ensure_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            try:
                return self.client.create_experiment(
                    self.experiment,
                    artifact_location=artifact_location(self.tracking_uri, self.experiment),
                    tags={names.EXPERIMENT_KIND_TAG: names.EXPERIMENT_KIND},
                )
            except MlflowException as err:
                raise ValueError(f"MLflow experiment {self.experiment!r}: {err}") from None
        if exp.lifecycle_stage == "deleted":
            self.client.restore_experiment(exp.experiment_id)
        if exp.tags.get(names.EXPERIMENT_KIND_TAG) != names.EXPERIMENT_KIND:  # made before
            self.client.set_experiment_tag(
                exp.experiment_id, names.EXPERIMENT_KIND_TAG, names.EXPERIMENT_KIND
            )
        return exp.experiment_id

    def artifact_dir(self) -> Path | None:
        """The experiment's artefact folder when it is on this machine (a ``file:`` location,
        as with the embedded sqlite store); None for a server's remote store."""
        from urllib.parse import unquote, urlparse

        location = self.client.get_experiment(self.experiment_id).artifact_location or ""
        parsed = urlparse(location)
        if parsed.scheme in ("", "file"):
            return Path(unquote(parsed.path))
        return None

    # ---- parent run ----------------------------------------------------------------------

    def start_parent(self, run_id: str | None = None, *, tags: dict[str, str] | None = None) -> str:
        """Create the sweep's parent run, or (resumed sweep) set ``run_id`` running again."""
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=time.strftime(f"{self.experiment}-%Y%m%d-%H%M%S"),
                tags={
                    **context_tags(),
                    names.ROLE_TAG: names.ROLE_SWEEP,
                    **environment_tags(environment()),
                    **(tags or {}),
                },
            )
            run_id = run.info.run_id
            self.client.log_dict(run_id, environment(), names.ENVIRONMENT_ARTIFACT)
        self.parent_run_id = run_id
        self.client.set_experiment_tag(self.experiment_id, names.METRIC_TAG, self.objective.metric)
        self.client.set_experiment_tag(self.experiment_id, names.MODE_TAG, self.objective.mode)
        return run_id

    def log_sweep_config(self, sweep_yaml: str) -> None:
        self.client.log_text(self.parent_run_id, sweep_yaml, names.SWEEP_ARTIFACT)

    def log_lineage(self, lineage: dict) -> None:
        """PBT/PB2: every trial's initial hyper-parameters and exploits, keyed by trial id,
        with each trial's MLflow run (``pbt_lineage.json`` on the parent run; what
        ``fetalgan train SWEEP --replay RUN_ID`` rebuilds a schedule from)."""
        for trial_id, record in lineage["trials"].items():
            record["run_id"] = self.find_trial_run(trial_id)
        self.client.log_dict(self.parent_run_id, lineage, names.LINEAGE_ARTIFACT)

    def finish_parent(self, status: str | None, *, register: bool = True) -> dict | None:
        """Tag the parent with the best child (by :func:`~fetalgan.tracking.queries.best_run`),
        log ``best_<metric>`` on it, register the best child's generator as a new version of
        the model named after the experiment (alias ``best``), end the parent with ``status``
        (None: leave it as it is, as ``fetalgan select`` on a finished sweep does). Returns the best run or None when no trial finished with the metric."""
        best = None
        try:
            best = best_run(
                self.experiment,
                metric=self.objective.metric,
                mode=self.objective.mode,
                tracking_uri=self.tracking_uri,
                parent_run_id=self.parent_run_id,
            )
        except NoBestRunError:
            pass  # no finished trial has the metric yet (all failed, or interrupted early)
        if best is not None:
            self.client.set_tag(self.parent_run_id, names.BEST_RUN_TAG, best["run_id"])
            self.client.log_metric(self.parent_run_id, self.objective.best_key, best["value"])
            if register:
                best["model_version"] = self.register(best["run_id"], best["checkpoint_uri"])
                if best["model_version"] and best.get("test"):
                    self.describe_version(best["model_version"], best)
        if status is not None:
            self.client.set_terminated(self.parent_run_id, status=status)
        return best

    def register(self, run_id: str, checkpoint_uri: str) -> str | None:
        """The run's best checkpoint as a loadable pyfunc model, registered as a new version
        of ``<experiment>`` with alias ``best``; the version, None if that failed (warned)."""
        from mlflow.exceptions import MlflowException

        from fetalgan.tracking.model import log_generator_model
        from fetalgan.tracking.queries import download_checkpoint

        try:
            with tempfile.TemporaryDirectory(prefix="fetalgan-model-") as tmp:
                checkpoint = download_checkpoint(
                    checkpoint_uri, tmp, tracking_uri=self.tracking_uri
                )
                return log_generator_model(
                    run_id, checkpoint, self.experiment, tracking_uri=self.tracking_uri
                )
        except (MlflowException, OSError, ValueError) as err:
            warnings.warn(
                f"MLflow model registry: could not register run {run_id}: {err}", stacklevel=2
            )
            return None

    def describe_version(self, version: str, best: dict) -> None:
        """The registered version's description: the selected generator's test score (what to
        report), its selection score and its in-sweep value, each with what it was measured on."""
        test, chosen = best["test"], best["selection"]
        text = (
            f"fetalgan final selection of sweep run {best.get('parent_run_id')}: run "
            f"{best['run_id']} at epoch {best.get('epoch')}. "
            f"Test {test['metric']} = {test['value']:.4g} +- {test['std']:.2g} (mean and "
            f"standard deviation of {test['draws']} draws of {test['n_fake']} fakes against "
            f"{test.get('n_real')} held-out test images: report this one). "
            f"Selection {chosen['metric']} = {chosen['value']:.4g} +- {chosen['std']:.2g} (chose "
            f"it among {chosen.get('candidates')} candidates). In-sweep {best['metric']} = "
            f"{best['value']:.4g} (the lowest of its run's evaluations: optimistic)."
        )
        try:
            self.client.update_model_version(self.experiment, version, description=text)
        except Exception as err:  # MLflow raises its own and HTTP errors here
            warnings.warn(f"MLflow model registry: version {version}: {err}", stacklevel=2)

    # ---- trial runs ----------------------------------------------------------------------

    def find_trial_run(self, trial_id: str) -> str | None:
        """The child run of this parent for Tune trial ``trial_id``, if one exists."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{names.TRIAL_TAG}` = '{trial_id}' and "
                f"tags.mlflow.parentRunId = '{self.parent_run_id}'"
            ),
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def start_trial(self, trial_id: str, trial_name: str, config) -> str:
        """The trial's child run (``config``: its TrainConfig, or ``to_dict`` of it as the
        write queue keeps it): created with params, config and environment the first time, set
        running again when the trial restarts (after a crash or a driver resume)."""
        import yaml
        from mlflow.entities import Param

        from fetalgan.config import flatten, param_text, to_dict

        run_id = self.find_trial_run(trial_id)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            tags = self.client.get_run(run_id).data.tags
            for error_tag in (names.ERROR_TAG, names.LEGACY_TAGS[names.ERROR_TAG]):
                if error_tag in tags:  # a crash it restarts from (the bare name: an older run)
                    self.client.delete_tag(run_id, error_tag)
            return run_id
        env = environment()
        run = self.client.create_run(
            self.experiment_id,
            run_name=trial_name,
            tags={
                **context_tags(),
                "mlflow.parentRunId": self.parent_run_id,
                names.TRIAL_TAG: trial_id,
                names.ROLE_TAG: names.ROLE_TRIAL,
                **environment_tags(env),
            },
        )
        run_id = run.info.run_id
        data = config if isinstance(config, dict) else to_dict(config)
        params = [Param(k, param_text(v)) for k, v in flatten(data).items()]
        for start in range(0, len(params), 100):  # MLflow's batch limit
            self.client.log_batch(run_id, params=params[start : start + 100])
        self.client.log_text(run_id, yaml.safe_dump(data, sort_keys=False), names.CONFIG_ARTIFACT)
        self.client.log_dict(run_id, env, names.ENVIRONMENT_ARTIFACT)
        return run_id

    def log_evaluation(
        self,
        run_id: str,
        evaluation: Evaluation,
        *,
        system: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """One evaluation's numbers at ``step = epoch`` (and the trial's system metrics under
        ``system/``), its bookkeeping (FID weights, reference set) and ``tags`` as tags.
        ``timestamp_ms``: when it was reported (default now); the same write replayed with the
        same time is not logged twice."""
        metrics, run_tags = self._evaluation_batch(evaluation, system, tags, timestamp_ms)
        self.client.log_batch(run_id, metrics=metrics, tags=run_tags)
        self.log_datasets(run_id, evaluation.datasets)

    def log_evaluations(self, run_id: str, evaluations: list[dict]) -> None:
        """Several evaluations (each ``log_evaluation``'s keyword arguments) in one request:
        their metrics, and their tags as the last of them sets them."""
        from mlflow.entities import RunTag

        metrics, tags = {}, {}
        for arguments in evaluations:
            some, run_tags = self._evaluation_batch(
                arguments["evaluation"],
                arguments.get("system"),
                arguments.get("tags"),
                arguments.get("timestamp_ms"),
            )
            metrics.update({(m.key, m.step, m.timestamp, m.value): m for m in some})
            tags.update({t.key: t.value for t in run_tags})
        self.client.log_batch(
            run_id, metrics=list(metrics.values()), tags=[RunTag(k, v) for k, v in tags.items()]
        )
        self.log_datasets(run_id, [s for a in evaluations for s in a["evaluation"].datasets])

    def log_datasets(self, run_id: str, sets: list[dict]) -> None:
        """Real sets (:func:`fetalgan.data.datasets.describe_set`) as the run's MLflow dataset
        inputs, each tagged with its context (training, evaluation, selection, test): the UI's
        Datasets column. MLflow keeps one input per name and digest, so a replay adds none."""
        if not sets:
            return
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        inputs = [
            DatasetInput(
                Dataset(
                    name=s["name"],
                    digest=s["digest"],
                    source_type=s["source_type"],
                    source=s["source"],
                    profile=s.get("profile"),
                ),
                tags=[InputTag(MLFLOW_DATASET_CONTEXT, s["context"])],
            )
            for s in sets
        ]
        self.client.log_inputs(run_id, datasets=inputs)

    @staticmethod
    def _evaluation_batch(evaluation, system, tags, timestamp_ms) -> tuple[list, list]:
        from mlflow.entities import Metric, RunTag

        epoch = evaluation.epoch
        now = int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
        values = dict(evaluation.metrics())
        values.update({names.SYSTEM_PREFIX + k: v for k, v in (system or {}).items()})
        metrics = [Metric(k, float(v), now, epoch) for k, v in values.items() if is_number(v)]
        run_tags: dict[str, Any] = dict(tags or {})
        if evaluation.weights_sha256:
            run_tags[names.WEIGHTS_TAG] = evaluation.weights_sha256
        if evaluation.reference:
            run_tags[names.REFERENCE_TAG] = evaluation.reference
        if evaluation.reference_n is not None:
            run_tags[names.REFERENCE_N_TAG] = evaluation.reference_n
        if evaluation.reference_key:
            run_tags[names.REFERENCE_KEY_TAG] = evaluation.reference_key
        if evaluation.exploits:  # PBT: from which trial and epoch, with which values
            run_tags[names.EXPLOITS_TAG] = _latest_json(evaluation.exploits, 8000)
        return metrics, [RunTag(k, str(v)) for k, v in run_tags.items()]

    def log_evaluation_files(
        self,
        run_id: str,
        evaluation: Evaluation,
        *,
        best_weights: Path | None = None,
        sample_grid: Path | None = None,
        checkpoint_file: Path | None = None,
    ) -> None:
        """The evaluation's sample grid (an image at step = epoch) and weights: ``best.pt``
        (the weights-only file the trainer wrote when this evaluation became the run's best),
        ``epoch_NNNN.pt`` (weights of ``checkpoint_file``, the full state, for the sweep's
        ``checkpoint_epochs``)."""
        epoch = evaluation.epoch
        if sample_grid is not None and Path(sample_grid).is_file():
            from PIL import Image

            with Image.open(sample_grid) as image:
                image.load()
                self.client.log_image(run_id, image, key=names.SAMPLES_KEY, step=epoch)
        if best_weights is not None and Path(best_weights).is_file():
            self._log_as(run_id, Path(best_weights), names.BEST_CHECKPOINT)
        if checkpoint_file is not None and epoch in self.checkpoint_epochs:
            self._log_weights(run_id, Path(checkpoint_file), names.epoch_checkpoint(epoch))

    def log_last_weights(self, run_id: str, checkpoint_file: Path | None) -> None:
        """``checkpoint/last.pt``: the weights of a trial's last state (at its end); and the
        selection candidates the state kept (``select.per_trial`` > 1), other than its best
        evaluation (``best.pt``), as ``checkpoint/candidates/epoch_NNNN.pt``."""
        if checkpoint_file is None or not Path(checkpoint_file).is_file():
            return
        from fetalgan.checkpoint import (
            candidate_weights,
            load_checkpoint,
            save_checkpoint,
            save_weights,
        )

        state = load_checkpoint(checkpoint_file)  # read once: last.pt and the candidates
        with tempfile.TemporaryDirectory(prefix="fetalgan-mlflow-") as tmp:
            weights = save_weights(Path(tmp) / names.LAST_CHECKPOINT, state)
            self.client.log_artifact(run_id, str(weights), names.CHECKPOINT_DIR)
            candidates = state.get("candidates") or []
            best_epoch = _best_epoch(state)
            for candidate in candidates:
                if candidate["epoch"] == best_epoch:
                    continue  # checkpoint/best.pt
                name = Path(names.candidate_checkpoint(candidate["epoch"])).name
                path = save_checkpoint(Path(tmp) / name, candidate_weights(state, candidate))
                self.client.log_artifact(run_id, str(path), names.CANDIDATES_DIR)

    def log_selection(self, result: dict) -> None:
        """The final selection on the parent run (``select/<metric>`` of the winner,
        ``test/<metric>`` and ``test/<metric>_std``, ``select/optimism``, the winner's run,
        epoch and artefact as tags, ``selection.json``) and each candidate's selection score
        on its own run (``rescore_<metric>`` at the candidate's epoch)."""
        from mlflow.entities import Metric, RunTag

        metric, winner, test = result["metric"], result["winner"], result["test"]
        now = int(time.time() * 1000)
        values = {
            names.select_key(metric): winner["score"],
            names.select_key(metric) + "_std": winner["spread"],
            names.test_key(metric): test["value"],
            names.test_key(metric) + "_std": test["std"],
            "select/optimism": result.get("optimism"),
            "select/seconds": result.get("seconds"),
        }
        metrics = [Metric(k, float(v), now, 0) for k, v in values.items() if is_number(v)]
        tags = {
            names.SELECTED_RUN_TAG: winner["run_id"],
            names.SELECTED_EPOCH_TAG: str(winner["epoch"]),
            names.SELECTED_ARTIFACT_TAG: winner["artifact"],
            names.SELECTED_AT_TAG: str(time.time()),
        }
        for which in ("reference", "test_reference"):  # the sets' identity, as reference_key
            identity = result.get(which) or {}
            if identity.get("key"):
                tags[f"fetalgan.select.{which}_key"] = identity["key"]
                tags[f"fetalgan.select.{which}_n"] = str(identity.get("n"))
                tags[f"fetalgan.select.{which}"] = str(identity.get("dataset"))
        self.client.log_batch(
            self.parent_run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()]
        )
        self.client.log_dict(self.parent_run_id, result, names.SELECTION_ARTIFACT)
        self.log_datasets(
            self.parent_run_id,
            [result[w]["described"] for w in ("reference", "test_reference")
             if (result.get(w) or {}).get("described")],
        )  # fmt: skip
        for candidate in result["candidates"]:
            if is_number(candidate["score"]):
                self.client.log_metric(
                    candidate["run_id"],
                    names.rescore_key(metric),
                    candidate["score"],
                    timestamp=now,
                    step=int(candidate["epoch"]),
                )

    def _log_weights(self, run_id: str, checkpoint_file: Path, name: str) -> None:
        """The weights of a full checkpoint, logged as ``checkpoint/<name>``."""
        from fetalgan.checkpoint import load_checkpoint, save_weights

        with tempfile.TemporaryDirectory(prefix="fetalgan-mlflow-") as tmp:
            weights = save_weights(Path(tmp) / name, load_checkpoint(checkpoint_file))
            self.client.log_artifact(run_id, str(weights), names.CHECKPOINT_DIR)

    def _log_as(self, run_id: str, src: Path, name: str) -> None:
        """``src`` logged as ``checkpoint/<name>`` (MLflow names an artefact after its file)."""
        with tempfile.TemporaryDirectory(prefix="fetalgan-mlflow-") as tmp:
            self.client.log_artifact(
                run_id, str(_link_as(src, name, Path(tmp))), names.CHECKPOINT_DIR
            )

    def set_restarts(self, run_id: str, restarts: int) -> None:
        self.client.set_tag(run_id, names.RESTARTS_TAG, str(restarts))

    def end_trial(
        self, run_id: str, status: str, *, error: str | None = None, stopped_early: bool = False
    ) -> None:
        """End a child run: FINISHED, FAILED (``error`` tag) or KILLED; tag ``stopped_early``."""
        if error:
            self.client.set_tag(run_id, names.ERROR_TAG, error[-5000:])
        self.client.set_tag(run_id, names.STOPPED_EARLY_TAG, str(bool(stopped_early)).lower())
        self.client.set_terminated(run_id, status=status)


@functools.cache
def _context() -> tuple[tuple[str, str], ...]:
    from mlflow.tracking.context.registry import resolve_tags

    return tuple(resolve_tags().items())


def context_tags() -> dict[str, str]:
    """MLflow's standard context tags of this process (``mlflow.user``, ``mlflow.source.name``,
    ``mlflow.source.type``, ...), as the fluent ``mlflow.start_run`` sets them; a run made
    with ``MlflowClient.create_run`` gets none of them by itself. Resolved once per process."""
    return dict(_context())


def _latest_json(items: list, limit: int) -> str:
    """``items`` as compact JSON, the oldest left out until it fits ``limit`` characters (an
    MLflow tag's limit); the whole list is in the parent's lineage artefact."""
    for start in range(len(items) + 1):
        text = json.dumps(items[start:], separators=(",", ":"))
        if len(text) <= limit:
            return text
    return "[]"


def _best_epoch(state: dict[str, Any]) -> int | None:
    """The epoch of a state's best evaluation (what its ``best.pt`` holds), from its history."""
    epochs = [h.get("epoch") for h in state.get("history", []) if h.get("is_best")]
    return epochs[-1] if epochs else None


def _link_as(src: Path, name: str, folder: Path) -> Path:
    """``folder/name`` pointing at ``src`` (a hard link, else a symbolic one)."""
    import os

    dst = folder / name
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem
        dst.symlink_to(Path(src).resolve())
    return dst


def log_run_artifacts(
    run_id: str,
    files: list[str | Path],
    artifact_path: str,
    *,
    tracking_uri: str | None = None,
) -> None:
    """Log ``files`` to run ``run_id`` under ``artifact_path`` (a file of the same name is
    replaced). Works on a finished run (the report is logged back to its sweep run)."""
    from fetalgan.tracking.store import client

    mlflow_client = client(tracking_uri)
    for path in files:
        mlflow_client.log_artifact(run_id, str(path), artifact_path)
