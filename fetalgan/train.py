"""The one training loop: ``train(cfg, report=None, resume=None, objective=None) -> Evaluation``.

``train()`` reads as the sequence of its steps: set the run up (:func:`_setup`), load the
data, build or resume the :class:`~fetalgan.train_state.TrainState` (which also writes the
checkpoint), then per epoch train (:func:`_train_epoch`) and, every ``eval_every`` epochs,
evaluate (:func:`_evaluate`: sample, score, track the best, write, checkpoint). The trainer
knows nothing of Ray or MLflow: a sweep passes ``report`` (called with the
:class:`~fetalgan.evaluation.Evaluation` record after every evaluation), ``resume`` (a
checkpoint to continue from) and ``objective`` (its metric and mode: what ``best.pt`` is best
at). Images are sampled by :mod:`fetalgan.sampling`, the one sampler.

Hot-loop rules: the real images live on the training device as one uint8 tensor, batches are
indexed, augmented and normalised there; losses are accumulated on the device and read once
per epoch (one host sync per epoch, which is also where a non-finite loss is caught).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from fetalgan.config import TrainConfig, with_overrides
from fetalgan.devices import pick_device
from fetalgan.evaluation import (
    Evaluation,
    Objective,
    eval_fraction,
    is_number,
    metric_source,
    window_value,
)
from fetalgan.models import ema_decay, registry
from fetalgan.models.registry import FamilySpec
from fetalgan.sampling import (
    EVAL_SEED_OFFSET,
    autocast_context,
    autocast_dtype,
    sample_images,
    sampling_batch_size,
)
from fetalgan.train_state import (
    TrainState,
    candidate_state,
    fresh_stream,
    keep_best_candidates,
    rng_state,
    seed_everything,
)

# Called after every evaluation; on rank 0 the Evaluation names the checkpoint file.
Report = Callable[[Evaluation], None]


class StepContext:
    """What a family's ``train_step`` needs from the loop: mixed precision and DDP control."""

    def __init__(self, device, amp_dtype, wrapped: dict):
        self.device, self.amp_dtype, self.wrapped = device, amp_dtype, wrapped
        self.epoch = 0  # the loop sets the current 0-based epoch before each one
        self.target = None  # translators: an unpaired batch of target_data, set per step

    def autocast(self):
        return autocast_context(self.device, self.amp_dtype)

    def no_sync(self, name: str):
        """Skip DDP's gradient all-reduce for ``name`` (gradients that are thrown away)."""
        net = self.wrapped[name]
        return net.no_sync() if hasattr(net, "no_sync") else contextlib.nullcontext()


def _load_target(cfg: TrainConfig, dataset, resolution: int, device, progress: bool):
    """Translators: the second domain (``cfg.target_data``, e.g. MR) as ``(M, 1, R, R) uint8``
    on ``device``, loaded and cached like ``data``; checked to share no phantom head with it."""
    from fetalgan.data import load_training_images
    from fetalgan.data.translation_inputs import check_unpaired

    target = load_training_images(cfg.target_data, resolution, seed=cfg.seed, progress=progress)
    check_unpaired(cfg, dataset.names, target.names)
    if target.images.shape[0] < 2:
        raise ValueError(f"target_data: need at least 2 images, got {target.images.shape[0]}")
    return target.images.to(device)


def _target_batches(images, cfg: TrainConfig, epoch: int, rank: int, memory_format):
    """``take(b)``: the next ``b`` images of the second domain, in [-1, 1], augmented with
    ``target_data.augment``. Their order is a permutation seeded by (seed, epoch, rank) on a
    private generator, independent of the US order (unpaired), of the global RNG (so a resume
    continues exactly) and cycled when the US set is larger."""
    import torch

    from fetalgan.data.augment import augment_batch

    n = images.shape[0]
    private = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 1_009 + rank)
    order = torch.randperm(n, generator=private).to(images.device)
    aug = cfg.target_data.augment
    position = 0

    def take(b: int):
        nonlocal position
        idx = order[torch.arange(position, position + b, device=images.device) % n]
        position += b
        batch = images[idx].float().div_(127.5).sub_(1.0)
        batch = augment_batch(batch, hflip=aug.hflip, rotate_deg=aug.rotate_deg)
        return batch.contiguous(memory_format=memory_format)

    return take


