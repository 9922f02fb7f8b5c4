"""MLflow tracking of sweeps: the ONLY package that imports mlflow. One module per role:

- :mod:`~fetalgan.tracking.names`: tag, metric and artefact names (shared with report, study);
- :mod:`~fetalgan.tracking.store`: where the store is, whether it answers, the UI command;
- :mod:`~fetalgan.tracking.writer`: :class:`SweepTracker`, writing a sweep (the driver only);
- :mod:`~fetalgan.tracking.writes`: one dataclass per kind of write the sweep driver queues
  (start a trial, log an evaluation and its files, end a trial, ...), each applying itself;
- :mod:`~fetalgan.tracking.write_queue`: the durable on-disk queue of those writes, replayed in
  order when the store answers;
- :mod:`~fetalgan.tracking.queries`: read-only queries (best run, sweep runs, artefacts);
- :mod:`~fetalgan.tracking.model`: the best generator as a registered pyfunc model.

Store: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded
``sqlite:///mlruns.db``. For a sqlite store the experiment's artefacts go to ``mlartifacts/``
beside the database file; a tracking server decides for itself.

mlflow itself is imported lazily inside the functions that use it.
"""

from fetalgan.tracking.queries import (
    NoBestRunError,
    answering,
    best_run,
    download_checkpoint,
    download_run_artifact,
    download_sample_grid,
    fetch_checkpoint,
    list_run_artifacts,
    metric_at_best,
    sample_grid_files,
    sweep_runs,
)
from fetalgan.tracking.store import (
    artifact_location,
    check_tracking,
    resolve_tracking_uri,
    runs_table_url,
    ui_command,
)
from fetalgan.tracking.writer import SweepTracker, log_run_artifacts

__all__ = [
    "NoBestRunError",
    "SweepTracker",
    "answering",
    "artifact_location",
    "best_run",
    "check_tracking",
    "download_checkpoint",
    "download_run_artifact",
    "download_sample_grid",
    "fetch_checkpoint",
    "list_run_artifacts",
    "log_run_artifacts",
    "resolve_tracking_uri",
    "metric_at_best",
    "runs_table_url",
    "sample_grid_files",
    "sweep_runs",
    "ui_command",
]
