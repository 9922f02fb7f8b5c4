"""Read-only queries of the MLflow store for ``fetalgan best``, ``generate --best``, the report
and the reader study. They hand back plain Python data, never MLflow objects.

Best is always the :class:`~fetalgan.evaluation.Objective` of the sweep (its ``metric`` and
``mode``, stored on the experiment) applied to each run's best value over its history: the
``best_<metric>`` the trainer logs at every evaluation (for runs logged before that existed,
the best of the metric's history). The checkpoint served is the run's ``checkpoint/best.pt``,
written at exactly that evaluation.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fetalgan.evaluation import Objective, is_number
from fetalgan.tracking import names
from fetalgan.tracking.store import check_tracking, quiet, resolve_tracking_uri
from fetalgan.tracking.store import client as _store_client

_ANSWERED: dict[str, float] = {}  # tracking URI -> when it last answered (monotonic s)
ANSWER_VALID_S = 30.0


def answering(tracking_uri: str | None = None) -> str:
    """The resolved store URI, after checking that it answers: a server that is down fails
    here within seconds, naming it (MLflow's own client retries for minutes before it says
    anything). A URI that answered less than ``ANSWER_VALID_S`` ago is not asked again."""
    uri = resolve_tracking_uri(tracking_uri)
    now = time.monotonic()
    if now - _ANSWERED.get(uri, -ANSWER_VALID_S) >= ANSWER_VALID_S:
        check_tracking(uri)
        _ANSWERED[uri] = now
    return uri


def _client(tracking_uri: str | None = None):
    """An MlflowClient on the store, once it is known to answer (every query starts here)."""
    return _store_client(answering(tracking_uri))


class NoBestRunError(ValueError):
    """An experiment has no finished trial run with the metric (or no checkpoint artefact)."""


def experiment_of(client, experiment: str, tracking_uri: str | None = None):
    """The MLflow experiment named ``experiment``; ValueError listing the ones there."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        known = [e.name for e in client.search_experiments()]
        raise ValueError(
            f"MLflow experiment {experiment!r} not found in {resolve_tracking_uri(tracking_uri)}; "
            f"experiments there: {', '.join(known) or 'none'}"
        )
    return exp


def objective_of(exp, metric: str | None = None, mode: str | None = None) -> Objective:
    """The experiment's objective (its sweep's metric and mode), ``metric``/``mode`` overriding."""
    return Objective(
        metric or exp.tags.get(names.METRIC_TAG, "fid"),
        mode or exp.tags.get(names.MODE_TAG, "min"),
    )


def run_best_value(client, run, objective: Objective) -> float | None:
    """A run's best value of ``objective.metric`` over its history (None: never finite)."""
    logged = run.data.metrics.get(objective.best_key)
    if is_number(logged):
        return logged
    history = client.get_metric_history(run.info.run_id, objective.metric)
    return objective.best(m.value for m in history)