def real_sets_used(cfg: TrainConfig, dataset, reference, evaluator) -> list[dict]:
    """The training set and (when evaluating) the evaluation reference, as
    :func:`fetalgan.data.datasets.describe_set` describes them for MLflow's dataset inputs."""
    from fetalgan.config import reference_data
    from fetalgan.data.datasets import describe_set

    sets = [describe_set(cfg.data, key=dataset.key, n=len(dataset.names), context="training")]
    if reference is not None:
        sets.append(
            describe_set(
                reference_data(cfg), key=reference.key, n=evaluator.n_real, context="evaluation"
            )
        )
    return sets


def _plain(value: Any) -> Any:
    """numpy/torch scalars -> Python numbers (JSON and ``weights_only`` checkpoints need them)."""
    return value.item() if hasattr(value, "item") else value


def _default_run_dir() -> Path:
    return Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")


def default_objective(cfg: TrainConfig) -> Objective | None:
    """The best of a run without a sweep file: lowest FID (else KID, else LBPv L1 distance)
    among what ``eval_metrics`` computes; None when nothing is evaluated (no ``best.pt``)."""
    for source, metric in (("fid", "fid"), ("kid", "kid_mean"), ("lbpv", "lbpv_l1")):
        if source in cfg.eval_metrics:
            return Objective(metric, "min")
    return None


def check_objective(cfg: TrainConfig, objective: Objective) -> None:
    """ValueError when no evaluation of ``cfg`` produces ``objective.metric``."""
    source = metric_source(objective.metric)
    if source is not None and source not in cfg.eval_metrics:
        raise ValueError(
            f"metric: {objective.metric!r} needs {source!r} in eval_metrics "
            f"(now {cfg.eval_metrics})"
        )


# ---- the run: what stays fixed while it trains --------------------------------------------


@dataclass(frozen=True)
class Run:
    """Where and how a run trains, and what it writes; fixed from start to end."""

    family: FamilySpec  # cfg.model's spec (fetalgan.models.registry)
    model: ModuleType  # its implementation (build, make_optimizers, train_step, decode, ...)
    device: Any
    amp_dtype: Any  # the autocast dtype, None for fp32 (fetalgan.sampling.autocast_dtype)
    memory_format: Any
    distributed: bool  # under torch.distributed (DDP)
    rank: int
    world: int
    run_dir: Path
    show: bool  # progress bar and evaluation lines (rank 0)
    objective: Objective | None  # what best.pt is best at; None: no best
    keep_candidates: int
    rank_window: int | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class TrainingData:
    """The training images, resident on the device."""

    dataset: Any  # fetalgan.data's loaded set (its key and names describe it)
    real: Any  # (N, C, R, R) uint8: C = 1, or the family's extra input channels
    target: Any  # translators: the second domain (M, 1, R, R) uint8, else None
    augment: Any  # cfg.data.augment as the run started


@dataclass
class Scoring:
    """Rank 0's evaluation metrics against the reference set (``evaluator`` None without
    ``eval_metrics``); the sets used are described once, in the first evaluation."""

    dataset: Any
    evaluator: Any = None  # fetalgan.metrics.stats.TrainingMetrics
    reference: Any = None
    described: bool = False


