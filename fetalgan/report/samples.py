"""The report's images: the best trial's sample grid (downloaded from its run) and real
training images loaded with the trial's own data config."""

from __future__ import annotations

import tempfile
from pathlib import Path

from fetalgan.report.records import RunRecord, SweepRecord, trial_best
from fetalgan.tracking import names


def best_samples(
    sweep: SweepRecord, trial: RunRecord, out: Path, epoch: int | None = None
) -> tuple[Path | None, int | None, str]:
    """``trial``'s sample grid logged at ``epoch`` (default: its best evaluation,
    :func:`trial_best`), else its latest grid, as ``out/best_samples.png``; returns (path,
    epoch, note), epoch None when the latest grid stands in (its epoch is not known here)."""
    import shutil

    from fetalgan.tracking import download_sample_grid

    uri = sweep.tracking_uri
    best = trial_best(trial, sweep.objective)
    wanted = epoch if epoch is not None else (None if best is None else best[0])
    with tempfile.TemporaryDirectory() as tmp:
        # dst: a path that does not exist yet, whether the download treats it as file or folder
        grid = None
        if wanted is not None:
            grid = download_sample_grid(
                trial.run_id, wanted, Path(tmp) / "at_best", tracking_uri=uri
            )
        epoch = wanted
        if grid is None:
            epoch = None
            grid = download_sample_grid(trial.run_id, None, Path(tmp) / "latest", tracking_uri=uri)
        if grid is None:
            return None, None, f"trial {trial.run_name} has no sample grids logged"
        target = out / "best_samples.png"
        shutil.copyfile(grid, target)
    if epoch is not None:
        note = ""
    elif wanted is not None:
        note = f"no grid logged at the best epoch ({wanted}); showing the latest grid"
    else:
        note = f"no {sweep.metric} logged; showing the latest grid"
    return target, epoch, note


def real_samples(
    sweep: SweepRecord, trial: RunRecord, out: Path, n: int = 64
) -> tuple[Path | None, str]:
    """``n`` training images of ``trial``'s data config as ``out/real_samples.png``; (None,
    reason) when the data cannot be loaded here."""
    import yaml

    from fetalgan.config import ConfigError, train_config_from_dict
    from fetalgan.data import load_training_images
    from fetalgan.images import make_grid, write_png
    from fetalgan.tracking import download_run_artifact

    with tempfile.TemporaryDirectory() as tmp:
        local = download_run_artifact(
            trial.run_id, names.CONFIG_ARTIFACT, tmp, tracking_uri=sweep.tracking_uri
        )
        if local is None:
            return None, f"trial {trial.run_name} has no {names.CONFIG_ARTIFACT} artefact"
        try:
            cfg = train_config_from_dict(yaml.safe_load(local.read_text()))
        except ConfigError as err:
            return None, (
                f"trial {trial.run_name}: its {names.CONFIG_ARTIFACT} no longer loads ({err})"
            )
    try:
        images = load_training_images(cfg.data, cfg.resolution, seed=cfg.seed, progress=False)
    except (FileNotFoundError, ValueError, OSError) as err:
        return None, f"real images not available on this machine: {err}"
    target = out / "real_samples.png"
    write_png(make_grid(images.images[:n], nrow=8), target)
    where = cfg.data.kind if cfg.data.kind == "phantom" else f"{cfg.data.kind} {cfg.data.root}"
    return target, f"{min(n, len(images.images))} training images ({where}, {cfg.resolution} px)"
