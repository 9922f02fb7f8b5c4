"""The experiment folder of a sweep, ``<storage>/<name>`` (storage: ``storage=``, else the
file's ``storage``, else ``$FETALGAN_STORAGE``, else ``./ray_results``): where it is, the files
fetalgan keeps in it beside Tune's (the sweep as started, the sweep file as first read, the
tracking state and outcome), the checks a resumed sweep passes, and its size on disk.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import yaml

from fetalgan.config import SweepConfig, TrainConfig, flatten, read_yaml, sweep_overrides, to_dict

STATE_FILE = "fetalgan_sweep.json"  # in the experiment dir: parent run id, tracking URI
SAVED_SWEEP = "fetalgan_sweep.yaml"  # in the experiment dir: the sweep as started (for resume)
SAVED_FILE = "fetalgan_sweep_file.yaml"  # in the experiment dir: the sweep file as first read
OUTCOME_FILE = "fetalgan_outcome.json"  # in the experiment dir: the tracking callback's outcome
SELECTION_DIR = "selection"  # in the experiment dir: score cache, fetched candidates, result


def storage_root(cfg: SweepConfig, storage: str | Path | None = None) -> Path:
    """``storage``, else the file's ``storage``, else ``$FETALGAN_STORAGE``, else
    ``./ray_results`` — as an absolute path."""
    return Path(
        storage or cfg.storage or os.environ.get("FETALGAN_STORAGE") or "ray_results"
    ).resolve()


def absolute_paths(base: TrainConfig, cwd: Path) -> TrainConfig:
    """Relative dataset/cache/weights paths made absolute (trials run in other directories);
    a copy with the paths replaced, nothing rebuilt or re-validated."""

    def absolute(path: str | None) -> str | None:
        return str(cwd / path) if path and not Path(path).is_absolute() else path

    data = dataclasses.replace(
        base.data, root=absolute(base.data.root), cache_dir=absolute(base.data.cache_dir)
    )
    return dataclasses.replace(base, data=data, fid_weights=absolute(base.fid_weights))


def absolute_select_paths(cfg: SweepConfig, cwd: Path) -> SweepConfig:
    """``select.reference``/``select.test_reference`` roots and caches made absolute."""
    if cfg.select is None:
        return cfg

    def absolute(ref):
        def path(value: str | None) -> str | None:
            return str(cwd / value) if value and not Path(value).is_absolute() else value

        return dataclasses.replace(ref, root=path(ref.root), cache_dir=path(ref.cache_dir))

    select = dataclasses.replace(
        cfg.select,
        reference=absolute(cfg.select.reference),
        test_reference=absolute(cfg.select.test_reference),
    )
    return dataclasses.replace(cfg, select=select)


def prepare_experiment_dir(exp_dir: Path, resume: bool) -> None:
    """A new sweep: ``exp_dir`` created, an earlier experiment there moved aside (renamed with
    the time). ``resume``: ``FileNotFoundError`` unless Tune can restore one from ``exp_dir``."""
    from ray.tune import Tuner

    if resume:
        if not Tuner.can_restore(str(exp_dir)):
            raise FileNotFoundError(
                f"{exp_dir}: no sweep to resume there (run it without --resume first, or pass "
                "the --storage it used)"
            )
        return
    if exp_dir.exists():
        moved = exp_dir.with_name(f"{exp_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        exp_dir.rename(moved)
        print(
            f"fetalgan sweep: moved the earlier experiment {exp_dir} to {moved} "
            "(use --resume to continue one)"
        )
    exp_dir.mkdir(parents=True)


def save_sweep(exp_dir: Path, cfg: SweepConfig, source: str | Path | SweepConfig) -> None:
    """``SAVED_SWEEP``: the sweep as it runs now (what ``--resume`` runs); ``SAVED_FILE``: the
    sweep file ``source`` as first read (what :func:`check_unedited` compares with), once."""
    (exp_dir / SAVED_SWEEP).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    if not isinstance(source, SweepConfig) and not (exp_dir / SAVED_FILE).is_file():
        (exp_dir / SAVED_FILE).write_text(yaml.safe_dump(read_yaml(source), sort_keys=False))


def read_state(exp_dir: Path) -> dict:
    """``STATE_FILE``: the tracking state a sweep left (``parent_run_id``, ``tracking_uri``);
    empty when there is none."""
    state_file = exp_dir / STATE_FILE
    return json.loads(state_file.read_text()) if state_file.is_file() else {}


def write_state(exp_dir: Path, parent_run_id: str, tracking_uri: str) -> None:
    """``STATE_FILE``: the sweep's parent run and store, for ``--resume``."""
    state = {"parent_run_id": parent_run_id, "tracking_uri": tracking_uri}
    (exp_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")


def check_unedited(path: Path, exp_dir: Path, overrides: list[str], saved: SweepConfig) -> None:
    """On ``--resume``: ``ValueError`` listing every key of the sweep file ``path`` that differs
    from the file the sweep started with (a resumed sweep keeps its starting settings, so an
    edit would be silently ignored); ``--set`` items are allowed, and each that differs from
    the starting value is printed. Experiments started before the file was kept: not checked."""
    started = exp_dir / SAVED_FILE
    if not started.is_file():
        return
    then, now = flatten(read_yaml(started)), flatten(read_yaml(path))
    absent = "<absent>"
    edited = [k for k in sorted(set(then) | set(now)) if then.get(k, absent) != now.get(k, absent)]
    if edited:
        shown = "; ".join(f"{k}: {then.get(k, absent)!r} -> {now.get(k, absent)!r}" for k in edited)
        raise ValueError(
            f"{path}: edited since the sweep started (kept in {started}): {shown}. A resumed "
            f"sweep keeps its starting settings: undo the edit, or move {exp_dir} away to start "
            "a new sweep"
        )
    kept = flatten(to_dict(saved))
    for item in sweep_overrides(overrides):
        key, _, text = item.partition("=")
        key = key.strip()
        if key in kept and yaml.safe_load(text) != kept[key]:
            print(
                f"fetalgan sweep: --set {item.removeprefix('base.')}: the resumed sweep keeps "
                f"{key} = {kept[key]!r}"
            )


def disk_use(exp_dir: Path, tracker) -> dict[str, dict]:
    """Bytes on disk under the sweep's Tune storage and (when on this machine) its MLflow
    artefacts: ``{"storage": {"path", "bytes"}, "artifacts": {"path", "bytes"} | None}``."""
    from fetalgan.files import disk_usage

    out = {"storage": {"path": str(exp_dir), "bytes": disk_usage(exp_dir)}, "artifacts": None}
    artifacts = tracker.artifact_dir() if tracker is not None else None
    if artifacts is not None:
        out["artifacts"] = {"path": str(artifacts), "bytes": disk_usage(artifacts)}
    return out