def _setup(
    cfg: TrainConfig,
    device: str | None,
    run_dir: str | Path | None,
    progress: bool,
    objective: Objective | None,
    keep_candidates: int,
    rank_window: int | None,
) -> Run:
    """The run's device, precision, ranks and objective; torch's determinism switch set."""
    import torch

    dist = torch.distributed
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = pick_device(device or cfg.device)
    amp_dtype = autocast_dtype(cfg.precision, device)
    if cfg.deterministic and device.type == "cuda":  # cuBLAS repeats only with this workspace
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Set on every call (a reused trial process must not inherit the previous trial's switch);
    # warn_only: an op without a deterministic kernel warns with its name instead of failing.
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    family = registry.spec(cfg.model)
    if objective is None:
        objective = default_objective(cfg)
    else:
        check_objective(cfg, objective)
    return Run(
        family=family,
        model=family.implementation(),
        device=device,
        amp_dtype=amp_dtype,
        memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format,
        distributed=distributed,
        rank=rank,
        world=world,
        run_dir=Path(run_dir) if run_dir else _default_run_dir(),
        show=progress and rank == 0,
        objective=objective,
        keep_candidates=keep_candidates,
        rank_window=rank_window,
    )


def _read_resume(resume: str | Path | None) -> dict | None:
    """The full checkpoint to continue from, or None; ValueError for a weights-only one."""
    from fetalgan.checkpoint import is_full, load_checkpoint

    saved = load_checkpoint(resume) if resume else None
    if saved is not None and not is_full(saved):
        raise ValueError(
            f"{resume}: holds weights only (no optimiser or RNG state) and cannot be resumed; "
            "resume from a run's checkpoints/last.pt or a Tune checkpoint"
        )
    return saved


def _load_data(cfg: TrainConfig, run: Run) -> TrainingData:
    """Real images at the size the family trains on, on the device; for translators with
    their extra input channels (3D auxiliary input) and the second, unpaired domain."""
    from fetalgan.data import load_training_images

    family, resolution = run.family, run.family.real_resolution(cfg)
    dataset = load_training_images(cfg.data, resolution, seed=cfg.seed, progress=run.show)
    real = dataset.images  # (N, 1, R, R) uint8
    target = None
    if family.target_domain:
        from fetalgan.data import translation_inputs

        step = family.source_step(cfg)  # neighbour slices as extra channels, or None
        real = translation_inputs.source_images(cfg, dataset, step)  # (N, C, R, R) uint8
        target = _load_target(cfg, dataset, resolution, run.device, run.show)
    real = real.to(run.device)
    if real.shape[0] < 2:
        raise ValueError(f"data: need at least 2 training images, got {real.shape[0]}")
    return TrainingData(dataset=dataset, real=real, target=target, augment=cfg.data.augment)


def _build_state(
    cfg: TrainConfig,
    run: Run,
    saved: dict | None,
    resume: str | Path | None,
    extra: dict | None,
    exploit: dict | None,
) -> TrainState:
    """Fresh networks and optimisers, or ``saved``'s (another trial's under ``exploit``);
    every data-parallel rank on its own random stream; the generator average on rank 0."""
    model = run.model
    networks = model.build(cfg)
    for net in networks.values():
        net.to(run.device, memory_format=run.memory_format)
    state = TrainState(
        cfg=cfg,
        networks=networks,
        optimizers=model.make_optimizers(cfg, networks),
        objective=run.objective,
        extra=dict(saved.get("extra", {}) if saved else {}) | dict(extra or {}),
    )
    if saved:
        state.resume(saved, resume, run.rank, run.device)
    elif run.distributed:  # every rank its own latents, augmentations and noise (same weights)
        seed_everything(cfg.seed + run.rank)
    if saved and exploit is not None:  # another trial's state: this run's hyper-parameters
        state.exploit(exploit, model.make_optimizers, run.rank)
    # The generator's moving average (ema_decay): what evaluations sample. Rank 0 keeps it
    # (the weights are the same on every rank); a resume continues the saved one.
    decay = ema_decay(cfg)
    if run.is_main and decay > 0:
        state.start_ema(run.family.generators, decay, saved, resume)
    return state


def _step_context(networks: dict, run: Run, cfg: TrainConfig) -> StepContext:
    """The networks the steps train through: DDP-wrapped when distributed, then compiled."""
    import torch

    wrapped = dict(networks)
    if run.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [run.device.index] if run.device.type == "cuda" else None
        # BN running stats stay per rank (rank 0's are used for sampling); no per-forward sync.
        wrapped = {
            n: DDP(net, device_ids=ids, broadcast_buffers=False) for n, net in wrapped.items()
        }
    if cfg.compile:  # around DDP, as torch recommends (graph breaks at DDP's bucket boundaries)
        wrapped = {name: torch.compile(net) for name, net in wrapped.items()}
    return StepContext(run.device, run.amp_dtype, wrapped)


def _scoring(cfg: TrainConfig, run: Run, data: TrainingData) -> Scoring:
    """The metrics of ``cfg.eval_metrics`` on rank 0, against ``eval_reference`` (never the
    training subset)."""
    scoring = Scoring(dataset=data.dataset)
    if cfg.eval_metrics and run.is_main:
        from fetalgan.config import reference_data
        from fetalgan.data import load_reference_images
        from fetalgan.data.cache import statistics_dir
        from fetalgan.metrics.stats import TrainingMetrics

        scoring.reference = load_reference_images(
            cfg, run.family.real_resolution(cfg), progress=run.show
        )
        scoring.evaluator = TrainingMetrics(
            scoring.reference.images,
            metrics=list(cfg.eval_metrics),
            fid_weights=cfg.fid_weights,
            dims=cfg.fid_dims,
            device=run.device,
            stats_dir=statistics_dir(reference_data(cfg).cache_dir),
        )
    return scoring


def _progress_bar(cfg: TrainConfig, run: Run, start_epoch: int):
    if not run.show:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=cfg.epochs,
        initial=start_epoch,
        desc=f"train {cfg.model}{cfg.resolution}",
        unit="epoch",
        disable=None,  # off when stderr is no terminal (a Slurm log): the evaluation lines stay
    )


