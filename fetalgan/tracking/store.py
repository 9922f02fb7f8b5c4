"""Where the MLflow store is, whether it answers, and how to open it in a browser."""

from __future__ import annotations

import os
from pathlib import Path

from fetalgan.extras import install_hint
from fetalgan.tracking.names import ARTIFACT_DIR, DEFAULT_TRACKING_URI


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


ARTIFACT_ROOT_ENV = "FETALGAN_ARTIFACT_ROOT"


def artifact_location(tracking_uri: str, experiment: str | None = None) -> str | None:
    """Where a new experiment's artefacts go: ``mlartifacts/`` beside a sqlite database file.
    For a tracking server, ``$FETALGAN_ARTIFACT_ROOT/<experiment>`` when that is set (the
    server's ``--artifacts`` directory on a filesystem this node shares with it: artefacts are
    written as files, not uploaded through the server, and the server reads them for the UI);
    else None (the server's default, uploads through it)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        return (db.parent / ARTIFACT_DIR).resolve().as_uri()
    root = os.environ.get(ARTIFACT_ROOT_ENV)
    if not root:
        return None
    path = Path(root)
    if not path.is_absolute() or not path.is_dir() or not os.access(path, os.W_OK):
        raise ValueError(
            f"{ARTIFACT_ROOT_ENV}={root}: not a writable directory given by an absolute path; "
            "set it to the tracking server's --artifacts directory as this node sees it (a "
            "shared filesystem), or unset it to upload artefacts through the server"
        )
    return (path / experiment).as_uri() if experiment else path.as_uri()


def check_tracking(tracking_uri: str, *, timeout_s: float = 5.0) -> None:
    """Fail fast, before any Ray work, when the store cannot be used: a server that does not
    answer ``GET /health``, a PostgreSQL store without its driver (psycopg, the ``postgres``
    extra), or a sqlite file in a directory that cannot be created. A sqlite
    file that does not exist yet is created with mode 0600 (runs, parameters and paths are the
    user's alone; ``mlflow/server.sh`` does the same for a server's)."""
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
    elif tracking_uri.startswith(("postgresql://", "postgresql+psycopg://")):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None:  # SQLAlchemy 2.1's PostgreSQL driver
            raise ValueError(
                "a postgresql:// tracking URI needs psycopg, which is not installed: "
                + install_hint("postgres")
            )
    elif tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
            # Created here, owner-only, before MLflow makes it with the umask's mode (SQLite
            # takes an empty file as a new database; its journals copy the file's mode).
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as err:
            raise ValueError(f"tracking URI {tracking_uri}: cannot create {db} ({err})") from None


def quiet() -> None:
    """MLflow's own lines follow the level fetalgan's logging is set to (``fetalgan -v``:
    INFO; default WARNING, so no "Successfully registered model" beside fetalgan's summary);
    never its table-creation lines or download progress bars. MLflow gives its logger a level
    of its own when imported, hence this after the import."""
    import logging

    level = logging.getLogger().getEffectiveLevel()
    logging.getLogger("mlflow").setLevel(level)
    logging.getLogger("mlflow.store.db.utils").setLevel(max(level, logging.WARNING))
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def client(tracking_uri: str | None = None):
    """An ``MlflowClient`` on the resolved store."""
    from mlflow import MlflowClient

    quiet()
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
    """The runs table of an experiment, flat (children unfolded) and sorted by ``metric`` (MLflow
    3 folds child runs by default), in the UI's model-training view: MLflow 3.17's UI picks
    its GenAI or model-training view from ``workflowType`` in the URL, else from the last
    choice in that browser (GenAI at first), not from the ``mlflow.experimentKind`` tag."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith("http") else "http://127.0.0.1:5000"
    ascending = "true" if mode == "min" else "false"
    return (
        f"{base}/#/experiments/{experiment_id}/runs"
        f"?orderByKey=metrics.%60{metric}%60&orderByAsc={ascending}&workflowType=machine_learning"
    )
