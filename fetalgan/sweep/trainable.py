"""The trainable: what runs in a Ray worker for one trial. One trial = one ``train()`` call
(or, with ``workers_per_trial > 1``, a data-parallel Ray Train run of it), its TrainConfig
built once from the base config and the trial's sampled values.

After every evaluation the trial reports to Tune the :class:`~fetalgan.evaluation.Evaluation`'s
numbers (flat, for the scheduler, the searcher and the progress table), the whole record
(``evaluation``, JSON), the trial's system metrics since the previous report (``system``,
JSON) and where it ran, with a checkpoint directory holding ``checkpoint.pt`` and the
evaluation's sample grid. The driver's callback forwards all of it to tracking.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fetalgan.checkpoint import CHECKPOINT_NAME
from fetalgan.config import TrainConfig
from fetalgan.evaluation import Evaluation, Objective
from fetalgan.sweep.space import trial_config
from fetalgan.tracking.names import BEST_CHECKPOINT as BEST_WEIGHTS_NAME


@dataclass
class TrialSpec:
    """What every trial of a sweep shares (pickled to the workers once)."""

    name: str  # the sweep's name
    base: dict[str, Any]  # the base TrainConfig as plain data (paths absolute)
    encoded: list[str] = field(default_factory=list)  # space keys passed as JSON strings
    objective: Objective = field(default_factory=Objective)
    workers_per_trial: int = 1
    cpu: float = 1.0
    gpu: float = 0.0
    ddp_storage: str = ""  # Ray Train storage of data-parallel trials
    parent_run_id: str | None = None  # the sweep's MLflow parent run
    experiment_dir: str = ""  # the Tune experiment on the shared storage (non-finite markers)
    keep_candidates: int = 1  # select.per_trial: evaluations whose weights a trial keeps
    rank_window: int | None = None  # rank_by: window: evaluations in window_<metric>
    pbt_keys: list[str] = field(default_factory=list)  # PBT/PB2: the keys it changes


STAGE_DIR = "staging"  # in a trial's directory: the checkpoint being handed to Tune


def trial_dirname(trial) -> str:
    """Short trial directory names (Tune's default embeds the whole config)."""
    return f"trial_{trial.trial_id}"


def _set_threads(cpus: float) -> None:
    import torch

    torch.set_num_threads(max(1, int(cpus)))


_WORK_DIRS: list[Path] = []  # this process's trial work folders (actors are reused)


def work_dir(name: str) -> Path:
    """A private folder for one trial's (or rank's) trainer files, staging and restored
    checkpoint, outside Tune's trial directory: Tune syncs that directory into the
    experiment's storage (on the driver's node), which would keep copies of every state there.
    Folders an earlier trial of this process left (its last ``report`` never returns) go
    first; the driver removes a trial's folder when the trial ends (``stage_dir``)."""
    while _WORK_DIRS:
        shutil.rmtree(_WORK_DIRS.pop(), ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=f"fetalgan-{name}-"))
    _WORK_DIRS.append(folder)
    return folder


def _stage_checkpoint(stage_root: Path, evaluation: Evaluation) -> Path:
    """A fresh directory to hand to Tune/Train, which copy it into the experiment's storage:
    ``checkpoint.pt`` (the full state), ``best.pt`` (weights only, when this evaluation is the
    trial's best so far) and ``samples/epoch_NNNN.png``. The trainer's files are moved there
    (so the trial keeps one copy of its state: Tune's), and an earlier stage is removed
    first (``report`` does not return after a trial's last result, so nothing after it runs;
    the driver removes the last stage when the trial ends, see ``callback._remove_stage``)."""
    shutil.rmtree(stage_root, ignore_errors=True)
    stage = stage_root / f"report_{evaluation.epoch:06d}"
    (stage / "samples").mkdir(parents=True)
    for src, name in _staged_files(evaluation):
        try:
            os.replace(src, stage / name)
        except OSError:  # another filesystem
            shutil.move(src, stage / name)
    return stage


def _staged_files(evaluation: Evaluation) -> list[tuple[Path, str]]:
    files = [(Path(evaluation.checkpoint), CHECKPOINT_NAME)]
    if evaluation.best_weights:
        files.append((Path(evaluation.best_weights), BEST_WEIGHTS_NAME))
    if evaluation.sample_grid:
        files.append((Path(evaluation.sample_grid), sample_grid_name(evaluation.epoch)))
    return files


def sample_grid_name(epoch: int) -> str:
    """Where a staged checkpoint directory keeps the evaluation's sample grid."""
    return f"samples/epoch_{epoch:04d}.png"


def tune_result(evaluation: Evaluation, system: dict[str, float]) -> dict[str, Any]:
    """What a trial reports to Tune for one evaluation."""
    import ray

    return {
        **evaluation.metrics(),
        "epoch": evaluation.epoch,
        "evaluation": json.dumps(evaluation.to_dict()),
        "system": json.dumps(system),
        "worker_host": socket.gethostname(),
        "worker_ip": ray.util.get_node_ip_address(),
    }


def _restore_to(checkpoint, local_dir: Path) -> Path | None:
    """Copy a Tune/Train checkpoint into ``local_dir``; the ``checkpoint.pt`` to resume from."""
    if checkpoint is None:
        return None
    shutil.rmtree(local_dir, ignore_errors=True)
    checkpoint.to_directory(str(local_dir))
    return local_dir / CHECKPOINT_NAME


def _sampler(device: str):
    import torch

    from fetalgan.sysmetrics import SystemSampler

    device = torch.device(device) if device.startswith("cuda") else None
    return SystemSampler(device=device)