# ---- one epoch ----------------------------------------------------------------------------


def _follow_schedule(state: TrainState, segments: list[dict], epoch: int, first: bool, run: Run):
    """A PBT replay: switch to the segment that starts at ``epoch`` (or, on the run's
    ``first`` epoch, the one in force), re-seeding as the exploit did."""
    now = [seg for seg in segments if seg["epoch"] <= epoch]
    if not now or not (first or now[-1]["epoch"] == epoch):
        return
    state.switch_config(with_overrides(state.cfg, now[-1]["config"]), run.model.make_optimizers)
    if "stream" in now[-1] and now[-1]["epoch"] == epoch:  # as the exploit re-seeded
        fresh_stream(state.cfg, run.rank, epoch, int(now[-1]["stream"]))


def _train_epoch(
    state: TrainState, data: TrainingData, run: Run, ctx: StepContext, epoch: int
) -> dict[str, float]:
    """One pass over this rank's shard of the real images; the mean losses by name, read in
    the one host sync of the epoch (summed over ranks when distributed)."""
    import torch

    from fetalgan.data.augment import augment_batch

    cfg, model, aug = state.cfg, run.model, data.augment
    ctx.epoch = epoch  # 0-based; multi-stage families (dsrgan) switch on it
    for net in ctx.wrapped.values():
        net.train()
    n_real = data.real.shape[0]
    order = torch.randperm(n_real, device=run.device)
    if run.distributed:  # rank 0's order on every rank (each rank has its own random stream)
        torch.distributed.broadcast(order, src=0)
    # Equal shards, so every rank takes the same number of steps (DDP's gradient all-reduce
    # pairs up across ranks); the n_real % world images left over sit this epoch out.
    shard = order[: n_real - n_real % run.world][run.rank :: run.world]
    loss_sums = torch.zeros(len(model.LOSS_NAMES), device=run.device)
    steps = 0
    next_target = None
    if data.target is not None:
        next_target = _target_batches(data.target, cfg, epoch, run.rank, run.memory_format)
    for idx in shard.split(cfg.batch_size):
        if idx.numel() < 2:  # batch-norm needs two samples
            continue
        real = data.real[idx].float().div_(127.5).sub_(1.0)
        real = augment_batch(real, hflip=aug.hflip, rotate_deg=aug.rotate_deg)
        real = real.contiguous(memory_format=run.memory_format)
        if next_target is not None:  # translators: an unpaired batch of the second domain
            ctx.target = next_target(idx.numel())
        loss_sums += model.train_step(ctx.wrapped, state.optimizers, real, cfg, ctx)
        if state.ema is not None:
            state.ema.update()
        steps += 1
    if steps == 0:  # the same on every rank (equal shards): no rank waits on another
        raise ValueError(
            f"batch_size: epoch {epoch + 1} took no training step: {shard.numel()} image(s) "
            f"{'per data-parallel worker ' if run.distributed else ''}in batches of "
            f"{cfg.batch_size}, and a step needs at least 2 (batch-norm)"
        )
    if run.distributed:
        counts = torch.tensor([float(steps)], device=run.device)
        loss_sums = torch.cat([loss_sums, counts])
        torch.distributed.all_reduce(loss_sums)
        loss_sums, steps = loss_sums[:-1], loss_sums[-1]
    losses = (loss_sums / max(float(steps), 1.0)).tolist()  # the one host sync per epoch
    return dict(zip(model.LOSS_NAMES, losses, strict=True))


