"""The final selection stage on a sweep's MLflow runs (see :mod:`fetalgan.selection`): after
a finished sweep's fit (:func:`final_selection`, called by ``run_sweep``), or again on a
finished sweep by ``fetalgan select NAME`` (:func:`select_sweep`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from fetalgan.config import SweepConfig, load_sweep
from fetalgan.evaluation import Objective
from fetalgan.sweep.experiment import SELECTION_DIR, absolute_select_paths


def final_selection(
    cfg: SweepConfig, tracker, selection_dir: Path, *, progress: bool = True
) -> dict | None:
    """The final selection stage of a finished sweep (``cfg.select``; see
    :mod:`fetalgan.selection`): candidates from the sweep's MLflow runs, every score cached in
    ``selection_dir`` (a rerun after an interruption continues), the result logged on the
    parent run and the candidates' runs; None when the sweep has no ``select``."""
    if cfg.select is None:
        return None
    from fetalgan.selection import (
        CACHE_FILE,
        SELECTION_FILE,
        Candidate,
        run_selection,
        write_result,
    )
    from fetalgan.tracking.queries import download_checkpoint, selection_candidates

    rows = selection_candidates(
        cfg.name,
        parent_run_id=tracker.parent_run_id,
        top_k=cfg.select.top_k,
        per_trial=cfg.select.per_trial,
        tracking_uri=tracker.tracking_uri,
    )
    candidates = [Candidate(**row) for row in rows]

    def fetch(candidate: Candidate) -> Path:
        folder = selection_dir / "candidates" / candidate.run_id / Path(candidate.artifact).parent
        local = folder / Path(candidate.artifact).name
        if local.is_file():  # kept: a resumed selection does not download it again
            return local
        return download_checkpoint(
            f"runs:/{candidate.run_id}/{candidate.artifact}",
            folder,
            tracking_uri=tracker.tracking_uri,
        )

    result = run_selection(
        cfg, candidates, fetch, cache_path=selection_dir / CACHE_FILE, progress=progress
    )
    result["parent_run_id"] = tracker.parent_run_id
    write_result(selection_dir / SELECTION_FILE, result)
    tracker.log_selection(result)
    # The fetched weights were kept for a resumed selection; done, MLflow has them.
    shutil.rmtree(selection_dir / "candidates", ignore_errors=True)
    return result


def select_sweep(
    name: str,
    *,
    overrides: Iterable[str] = (),
    parent_run_id: str | None = None,
    tracking_uri: str | None = None,
    selection_dir: str | Path | None = None,
) -> dict:
    """``fetalgan select NAME``: run the final selection again on a finished sweep (its latest
    sweep run, or ``parent_run_id``), with the sweep file it ran with and ``overrides``
    (``select.top_k=5``, ``select.n_fake=2048``, ``select.metric=kid_mean``; a sweep that ran
    without ``select`` needs at least its two references). Scores are cached in
    ``selection_dir`` (default: the sweep's experiment folder when it is on this machine, else
    ``$FETALGAN_CACHE/selection/<run id>``); the result is logged on the sweep run, the best
    tag and the registry alias ``best`` move to the winner. Returns the selection record with
    ``registered_version``."""
    import tempfile

    from fetalgan.data.cache import cache_root
    from fetalgan.data.splits import check_real_sets
    from fetalgan.tracking import SweepTracker
    from fetalgan.tracking.queries import sweep_parent_run

    parent = sweep_parent_run(name, parent_run_id=parent_run_id, tracking_uri=tracking_uri)
    with tempfile.TemporaryDirectory(prefix="fetalgan-select-") as tmp:
        from fetalgan.tracking.names import SWEEP_ARTIFACT
        from fetalgan.tracking.queries import download_run_artifact

        saved = download_run_artifact(
            parent["run_id"], SWEEP_ARTIFACT, tmp, tracking_uri=tracking_uri
        )
        if saved is None:
            raise ValueError(f"sweep run {parent['run_id']} of {name} has no {SWEEP_ARTIFACT}")
        cfg = load_sweep(saved, list(overrides))
    if cfg.select is None:
        raise ValueError(
            f"sweep {name} (run {parent['run_id']}) ran without a select section: give its "
            "references, e.g. --set select.reference.skip=512 --set select.reference.size=1024 "
            "--set select.test_reference.skip=1536 --set select.test_reference.size=1024"
        )
    cfg = absolute_select_paths(cfg, Path.cwd())
    check_real_sets(cfg)
    tracker = SweepTracker(
        cfg.name, objective=Objective(cfg.metric, cfg.mode), tracking_uri=tracking_uri
    )
    tracker.parent_run_id = parent["run_id"]
    if selection_dir is None:
        experiment_path = Path(parent.get("experiment_path") or "/nonexistent")
        selection_dir = (
            experiment_path / SELECTION_DIR
            if experiment_path.is_dir()
            else cache_root() / "selection" / parent["run_id"]
        )
    result = final_selection(cfg, tracker, Path(selection_dir))
    best = tracker.finish_parent(None, register=True)
    result["registered_version"] = best.get("model_version") if best else None
    return result
