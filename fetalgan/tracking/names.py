"""Names shared by what writes the MLflow store (:mod:`fetalgan.tracking.writer`) and what
reads it (queries, ``fetalgan report``, ``fetalgan study analyse``). No mlflow import here."""

from __future__ import annotations

from collections.abc import Mapping

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
ARTIFACT_DIR = "mlartifacts"  # beside a sqlite database file

# Tags. fetalgan's own tags live under ``fetalgan.``; runs logged before they moved there carry
# the bare names (``LEGACY_TAGS``): readers go through :func:`tag`, which reads either.
TRIAL_TAG = "fetalgan.trial_id"  # Tune trial id of a child run
ROLE_TAG = "fetalgan.role"  # "sweep" (parent) or "trial" (child)
ROLE_SWEEP = "sweep"
ROLE_TRIAL = "trial"
METRIC_TAG = "fetalgan.metric"  # on the experiment: the sweep's metric ...
MODE_TAG = "fetalgan.mode"  # ... and mode (min | max)
BEST_RUN_TAG = "fetalgan.best_run_id"  # on the parent: the best child run
EXPERIMENT_PATH_TAG = "fetalgan.experiment_path"  # on the parent: Tune's experiment folder
STOPPED_EARLY_TAG = "fetalgan.stopped_early"  # "true" when ASHA stopped the trial
ERROR_TAG = "fetalgan.error"  # the telling line of a failed trial's error
RESTARTS_TAG = "fetalgan.restarts"  # times a crashed trial restarted from its checkpoint
HOST_TAG = "fetalgan.host"  # host name of the process that created the run (the driver)
WORKER_HOST_TAG = "fetalgan.worker_host"  # host name of the node that ran the trial
WORKER_IP_TAG = "fetalgan.worker_ip"  # its IP address
WORKERS_TAG = "fetalgan.workers"  # data-parallel ranks that trained the trial (world size)
WEIGHTS_TAG = "fetalgan.weights_sha256"  # FID Inception weights behind the run's FID
REFERENCE_TAG = "fetalgan.reference"  # identity of the real set the metrics compare with
REFERENCE_N_TAG = "fetalgan.reference_n"  # images in that set
REFERENCE_KEY_TAG = "fetalgan.reference_key"  # digest of its images (the statistics cache key)
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # MLflow's standard source tag
# On the experiment: what MLflow's UI opens it on (3.17 shows a GenAI traces page otherwise).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# On the parent, after the final selection stage (fetalgan.selection):
SELECTED_RUN_TAG = "fetalgan.selected_run_id"  # the winning trial run
SELECTED_EPOCH_TAG = "fetalgan.selected_epoch"  # the epoch its weights were saved at
SELECTED_ARTIFACT_TAG = "fetalgan.selected_artifact"  # checkpoint/best.pt or candidates/...
SELECTED_AT_TAG = "fetalgan.selected_at"  # when (Unix seconds): the latest selection counts
# PBT/PB2, on a trial run: its exploits as JSON, [{epoch, donor, config}] (the latest that fit)
EXPLOITS_TAG = "fetalgan.pbt.exploits"

# The bare names these tags had before they moved under ``fetalgan.`` (still read, never written).
LEGACY_TAGS = {
    name: name.removeprefix("fetalgan.")
    for name in (
        BEST_RUN_TAG,
        EXPERIMENT_PATH_TAG,
        STOPPED_EARLY_TAG,
        ERROR_TAG,
        RESTARTS_TAG,
        HOST_TAG,
        WORKER_HOST_TAG,
        WORKER_IP_TAG,
        WORKERS_TAG,
        WEIGHTS_TAG,
        REFERENCE_TAG,
        REFERENCE_N_TAG,
        REFERENCE_KEY_TAG,
    )
}


def tag(tags: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    """The value of tag ``name`` in a run's ``tags``, or of its bare pre-``fetalgan.`` name
    (:data:`LEGACY_TAGS`) for a run logged before the tags moved; ``default`` when neither."""
    if name in tags:
        return tags[name]
    legacy = LEGACY_TAGS.get(name)
    return tags.get(legacy, default) if legacy is not None else default


def short_tag(name: str) -> str:
    """``fetalgan.host`` -> ``host``: a tag's name as a report shows it."""
    return name.removeprefix("fetalgan.")


# Artefacts
CHECKPOINT_DIR = "checkpoint"  # checkpoint/best.pt, checkpoint/last.pt, checkpoint/epoch_NNNN.pt
BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"
CANDIDATES_DIR = "checkpoint/candidates"  # a trial's next-best evaluations (select.per_trial)
SELECTION_ARTIFACT = "selection.json"  # on the parent: the selection's candidates and scores
LINEAGE_ARTIFACT = "pbt_lineage.json"  # on the parent of a PBT/PB2 sweep (fetalgan.sweep.pbt)
SAMPLES_KEY = "samples"  # log_image key of the evaluation sample grids (step = epoch)
CONFIG_ARTIFACT = "config.yaml"
ENVIRONMENT_ARTIFACT = "environment.json"
SWEEP_ARTIFACT = "sweep.yaml"
MODEL_NAME = "model"  # the pyfunc model logged on the best run
SYSTEM_PREFIX = "system/"  # per-trial system metrics (cpu_percent, rss_mib, gpu_*)
# A run's best value so far of the sweep's metric is logged as best_<metric>
# (fetalgan.evaluation.Objective.best_key).


def epoch_checkpoint(epoch: int) -> str:
    return f"epoch_{epoch:04d}.pt"


def candidate_checkpoint(epoch: int) -> str:
    """Artefact path of a selection candidate's weights."""
    return f"{CANDIDATES_DIR}/epoch_{epoch:04d}.pt"


def select_key(metric: str) -> str:
    """Parent metric: the winner's selection score (mean over the draws)."""
    return f"select/{metric}"


def test_key(metric: str) -> str:
    """Parent metric: the winner's test score (mean over the draws); ``_std`` its spread."""
    return f"test/{metric}"


def rescore_key(metric: str) -> str:
    """Candidate run metric, at the candidate's epoch: its selection score."""
    return f"rescore_{metric}"