def _check_finite(losses: dict[str, float], done: int, cfg: TrainConfig) -> None:
    if not all(math.isfinite(v) for v in losses.values()):
        shown = ", ".join(f"{k}={v}" for k, v in losses.items())
        raise FloatingPointError(
            f"non-finite loss at epoch {done} ({shown}); "
            f"try lower lr_g/lr_d (now {cfg.lr_g:g}/{cfg.lr_d:g}) or precision: fp32"
        )


def _fail_at_epoch(cfg: TrainConfig, done: int, resumed: bool) -> None:
    """Testing knob ``cfg.fail_at_epoch``: a simulated crash after that epoch, unless resumed
    (the fault-tolerance tests resume the crashed trial and expect it to finish)."""
    if cfg.fail_at_epoch == done and not resumed:
        raise RuntimeError(f"fail_at_epoch: simulated crash at epoch {done} (testing knob)")


def _evaluation_due(cfg: TrainConfig, done: int) -> bool:
    """Every ``cfg.eval_every`` epochs, and at the last."""
    return not done % cfg.eval_every or done == cfg.epochs


# ---- an evaluation ------------------------------------------------------------------------


def _evaluate(
    state: TrainState,
    run: Run,
    scoring: Scoring,
    losses: dict[str, float],
    train_seconds: float,
    bar,
) -> Evaluation:
    """The evaluation after ``state.epoch`` epochs. Rank 0 samples ``eval_n`` images, scores
    them, writes the grid, tracks the best, appends to ``metrics.jsonl`` and saves the
    checkpoints; the other ranks send it their random streams and get losses only."""
    import torch

    evaluation = Evaluation(
        epoch=state.epoch, losses=losses, objective=run.objective or Objective()
    )
    rank_states = None
    if run.distributed:  # every rank's random stream into rank 0's checkpoint (exact resume)
        rank_states = [None] * run.world
        torch.distributed.all_gather_object(rank_states, rng_state(run.device))
    if not run.is_main:
        return evaluation
    t0 = time.perf_counter()
    fakes = _sample_for_evaluation(state, run)
    _score(evaluation, fakes, scoring, state.cfg)
    evaluation.eval_seconds = time.perf_counter() - t0
    evaluation.train_seconds = train_seconds
    evaluation.eval_fraction = eval_fraction([*state.history, evaluation.to_dict()])
    grid = run.run_dir / "samples" / f"epoch_{state.epoch:04d}.png"
    _write_grid(fakes, grid)
    evaluation.sample_grid = str(grid)
    _track_best(evaluation, state, run)
    _save(evaluation, state, run, rank_states)
    if bar is not None:
        shown = evaluation.metrics()
        names = (*run.model.LOSS_NAMES, "fid", "kid_mean")
        bar.write(
            f"epoch {state.epoch}: " + " ".join(f"{k} {shown[k]:.3f}" for k in names if k in shown)
        )
    del fakes
    if run.device.type == "cuda":  # give sampling's cached blocks back (trials share GPUs)
        torch.cuda.empty_cache()
    return evaluation