def _run(
    cfg: TrainConfig,
    spec: TrialSpec,
    *,
    resume,
    run_dir: Path,
    stage_root: Path,
    report_fn,
    checkpoint_cls,
    extra: dict,
    extra_result: dict | None = None,
) -> None:
    """``train()`` with a report that stages checkpoints and adds system metrics, on the
    device the trial's resources give it (a trial given a GPU it cannot use fails here)."""
    from fetalgan.devices import trial_device
    from fetalgan.train import train

    exploit, pbt_record = None, None
    if spec.pbt_keys:  # PBT/PB2: is the state another trial's? (its own record either way)
        from fetalgan.sweep import pbt

        trial_id = extra["trial_id"]
        record_file, pbt_record, exploit = pbt.start(
            spec.experiment_dir, trial_id, cfg, spec.pbt_keys, resume
        )
    device = trial_device(cfg.device, spec.gpu)
    if 0 < spec.gpu < 1 and device.startswith("cuda"):
        import torch

        # A packed trial that outgrows its share fails alone instead of starving its neighbours.
        torch.cuda.set_per_process_memory_fraction(spec.gpu, torch.device(device))
    with _sampler(device) as sampler:

        def report(evaluation: Evaluation) -> None:
            if pbt_record is not None:
                pbt.after_evaluation(record_file, pbt_record, evaluation, cfg, spec.pbt_keys)
            result = {**tune_result(evaluation, sampler.summary()), **(extra_result or {})}
            result["stage_dir"] = str(run_dir.parent)  # the driver removes it at the trial's end
            if evaluation.checkpoint is None:
                report_fn(result)
                return
            stage = _stage_checkpoint(stage_root, evaluation)
            report_fn(result, checkpoint=checkpoint_cls.from_directory(str(stage)))
            shutil.rmtree(stage, ignore_errors=True)  # Tune/Train has copied it into storage

        train(
            cfg,
            report=report,
            resume=resume,
            run_dir=run_dir,
            progress=False,
            extra=extra,
            objective=spec.objective,
            device=device,
            keep_candidates=spec.keep_candidates,
            rank_window=spec.rank_window,
            exploit=exploit,
        )
    shutil.rmtree(run_dir.parent, ignore_errors=True)  # the trial's work folder


def sweep_trial(config: dict, spec: TrialSpec) -> None:
    """Tune function trainable: one trial = one ``train()`` call (or a data-parallel Ray Train
    run of it when ``workers_per_trial > 1``)."""
    from ray import tune

    from fetalgan.sweep import nonfinite

    context = tune.get_context()
    trial_id = context.get_trial_id()
    trial_dir = Path(context.get_trial_dir())
    cfg = trial_config(spec.base, config, spec.encoded)  # the one build of this trial's config
    # Stored in every checkpoint: which sweep, trial and MLflow parent run it belongs to.
    extra = {"trial_id": trial_id, "sweep": spec.name, "mlflow_parent_run_id": spec.parent_run_id}
    diverged = nonfinite.marker(spec.experiment_dir, trial_id) if spec.experiment_dir else None
    if diverged is not None:
        nonfinite.refuse_restart(diverged)  # a diverged trial is not run again
    try:
        if spec.workers_per_trial > 1:
            _data_parallel_trial(cfg, spec, trial_id, trial_dir, extra)
            return
        if spec.gpu == 0:
            _set_threads(spec.cpu)
        work = work_dir(trial_id)
        _run(
            cfg,
            spec,
            resume=_restore_to(tune.get_checkpoint(), work / "restored"),
            run_dir=work / "run",
            stage_root=work / STAGE_DIR,
            report_fn=tune.report,
            checkpoint_cls=tune.Checkpoint,
            extra=extra,
        )
    except Exception as err:
        if diverged is not None:
            nonfinite.record(diverged, err)
        raise


def _data_parallel_trial(
    cfg: TrainConfig, spec: TrialSpec, trial_id: str, trial_dir: Path, extra: dict
) -> None:
    """One trial on ``workers_per_trial`` DDP workers (Ray Train V2 inside a Tune trial). The
    Train run is named after the trial, so a restarted trial resumes its last checkpoint. The
    ranks receive the trial's TrainConfig object itself (pickled), not a dict to rebuild."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = spec.gpu > 0
    per_worker = {"CPU": spec.cpu, **({"GPU": spec.gpu} if use_gpu else {})}
    trainer = TorchTrainer(
        _data_parallel_worker,
        train_loop_config={
            "cfg": cfg,
            "spec": spec,
            "extra": extra,
        },
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec.workers_per_trial, use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            name=f"ddp_{trial_id}",
            storage_path=spec.ddp_storage,
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            failure_config=ray.train.FailureConfig(max_failures=0),  # Tune restarts the trial
        ),
    )
    trainer.fit()


def _data_parallel_worker(loop_config: dict) -> None:
    """One DDP rank: the same ``train()``; every rank reports (Ray Train V2 needs it), rank 0
    with the checkpoint, which Train persists and TuneReportCallback forwards to the driver."""
    import ray.train

    spec: TrialSpec = loop_config["spec"]
    context = ray.train.get_context()
    rank = context.get_world_rank()
    work = work_dir(f"{loop_config['extra']['trial_id']}-rank{rank}")
    if spec.gpu == 0:
        _set_threads(spec.cpu)
    _run(
        loop_config["cfg"],
        spec,
        resume=_restore_to(ray.train.get_checkpoint(), work / "restored"),
        run_dir=work / "run",
        stage_root=work / STAGE_DIR,
        report_fn=ray.train.report,
        checkpoint_cls=ray.train.Checkpoint,
        extra=loop_config["extra"],
        extra_result={"workers": context.get_world_size()},
    )
