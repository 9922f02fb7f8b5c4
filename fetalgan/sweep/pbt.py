"""Population Based Training's bookkeeping inside fetalgan: each trial's own record, exploits
that keep "best" honest, and the lineage a replay retrains.

When Ray Tune's PBT (or PB2) lets a trial exploit, it restarts the trial with a new config
from a better trial's (the donor's) latest checkpoint. :func:`exploit_of` tells the trainable
that the state it is handed is a donor's, so ``train()`` takes the donor's weights but keeps
the trial's own hyper-parameters, random stream and best record (see ``train(exploit=...)``).

How a lineage reads in MLflow (one run per trial, as without PBT):

- the run's params are the trial's *initial* config; ``hp/<key>`` metrics give the value in
  force at each evaluation, so the schedule is a curve beside the FID;
- ``pbt/exploits`` counts the trial's exploits, and the tag ``fetalgan.pbt.exploits`` lists
  them (``[{"epoch", "donor", "config"}]``: from ``epoch`` on it trained on the donor's state
  with ``config``); the epoch axis jumps to the donor's epoch where they differ;
- ``best_<metric>``, ``best.pt`` and the selection candidates are the trial's own: the best
  evaluation this run reported, with the weights it had then (a donor's earlier evaluations
  are the donor run's, not the recipient's);
- the sweep's parent run keeps ``pbt_lineage.json`` (every trial's initial values and
  exploits), from which :func:`schedule_of` rebuilds the schedule that produced a trial's
  final weights, for ``fetalgan train SWEEP --replay RUN_ID``.

A trial's record lives on the sweep's storage (``<experiment>/pbt/<trial_id>.json``), beside
the non-finite markers, since a restarted trial may run on another node.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

RECORD_DIR = "pbt"  # in the Tune experiment folder: one record per trial


def stream(trial_id: str) -> int:
    """The random stream a trial re-seeds with when it takes a donor's state (and a replay
    at the same switch): its own, whatever the donor's was."""
    return zlib.crc32(trial_id.encode())


def record_path(experiment_dir: str | Path, trial_id: str) -> Path:
    return Path(experiment_dir) / RECORD_DIR / f"{trial_id}.json"


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Atomically (a trial killed mid-write leaves the previous record)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def hyper_values(cfg, keys: list[str]) -> dict[str, Any]:
    """The values of the dotted ``keys`` in the TrainConfig ``cfg`` (what the trial trains with)."""
    out = {}
    for key in keys:
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        out[key] = list(node) if isinstance(node, list | tuple) else node
    return out


def _peek(checkpoint_file: Path) -> tuple[str | None, int]:
    """The trial id and epoch a full checkpoint was written by, without loading its tensors."""
    import torch

    state = torch.load(checkpoint_file, map_location="cpu", weights_only=True, mmap=True)
    return (state.get("extra") or {}).get("trial_id"), int(state.get("epoch", 0))


def start(
    experiment_dir: str | Path,
    trial_id: str,
    cfg,
    keys: list[str],
    resume: Path | None,
) -> tuple[Path, dict[str, Any], dict | None]:
    """A PBT trial starts (or restarts): its record (created on its first start with its
    initial values), and ``train``'s ``exploit`` argument when ``resume`` is another trial's
    state, recorded as an exploit (once, however often the trial restarts from it)."""
    path = record_path(experiment_dir, trial_id)
    record = read_record(path) or {
        "trial_id": trial_id,
        "initial": hyper_values(cfg, keys),
        "exploits": [],
        "best_value": None,
        "best_epoch": None,
    }
    exploit = None
    if resume is not None:
        donor, epoch = _peek(resume)
        if donor is not None and donor != trial_id:
            entry = {"epoch": epoch, "donor": donor, "config": hyper_values(cfg, keys)}
            if not record["exploits"] or record["exploits"][-1] != entry:
                record["exploits"].append(entry)
            exploit = {"best_value": record["best_value"], "stream": stream(trial_id)}
    write_record(path, record)
    return path, record, exploit


def after_evaluation(path: Path, record: dict[str, Any], evaluation, cfg, keys: list[str]) -> None:
    """Put the trial's hyper-parameters and exploits on ``evaluation`` (hp/<key>,
    pbt/exploits) and keep its own best in its record (for the next exploit)."""
    evaluation.hyper = hyper_values(cfg, keys)
    evaluation.exploits = list(record["exploits"])
    if evaluation.is_best:
        record["best_value"], record["best_epoch"] = evaluation.best_value, evaluation.epoch
        write_record(path, record)