def _sample_for_evaluation(state: TrainState, run: Run):
    """``cfg.eval_n`` images ``(n, 1, R, R) uint8`` from what evaluations sample (the
    average, recalibrated, where EMA is on), under the training precision."""
    cfg = state.cfg
    if state.ema is not None:  # the average's own batch-norm statistics (fetalgan.ema)
        state.ema.recalibrate(
            state.networks,
            cfg,
            run.device,
            batch_size=sampling_batch_size(cfg),
            amp_dtype=run.amp_dtype,
        )
    return sample_images(
        state.sampling_networks(),
        cfg,
        cfg.eval_n,
        seed=cfg.seed + EVAL_SEED_OFFSET,
        batch_size=sampling_batch_size(cfg),
        device=run.device,
        amp_dtype=run.amp_dtype,
    )


def _score(evaluation: Evaluation, fakes, scoring: Scoring, cfg: TrainConfig) -> None:
    """The metrics of ``fakes`` into ``evaluation`` (plain Python numbers: checkpoints load
    weights_only); the first evaluation also names the data sets used."""
    evaluation.n_fake = int(fakes.shape[0])
    evaluator = scoring.evaluator
    if evaluator is not None:
        values = {k: _plain(v) for k, v in evaluator(fakes).items()}
        evaluation.n_real = values.pop("n_real", None)
        evaluation.feature_dim = values.pop("feature_dim", None)
        values.pop("n_fake", None)
        evaluation.values = values
        evaluation.weights_sha256 = evaluator.weights_sha256
        evaluation.reference = scoring.reference.key
        evaluation.reference_n = evaluator.n_real
        evaluation.reference_key = evaluator.reference_key
    if not scoring.described:  # what this process trains and evaluates on, once
        scoring.described = True
        evaluation.datasets = real_sets_used(cfg, scoring.dataset, scoring.reference, evaluator)


def _write_grid(fakes, path: Path) -> None:
    from fetalgan.images import write_grid

    path.parent.mkdir(parents=True, exist_ok=True)
    write_grid(fakes[:64], path, nrow=8)


def _track_best(evaluation: Evaluation, state: TrainState, run: Run) -> None:
    """Is this evaluation the best by the run's objective so far; its window value
    (``rank_window``); and the ``keep_candidates`` best sampling weights."""
    objective = run.objective
    if objective is None:
        return
    score = evaluation.get(objective.metric)
    evaluation.is_best = objective.better(score, state.best_value)
    state.best_value = score if evaluation.is_best else state.best_value
    evaluation.best_value = state.best_value
    if run.rank_window:
        earlier = (h.get("values", {}).get(objective.metric) for h in state.history)
        evaluation.window_value = window_value([*earlier, score], run.rank_window)
    if run.keep_candidates > 1 and is_number(score):
        candidate = candidate_state(
            state.sampling_networks(), run.family.generators, state.epoch, score
        )
        state.candidates = keep_best_candidates(
            [*state.candidates, candidate], objective, run.keep_candidates
        )


def _save(evaluation: Evaluation, state: TrainState, run: Run, rank_states) -> None:
    """Append ``evaluation`` to the history and ``metrics.jsonl``; save ``last.pt`` (full:
    what a resume continues from) and, when best, ``best.pt`` (weights only: what generate
    and MLflow use)."""
    from fetalgan.checkpoint import save_checkpoint, save_weights

    checkpoint_file = run.run_dir / "checkpoints" / "last.pt"
    evaluation.checkpoint = str(checkpoint_file)
    state.history.append(evaluation.to_dict())
    with open(run.run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(evaluation.to_dict()) + "\n")
    saved = state.checkpoint(run.device, rank_states)
    save_checkpoint(checkpoint_file, saved)
    if evaluation.is_best:
        best_file = save_weights(run.run_dir / "checkpoints" / "best.pt", saved)
        evaluation.best_weights = str(best_file)