def best_run(
    experiment: str,
    *,
    metric: str | None = None,
    mode: str | None = None,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """The best FINISHED trial run of ``experiment`` (ASHA-stopped trials count): the run whose
    best value over its history of ``metric`` (default: the sweep's) is best.

    Returns ``{run_id, run_name, metric, value, mode, params, checkpoint_uri}``: ``value`` is
    that best value and ``checkpoint_uri`` the run's ``checkpoint/best.pt`` (saved at the
    evaluation that reached it). ValueError for an unknown experiment, NoBestRunError (a
    ValueError) when no run has the metric.

    When a sweep of the experiment (``parent_run_id``'s, else the latest selected) ran the
    final selection stage, best is its winner (:func:`selected_run`) and the record also has
    ``epoch``, ``selection`` and ``test`` (the winner's scores on the selection and test
    references); ``value`` stays the winner's in-sweep value.
    """
    client = _client(tracking_uri)
    exp = experiment_of(client, experiment, tracking_uri)
    objective = objective_of(exp, metric, mode)
    if objective == objective_of(exp):  # another metric or mode asked for: in-sweep ranking
        chosen = selected_run(client, exp, parent_run_id)
        if chosen is not None:
            return chosen
    query = f"tags.`{names.ROLE_TAG}` = '{names.ROLE_TRIAL}' and attributes.status = 'FINISHED'"
    if parent_run_id:
        query += f" and tags.mlflow.parentRunId = '{parent_run_id}'"
    runs = client.search_runs([exp.experiment_id], filter_string=query, max_results=5000)
    scored = [(run, run_best_value(client, run, objective)) for run in runs]
    chosen = objective.pick(scored, key=lambda pair: pair[1])
    if chosen is None:
        raise NoBestRunError(
            f"experiment {experiment!r}: no finished trial run has metric {objective.metric!r}"
        )
    run, value = chosen
    run_id = run.info.run_id
    record = {
        "run_id": run_id,
        "run_name": run.info.run_name,
        "metric": objective.metric,
        "value": value,
        "mode": objective.mode,
        "params": dict(run.data.params),
        "checkpoint_uri": f"runs:/{run_id}/{names.CHECKPOINT_DIR}/{checkpoint_name(client, run_id)}",
    }
    hyper = pbt_hyperparameters(client, run, None)
    return record | ({"pbt": hyper} if hyper else {})


def pbt_hyperparameters(client, run, epoch: int | None) -> dict[str, Any] | None:
    """A PBT/PB2 trial's hyper-parameters in force at ``epoch`` (its latest where None) from
    its ``hp/<key>`` metrics, and its exploits so far: ``{"epoch", "values", "exploits"}``;
    None for a run without them (its params are then what it trained with)."""
    keys = sorted(k for k in run.data.metrics if k.startswith("hp/"))
    if not keys:
        return None
    values, at = {}, None
    for key in keys:
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        upto = [(s, v) for s, v in history if epoch is None or s <= epoch] or history[:1]
        values[key.removeprefix("hp/")] = upto[-1][1]
        at = upto[-1][0]
    return {
        "epoch": at,
        "values": values,
        "exploits": int(run.data.metrics.get("pbt/exploits", 0)),
    }


def _selection_parent(client, exp, parent_run_id: str | None):
    """The sweep parent run whose selection counts: ``parent_run_id``'s (if it has one), else
    the most recently selected sweep of the experiment; None when there is none."""
    if parent_run_id:
        run = client.get_run(parent_run_id)
        return run if names.SELECTED_RUN_TAG in run.data.tags else None
    parents = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{names.ROLE_TAG}` = '{names.ROLE_SWEEP}'",
        max_results=5000,
    )
    parents = [p for p in parents if names.SELECTED_RUN_TAG in p.data.tags]
    if not parents:
        return None
    return max(parents, key=lambda p: float(p.data.tags.get(names.SELECTED_AT_TAG) or 0))


def selection_record(client, parent_run_id: str) -> dict[str, Any]:
    """The ``selection.json`` a sweep parent run holds (see ``fetalgan.selection``)."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fetalgan-selection-") as tmp:
        path = client.download_artifacts(parent_run_id, names.SELECTION_ARTIFACT, tmp)
        return json.loads(Path(path).read_text())


def pbt_schedule(run_id: str, *, tracking_uri: str | None = None) -> list[dict]:
    """The hyper-parameter schedule behind a PBT/PB2 trial run's final weights
    (:func:`fetalgan.sweep.pbt.schedule_of` on its sweep's ``pbt_lineage.json``).
    ValueError when the run is not a trial of a PBT/PB2 sweep."""
    import json
    import tempfile

    from mlflow.exceptions import MlflowException

    from fetalgan.sweep.pbt import schedule_of

    client = _client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise ValueError(f"--replay {run_id}: no such MLflow run ({err.message})") from None
    trial_id = run.data.tags.get(names.TRIAL_TAG)
    parent = run.data.tags.get("mlflow.parentRunId")
    if not trial_id or not parent:
        raise ValueError(f"--replay {run_id}: not a sweep's trial run")
    with tempfile.TemporaryDirectory(prefix="fetalgan-lineage-") as tmp:
        try:
            path = client.download_artifacts(parent, names.LINEAGE_ARTIFACT, tmp)
        except (MlflowException, OSError):
            raise ValueError(
                f"--replay {run_id}: its sweep (parent run {parent}) has no "
                f"{names.LINEAGE_ARTIFACT}; only PBT/PB2 sweeps (scheduler.kind pbt or pb2) "
                "have a schedule to replay"
            ) from None
        lineage = json.loads(Path(path).read_text())
    return schedule_of(lineage, trial_id)


def selected_run(client, exp, parent_run_id: str | None = None) -> dict[str, Any] | None:
    """The final selection's winner as a :func:`best_run` record (with ``epoch``,
    ``selection``, ``test`` and the sweep's ``parent_run_id``), or None when no sweep of the
    experiment (or ``parent_run_id``) ran a selection."""
    parent = _selection_parent(client, exp, parent_run_id)
    if parent is None:
        return None
    record = selection_record(client, parent.info.run_id)
    winner, test = record["winner"], record["test"]
    run = client.get_run(winner["run_id"])
    reference = record.get("reference") or {}
    test_reference = record.get("test_reference") or {}
    hyper = pbt_hyperparameters(client, run, winner["epoch"])
    return ({"pbt": hyper} if hyper else {}) | {
        "run_id": winner["run_id"],
        "run_name": run.info.run_name,
        "metric": record["in_sweep_metric"],
        "value": winner["in_sweep"],
        "mode": objective_of(exp).mode,
        "params": dict(run.data.params),
        "checkpoint_uri": f"runs:/{winner['run_id']}/{winner['artifact']}",
        "epoch": winner["epoch"],
        "parent_run_id": parent.info.run_id,
        "selection": {
            "metric": record["metric"],
            "value": winner["score"],
            "std": winner["spread"],
            "n_fake": record["n_fake"],
            "draws": record["draws"],
            "n_real": reference.get("n"),
            "candidates": len(record["candidates"]),
        },
        "test": {
            "metric": record["metric"],
            "value": test["value"],
            "std": test["std"],
            "n_fake": test["n_fake"],
            "draws": test["draws"],
            "n_real": test_reference.get("n"),
        },
    }


def sweep_parent_run(
    experiment: str, *, parent_run_id: str | None = None, tracking_uri: str | None = None
) -> dict[str, Any]:
    """A sweep's parent run: ``parent_run_id``, else the experiment's latest;
    ``{run_id, status, experiment_path}``. ValueError when there is none."""
    client = _client(tracking_uri)
    exp = experiment_of(client, experiment, tracking_uri)
    if parent_run_id:
        run = client.get_run(parent_run_id)
        if run.info.experiment_id != exp.experiment_id:
            raise ValueError(f"run {parent_run_id} is not a run of experiment {experiment!r}")
    else:
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{names.ROLE_TAG}` = '{names.ROLE_SWEEP}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs:
            raise ValueError(f"experiment {experiment!r} has no sweep run")
        run = runs[0]
    return {
        "run_id": run.info.run_id,
        "status": run.info.status,
        "experiment_path": names.tag(run.data.tags, names.EXPERIMENT_PATH_TAG),
    }


def selection_candidates(
    experiment: str,
    *,
    parent_run_id: str,
    top_k: int,
    per_trial: int,
    tracking_uri: str | None = None,
) -> list[dict[str, Any]]:
    """The final selection's candidates of sweep ``parent_run_id``: its FINISHED trial runs
    ranked by their best in-sweep value (the experiment's objective), the first ``top_k``;
    of each, ``checkpoint/best.pt`` (at the epoch of that best value) and up to
    ``per_trial - 1`` of its ``checkpoint/candidates/epoch_NNNN.pt``, best in-sweep value
    first. Each as ``{run_id, run_name, trial_id, epoch, in_sweep, artifact}``, in rank order."""
    client = _client(tracking_uri)
    exp = experiment_of(client, experiment, tracking_uri)
    objective = objective_of(exp)
    query = (
        f"tags.`{names.ROLE_TAG}` = '{names.ROLE_TRIAL}' and attributes.status = 'FINISHED' "
        f"and tags.mlflow.parentRunId = '{parent_run_id}'"
    )
    runs = client.search_runs([exp.experiment_id], filter_string=query, max_results=5000)
    scored = [(run, run_best_value(client, run, objective)) for run in runs]
    scored = [(run, value) for run, value in scored if is_number(value)]
    sign = 1.0 if objective.mode == "min" else -1.0
    scored.sort(key=lambda pair: sign * pair[1])
    out = []
    for run, best in scored[:top_k]:
        run_id = run.info.run_id
        history = {m.step: m.value for m in client.get_metric_history(run_id, objective.metric)}
        files = {Path(f.path).name for f in client.list_artifacts(run_id, names.CHECKPOINT_DIR)}
        if names.BEST_CHECKPOINT not in files:
            continue
        best_epoch = min((step for step, value in history.items() if value == best), default=None)
        common = {
            "run_id": run_id,
            "run_name": run.info.run_name,
            "trial_id": run.data.tags.get(names.TRIAL_TAG),
        }
        out.append(
            {
                **common,
                "epoch": best_epoch,
                "in_sweep": best,
                "artifact": f"{names.CHECKPOINT_DIR}/{names.BEST_CHECKPOINT}",
            }
        )
        others = []
        for f in client.list_artifacts(run_id, names.CANDIDATES_DIR):
            stem = Path(f.path).stem  # epoch_NNNN
            if stem.startswith("epoch_") and stem[6:].isdigit() and int(stem[6:]) != best_epoch:
                others.append((int(stem[6:]), history.get(int(stem[6:])), f.path))
        others.sort(key=lambda o: (sign * o[1] if is_number(o[1]) else float("inf"), o[0]))
        for epoch, value, path in others[: per_trial - 1]:
            out.append({**common, "epoch": epoch, "in_sweep": value, "artifact": path})
    return out


def checkpoint_name(client, run_id: str) -> str:
    """``best.pt`` (else ``last.pt``) among the run's checkpoint artefacts."""
    found = {Path(f.path).name for f in client.list_artifacts(run_id, names.CHECKPOINT_DIR)}
    for name in (names.BEST_CHECKPOINT, names.LAST_CHECKPOINT):
        if name in found:
            return name
    raise NoBestRunError(
        f"MLflow run {run_id} has no checkpoint/best.pt or checkpoint/last.pt artefact"
    )


def metric_at_best(
    run_id: str,
    metric: str,
    *,
    experiment: str | None = None,
    tracking_uri: str | None = None,
) -> float | None:
    """The value of ``metric`` at run ``run_id``'s best evaluation by its experiment's
    objective — the evaluation ``checkpoint/best.pt`` holds, which ``generate`` uses. (With a
    sweep on ``kid_mean``, the FID of the best-KID evaluation, not the lowest FID.) None when
    the run never logged either. ValueError for an unknown run, or a run outside
    ``experiment`` when one is given."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    if experiment is not None:
        experiment_of(client, experiment, tracking_uri)  # unknown: say which ones there are
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ValueError(
            f"MLflow run {run_id!r} not found in {resolve_tracking_uri(tracking_uri)}"
        ) from None
    exp = client.get_experiment(run.info.experiment_id)
    if experiment is not None and exp.name != experiment:
        raise ValueError(f"MLflow run {run_id} is not in experiment {experiment!r}")
    objective = objective_of(exp)
    scores = client.get_metric_history(run_id, objective.metric)
    best = objective.pick(sorted(scores, key=lambda m: m.step), key=lambda m: m.value)
    if best is None:
        return None
    if metric == objective.metric:
        return best.value
    at_step = [m.value for m in client.get_metric_history(run_id, metric) if m.step == best.step]
    return at_step[-1] if at_step and is_number(at_step[-1]) else None


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
    exp = experiment_of(client, experiment, tracking_uri)
    parents = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{names.ROLE_TAG}` = '{names.ROLE_SWEEP}'",
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
    query = f"tags.`{names.ROLE_TAG}` = '{names.ROLE_TRIAL}'"
    if parent is not None:
        query += f" and tags.mlflow.parentRunId = '{parent.info.run_id}'"
    trials = client.search_runs(
        [exp.experiment_id],
        filter_string=query,
        order_by=["attributes.start_time ASC"],
        max_results=5000,
    )
    objective = objective_of(exp)
    return {
        "tracking_uri": resolve_tracking_uri(tracking_uri),
        "experiment": experiment,
        "experiment_id": exp.experiment_id,
        "metric": objective.metric,
        "mode": objective.mode,
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


def sample_grid_files(run_id: str, *, tracking_uri: str | None = None) -> dict[int, str]:
    """The run's evaluation sample grids (``log_image(key="samples", step=epoch)``) as
    ``{epoch: artefact path}`` of the full-size PNGs."""
    found: dict[int, tuple[int, str]] = {}
    for path in list_run_artifacts(run_id, "images", tracking_uri=tracking_uri):
        name = Path(path).name
        # MLflow 3.17 names them KEY+step+STEP+timestamp+MS+UUID.png (earlier: % for +), with
        # a compressed copy (+compressed.webp) beside each
        parts = name.replace("%", "+").split("+")
        if len(parts) < 6 or parts[0] != names.SAMPLES_KEY or not name.endswith(".png"):
            continue
        try:
            step, stamp = int(parts[2]), int(parts[4])
        except ValueError:
            continue
        if step not in found or stamp > found[step][0]:  # a re-logged step: the newest
            found[step] = (stamp, path)
    return {step: path for step, (_, path) in sorted(found.items())}


def download_sample_grid(
    run_id: str, epoch: int | None, dst: str | Path, *, tracking_uri: str | None = None
) -> Path | None:
    """Download the sample grid of evaluation ``epoch`` (None: the latest) of ``run_id`` into
    ``dst``; None when the run has none for that epoch."""
    grids = sample_grid_files(run_id, tracking_uri=tracking_uri)
    if not grids:
        return None
    if epoch is None:
        epoch = max(grids)
    if epoch not in grids:
        return None
    return download_run_artifact(run_id, grids[epoch], dst, tracking_uri=tracking_uri)


def download_checkpoint(source: str, dst: str | Path, *, tracking_uri: str | None = None) -> Path:
    """Download a checkpoint file into ``dst`` and return its path. ``source``: a run id (its
    ``checkpoint/best.pt``, else ``last.pt``), ``runs:/ID/PATH``, or ``models:/NAME@best``
    (the registered generator model)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    quiet()
    uri = answering(tracking_uri)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    if source.startswith("models:/"):
        from fetalgan.tracking.model import model_checkpoint

        return model_checkpoint(source, dst, tracking_uri=uri)
    if "://" not in source and ":/" not in source:  # a bare run id
        client = _client(uri)
        try:
            client.get_run(source)
        except MlflowException:
            raise ValueError(f"MLflow run {source!r} not found in {uri}") from None
        source = f"runs:/{source}/{names.CHECKPOINT_DIR}/{checkpoint_name(client, source)}"
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=str(dst), tracking_uri=uri
            )
        )
    except MlflowException as err:
        raise ValueError(f"{source}: cannot download from {uri} ({err})") from None
    if local.is_dir():
        for name in (names.BEST_CHECKPOINT, names.LAST_CHECKPOINT):
            if (local / name).is_file():
                return local / name
        raise FileNotFoundError(f"{source}: no best.pt or last.pt in the downloaded {local}")
    return local


def fetch_checkpoint(
    *, experiment: str | None = None, run_id: str | None = None, tracking_uri: str | None = None
) -> Path:
    """The checkpoint of ``run_id``, or of the best run of ``experiment`` (its ``best.pt``),
    downloaded into ``<cache>/checkpoints/<run id>/`` (what ``fetalgan generate --best/--run``
    reads)."""
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