def lineage(experiment_dir: str | Path) -> dict[str, Any]:
    """Every trial's record of a sweep: ``{"trials": {trial_id: record}}``."""
    folder = Path(experiment_dir) / RECORD_DIR
    trials = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        record = read_record(path)
        if record is not None:
            trials[record["trial_id"]] = record
    return {"trials": trials}


def schedule_of(lineage_data: dict[str, Any], trial_id: str) -> list[dict]:
    """The hyper-parameter schedule behind ``trial_id``'s final weights:
    ``[{"epoch": 0, "config": initial of the lineage's root}, {"epoch": e, "config": ...,
    "stream": ...}]`` (``stream``: the random stream the trial took there, so a replay of the
    schedule repeats the trial's training exactly on the same hardware).

    After its last exploit (taken at epoch ``e`` from ``donor``) a trial trained from ``e`` on
    with that exploit's config; before ``e`` its weights are the donor's, so the donor's own
    schedule up to ``e`` comes first (recursively; a donor's exploits at or after ``e`` came
    later and do not count)."""
    trials = lineage_data["trials"]
    if trial_id not in trials:
        known = ", ".join(sorted(trials)) or "none"
        raise ValueError(f"trial {trial_id}: not in the sweep's PBT lineage (trials: {known})")

    def upto(tid: str, end: float, depth: int) -> list[dict]:
        if depth > len(trials) * 1000:
            raise ValueError(f"trial {trial_id}: the PBT lineage loops")
        record = trials[tid]
        taken = [x for x in record["exploits"] if x["epoch"] < end]
        if not taken:
            return [{"epoch": 0, "config": dict(record["initial"])}]
        last = taken[-1]
        if last["donor"] not in trials:
            raise ValueError(f"trial {tid}: its donor {last['donor']} has no PBT record")
        before = upto(last["donor"], last["epoch"], depth + 1)
        switch = {"epoch": last["epoch"], "config": dict(last["config"]), "stream": stream(tid)}
        return [*before, switch]

    segments = upto(trial_id, float("inf"), 0)
    merged: list[dict] = []
    for seg in segments:  # a switch at the epoch of the previous one replaces it
        if merged and merged[-1]["epoch"] == seg["epoch"]:
            merged[-1] = seg
        else:
            merged.append(seg)
    return merged


def checkpoint_pruner(scheduler):
    """A Tune callback that keeps a PBT/PB2 sweep's disk bounded without deleting what an
    exploit still needs.

    Tune's ``CheckpointConfig(num_to_keep)`` cannot be used with PBT here: a trial that is
    told to exploit may wait paused for a free slot while its donor trains on, and Tune's own
    rotation then deletes the donor checkpoint it is to restore from (and Tune registers a
    function trainable's checkpoint twice when PBT asks it to save, so two slots hold one
    state). The sweep therefore keeps every checkpoint in Tune's books (``num_to_keep=None``)
    and this callback, whenever a trial stores a new one, removes that trial's other
    checkpoint folders except those still referenced: any trial's latest (a paused
    recipient's is its donor's) and every checkpoint PBT holds for a future exploit. A trial
    thus keeps one to three full states."""
    from ray.train._internal.session import _FutureTrainingResult
    from ray.tune import Callback

    class PopulationCheckpointPruner(Callback):
        def __init__(self, scheduler):
            self.scheduler = scheduler

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            import shutil

            keep = {Path(checkpoint.path)}
            for other in trials:
                latest = other.run_metadata.checkpoint_manager.latest_checkpoint_result
                if latest is not None and latest.checkpoint is not None:
                    keep.add(Path(latest.checkpoint.path))
            for state in getattr(self.scheduler, "_trial_state", {}).values():
                held = state.last_checkpoint
                if isinstance(held, _FutureTrainingResult):
                    continue  # resolves to its trial's newest: kept as that trial's latest
                held = getattr(held, "checkpoint", held)  # a _TrainingResult or a Checkpoint
                if held is not None and getattr(held, "path", None):
                    keep.add(Path(held.path))
            folder = Path(checkpoint.path).parent
            for old in folder.glob("checkpoint_*"):
                if old not in keep and old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)

    return PopulationCheckpointPruner(scheduler)


def prune_finished(experiment_dir: str | Path) -> int:
    """After a PBT/PB2 sweep that finished (not one to resume): each trial folder keeps its
    newest checkpoint only, since no exploit can need the others any more (MLflow has the
    weights). Returns the folders removed."""
    import shutil

    removed = 0
    for trial_dir in Path(experiment_dir).glob("trial_*"):
        folders = sorted(trial_dir.glob("checkpoint_*"))
        for old in folders[:-1]:
            shutil.rmtree(old, ignore_errors=True)
            removed += 1
    return removed