# ---- the loop -----------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    report: Report | None = None,
    resume: str | Path | None = None,
    run_dir: str | Path | None = None,
    progress: bool = True,
    extra: dict | None = None,
    objective: Objective | None = None,
    device: str | None = None,
    keep_candidates: int = 1,
    rank_window: int | None = None,
    exploit: dict | None = None,
    schedule: list[dict] | None = None,
) -> Evaluation:
    """Train ``cfg.model`` on ``cfg.data``; return the last :class:`Evaluation`.

    Every ``cfg.eval_every`` epochs (and at the last one): sample ``cfg.eval_n`` images, compute
    the metrics in ``cfg.eval_metrics``, write ``samples/epoch_NNNN.png``, append to
    ``metrics.jsonl``, save ``checkpoints/last.pt`` (and ``best.pt`` when ``objective`` — the
    sweep's metric and mode; default :func:`default_objective` — improved), then call
    ``report(evaluation)``. ``resume`` continues exactly from a checkpoint; ``extra`` is stored
    unchanged in every checkpoint (a sweep keeps its MLflow run id there). Under
    torch.distributed each rank trains on an equal shard (every rank takes the same number of
    steps) with averaged gradients and its own random stream (seed + rank; every rank's state
    is in rank 0's checkpoint); rank 0 evaluates and writes, every rank calls ``report``
    (others with an Evaluation of losses only). ``device`` overrides ``cfg.device`` (a sweep
    trial's device follows the GPUs Ray gave it). With ``ema_decay`` on (see
    :mod:`fetalgan.ema`) evaluations sample the generator's moving average, and checkpoints
    keep it beside the trained weights. Each evaluation records ``train_seconds`` and the
    run's ``eval_fraction`` (time evaluating over time evaluating and training).

    ``keep_candidates`` > 1 (a sweep's ``select.per_trial``): the full checkpoint also keeps
    the sampling weights (the generator networks, EMA-averaged where on) of the run's
    ``keep_candidates`` best evaluations, the candidates of the final selection stage
    (:func:`candidate_state`). ``rank_window``: each evaluation also carries
    ``window_<metric>``, the geometric mean of the objective's metric over the last
    ``rank_window`` evaluations (:func:`fetalgan.evaluation.window_value`).

    ``exploit`` (PBT/PB2, :mod:`fetalgan.sweep.pbt`): ``resume`` is another trial's state.
    Its weights, optimiser moments, EMA and epoch are taken; this run's hyper-parameters
    (``cfg``) are re-applied to the optimisers, its random stream is its own
    (``exploit["stream"]``) and its best record stays its own (``exploit["best_value"]``,
    no candidates), so ``best.pt`` is always weights this run produced at the value logged.
    ``schedule`` (a PBT replay): ``[{"epoch": e, "config": {key: value}}, ...]``, the
    hyper-parameters to switch to from epoch ``e`` on (re-applied to the optimisers).
    """
    run = _setup(cfg, device, run_dir, progress, objective, keep_candidates, rank_window)
    seed_everything(cfg.seed)
    saved = _read_resume(resume)
    data = _load_data(cfg, run)
    state = _build_state(cfg, run, saved, resume, extra, exploit)
    ctx = _step_context(state.networks, run, cfg)
    scoring = _scoring(cfg, run, data)
    bar = _progress_bar(cfg, run, state.epoch)
    start_epoch, segments = state.epoch, sorted(schedule or [], key=lambda seg: seg["epoch"])
    evaluation = (
        Evaluation.from_dict(state.history[-1]) if state.history else Evaluation(epoch=start_epoch)
    )

    train_seconds = 0.0  # training time since the last evaluation (for eval_fraction)
    for epoch in range(start_epoch, cfg.epochs):
        epoch_start = time.perf_counter()
        _follow_schedule(state, segments, epoch, epoch == start_epoch, run)
        losses = _train_epoch(state, data, run, ctx, epoch)
        train_seconds += time.perf_counter() - epoch_start
        state.epoch = epoch + 1
        _check_finite(losses, state.epoch, state.cfg)
        _fail_at_epoch(state.cfg, state.epoch, resumed=saved is not None)
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
        if not _evaluation_due(state.cfg, state.epoch):
            continue
        evaluation = _evaluate(state, run, scoring, losses, train_seconds, bar)
        train_seconds = 0.0
        if report is not None:
            report(evaluation)
    if bar is not None:
        bar.close()
    return evaluation
