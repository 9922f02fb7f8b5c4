"""The end-of-sweep summary: counts, the best trial by the sweep's objective (its best value
over its history, the same ranking ``fetalgan best`` and the registry use), where things are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fetalgan.config import TRAIN_KEYS, SweepConfig
from fetalgan.evaluation import Objective, is_number
from fetalgan.sweep.space import describe


def summarise(
    cfg: SweepConfig,
    grid,
    exp_dir: Path,
    outcome: dict | None,
    tracker,
    interrupted: bool,
    selection: dict | None = None,
) -> dict[str, Any]:
    """``{name, metric, mode, experiment_path, interrupted, num_trials, num_errors,
    num_stopped_early, best}`` (+ tracking fields; ``outcome``: the tracking callback's, see
    ``callback.read_outcome``); ``best``: ``{trial_id, run_id, config,
    <metric>, fid, kid_mean, epoch, checkpoint, checkpoint_uri}`` or None."""
    from fetalgan.tracking import runs_table_url, ui_command

    objective = Objective(cfg.metric, cfg.mode)
    results = [r for r in grid if r.metrics and is_number(r.metrics.get(objective.best_key))]
    result = objective.pick(results, key=lambda r: r.metrics[objective.best_key])
    best = None
    if result is not None:
        trial_id = result.metrics.get("trial_id")
        run_id = outcome["runs"].get(trial_id) if outcome is not None else None
        best = {
            "trial_id": trial_id,
            "run_id": run_id,
            "config": {k: v for k, v in result.config.items() if k in TRAIN_KEYS},
            cfg.metric: result.metrics[objective.best_key],
            "last_epoch": result.metrics.get("epoch"),
            "checkpoint": result.checkpoint.path if result.checkpoint else None,
            "checkpoint_uri": f"runs:/{run_id}/checkpoint/best.pt" if run_id else None,
        }
    if selection is not None:  # the final selection's winner is the sweep's best
        winner = selection["winner"]
        chosen = next(
            (r for r in grid if r.metrics and r.metrics.get("trial_id") == winner["trial_id"]),
            None,
        )
        best = {
            "trial_id": winner["trial_id"],
            "run_id": winner["run_id"],
            "config": {k: v for k, v in chosen.config.items() if k in TRAIN_KEYS}
            if chosen is not None
            else {},
            cfg.metric: winner["in_sweep"],
            "last_epoch": chosen.metrics.get("epoch") if chosen is not None else None,
            "epoch": winner["epoch"],
            "checkpoint": None,
            "checkpoint_uri": f"runs:/{winner['run_id']}/{winner['artifact']}",
            "selection": {"metric": selection["metric"], "value": winner["score"],
                          "std": winner["spread"], "n_fake": selection["n_fake"],
                          "draws": selection["draws"],
                          "candidates": len(selection["candidates"])},
            "test": {"metric": selection["metric"], **selection["test"]},
        }  # fmt: skip
    summary = {
        "name": cfg.name,
        "metric": cfg.metric,
        "mode": cfg.mode,
        "experiment_path": str(exp_dir),
        "interrupted": interrupted,
        "num_trials": len(grid),
        "num_errors": grid.num_errors,
        "num_stopped_early": len(outcome["stopped_early"]) if outcome is not None else None,
        "best": best,
    }
    if tracker is not None:
        summary.update(
            tracking_uri=tracker.tracking_uri,
            experiment_id=tracker.experiment_id,
            parent_run_id=tracker.parent_run_id,
            ui_command=ui_command(tracker.tracking_uri),
            runs_url=runs_table_url(
                tracker.experiment_id, tracker.tracking_uri, cfg.metric, cfg.mode
            ),
        )
    return summary


def print_summary(summary: dict) -> None:
    """The end-of-sweep summary a user reads."""
    lines = [
        "",
        f"== sweep {summary['name']}: {summary['num_trials']} trials, "
        f"{summary['num_errors']} failed"
        + (
            f", {summary['num_stopped_early']} stopped early"
            if summary.get("num_stopped_early") is not None
            else ""
        ),
    ]
    if summary["interrupted"]:
        lines.append(
            f"   interrupted: state saved in {summary['experiment_path']}; continue with "
            f"`fetalgan sweep FILE --resume` (same --storage)"
        )
    best = summary["best"]
    metric = summary["metric"]
    if best is None:
        lines.append(f"   no trial reported {metric} yet")
    elif best.get("selection"):
        chosen, test = best["selection"], best["test"]
        lines.append(
            f"   selected trial {best['trial_id']} epoch {best['epoch']} (of "
            f"{chosen['candidates']} candidates; trained to epoch {best['last_epoch']})"
        )
        lines.append(
            f"     in-sweep {metric} {best[metric]:.4g} (its run's lowest evaluation, on few fakes: "
            "not for reporting)"
        )
        lines.append(
            f"     selection {chosen['metric']} {chosen['value']:.4g} +- {chosen['std']:.2g} "
            f"({chosen['draws']} x {chosen['n_fake']} fresh fakes, select.reference)"
        )
        lines.append(
            f"     test {test['metric']} {test['value']:.4g} +- {test['std']:.2g} "
            f"({test['draws']} x {test['n_fake']} fakes, select.test_reference: the number "
            "to report)"
        )
        if summary.get("selection_s") and summary.get("wall_s"):
            lines.append(
                f"     selection took {summary['selection_s']:.0f} s "
                f"({summary['selection_s'] / summary['wall_s']:.0%} of the sweep's wall time)"
            )
    else:
        lines.append(
            f"   best trial {best['trial_id']}: best {metric} = {best[metric]:.4g} "
            f"({summary['mode']}imum over its evaluations; trained to epoch {best['last_epoch']})"
        )
        lines.append("   config: " + (describe(best["config"]) or "(the base config)"))
        if best.get("run_id"):
            lines.append(f"   MLflow run: {best['run_id']}   checkpoint: {best['checkpoint_uri']}")
        if best.get("registered_version"):
            lines.append(
                f"   registered model: models:/{summary['name']}@best "
                f"(version {best['registered_version']})"
            )
    disk = summary.get("disk")
    if disk:
        from fetalgan.files import human_bytes

        used = f"   disk: {human_bytes(disk['storage']['bytes'])} in {disk['storage']['path']}"
        if disk.get("artifacts"):
            used += (
                f", {human_bytes(disk['artifacts']['bytes'])} of MLflow artefacts in "
                f"{disk['artifacts']['path']}"
            )
        elif summary.get("tracking_uri"):
            used += " (MLflow artefacts on the tracking server)"
        lines.append(used)
    if summary.get("ui_command"):
        lines.append(f"   open the runs: {summary['ui_command']}")
        lines.append(f"   runs sorted by {metric}: {summary['runs_url']}")
        lines.append(
            f"   images from the best: fetalgan generate --best {summary['name']} -n 800 --out synth/"
        )
    print("\n".join(lines), flush=True)
