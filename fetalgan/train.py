"""The one training loop: ``train(cfg, report=None, resume=None, objective=None) -> Evaluation``.

Reads top to bottom as the loop it is. The trainer knows nothing of Ray or MLflow: a sweep
passes ``report`` (called with the :class:`~fetalgan.evaluation.Evaluation` record after every
evaluation), ``resume`` (a checkpoint to continue from) and ``objective`` (its metric and mode:
what ``best.pt`` is best at).

Hot-loop rules: the real images live on the training device as one uint8 tensor, batches are
indexed, augmented and normalised there; losses are accumulated on the device and read once
per epoch (one host sync per epoch, which is also where a non-finite loss is caught).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fetalgan.config import TrainConfig, to_dict, with_overrides
from fetalgan.devices import pick_device
from fetalgan.evaluation import (
    Evaluation,
    Objective,
    eval_fraction,
    is_number,
    metric_source,
    window_value,
)

# Called after every evaluation; on rank 0 the Evaluation names the checkpoint file.
Report = Callable[[Evaluation], None]


def autocast_dtype(precision: str, device) -> Any:
    """``torch.bfloat16`` when bf16 is asked for or ``auto`` finds hardware bf16; else None."""
    import torch

    if precision == "fp32":
        return None
    if device.type == "cuda":  # native only: pre-Ampere GPUs emulate bf16, slower than fp32
        has_bf16 = torch.cuda.is_bf16_supported(including_emulation=precision == "bf16")
    else:  # AVX512-BF16 / AMX: oneDNN runs bf16 convolutions natively
        has_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if precision == "bf16" and not has_bf16:
        raise ValueError(f"precision: bf16 requested but {device.type} has no bf16 support")
    return torch.bfloat16 if has_bf16 else None


def _rng_state(device) -> dict[str, Any]:
    import numpy as np
    import torch

    state = {
        "torch": torch.get_rng_state(),
        "numpy": [v.tolist() if isinstance(v, np.ndarray) else v for v in np.random.get_state()],
        "python": json.dumps(random.getstate()),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_uint8_tensor(images):
    """Generator output in [-1, 1] -> ``(N, 1, R, R) uint8`` on the CPU."""
    import torch

    return ((images.float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8).cpu()


def sampling_batch_size(cfg: TrainConfig) -> int:
    """Images per sampling batch: ``cfg.eval_batch_size``, else 256 up to 64 px, 64 at 128 px
    and 16 at 256 px (activations grow with the square of the side)."""
    if cfg.eval_batch_size is not None:
        return cfg.eval_batch_size
    return {32: 256, 64: 256, 128: 64}.get(cfg.resolution, 16)


def autocast_context(device, amp_dtype):
    """Autocast to ``amp_dtype`` on ``device``'s type, or nothing when it is None (fp32)."""
    import torch

    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def sample_images(
    networks,
    cfg: TrainConfig,
    n: int,
    device,
    *,
    seed: int,
    batch_size: int = 256,
    amp_dtype=None,
):
    """``n`` images ``(n, 1, R, R) uint8`` on the CPU, ``batch_size`` at a time, under autocast
    to ``amp_dtype`` when given (the training precision). All latents come from one private
    CPU RNG seeded with ``seed`` (so the images do not depend on ``batch_size``, and the global
    RNG that training draws from is left untouched)."""
    import torch

    from fetalgan.models import family

    model = family(cfg.model)
    z_all = model.latents(n, cfg, torch.Generator().manual_seed(seed))
    modes = {name: net.training for name, net in networks.items()}
    for net in networks.values():
        net.eval()
    chunks = []
    with torch.inference_mode(), autocast_context(device, amp_dtype):
        for start in range(0, n, batch_size):
            z = z_all[start : start + batch_size].to(device)
            chunks.append(to_uint8_tensor(model.decode(networks, z, cfg)))
    for name, net in networks.items():
        net.train(modes[name])
    return torch.cat(chunks)


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


def _load_target(cfg: TrainConfig, model, dataset, resolution: int, device, progress: bool):
    """Translators: the second domain (``cfg.target_data``, e.g. MR) as ``(M, 1, R, R) uint8``
    on ``device``, loaded and cached like ``data``; checked to share no phantom head with it."""
    from fetalgan.data import load_training_images
    from fetalgan.models.translation import check_unpaired

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


def reapply_hyperparameters(optimizers: dict, fresh: dict) -> None:
    """Put the hyper-parameters of ``fresh`` optimisers (built from the config now in force)
    into ``optimizers`` (loaded from a state), keeping their moments: a loaded state carries
    the learning rate, betas and weight decay it was saved with, which would otherwise win."""
    for name, opt in optimizers.items():
        for group, new in zip(opt.param_groups, fresh[name].param_groups, strict=True):
            group.update({k: v for k, v in new.items() if k != "params"})


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


def candidate_state(networks: dict, names: tuple[str, ...], epoch: int, value: float) -> dict:
    """One evaluation's candidate for the final selection: the sampling weights of the
    networks ``names`` (copied to the CPU), its epoch and its value of the objective."""
    return {
        "epoch": int(epoch),
        "value": float(value),
        "networks": {
            name: {
                k: v.detach().to("cpu", copy=True) for k, v in networks[name].state_dict().items()
            }
            for name in names
        },
    }


def keep_best_candidates(candidates: list[dict], objective: Objective, k: int) -> list[dict]:
    """The ``k`` best of ``candidates`` by ``objective`` (earlier epoch first on ties)."""
    sign = 1.0 if objective.mode == "min" else -1.0
    return sorted(candidates, key=lambda c: (sign * c["value"], c["epoch"]))[:k]


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
    import torch

    from fetalgan.checkpoint import (
        is_full,
        load_checkpoint,
        load_networks,
        require,
        save_checkpoint,
        save_weights,
    )
    from fetalgan.data import load_training_images
    from fetalgan.data.augment import augment_batch
    from fetalgan.images import write_grid
    from fetalgan.models import GENERATORS, ema_decay, family

    dist = torch.distributed
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    is_main = rank == 0
    device = pick_device(device or cfg.device)
    amp_dtype = autocast_dtype(cfg.precision, device)
    if cfg.deterministic and device.type == "cuda":  # cuBLAS repeats only with this workspace
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Set on every call (a reused trial process must not inherit the previous trial's switch);
    # warn_only: an op without a deterministic kernel warns with its name instead of failing.
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    run_dir = Path(run_dir) if run_dir else _default_run_dir()
    show = progress and is_main
    model = family(cfg.model)
    if objective is None:
        objective = default_objective(cfg)
    else:
        check_objective(cfg, objective)

    # ---- state: fresh or resumed --------------------------------------------------------
    seed_everything(cfg.seed)
    state = load_checkpoint(resume) if resume else None
    if state is not None and not is_full(state):
        raise ValueError(
            f"{resume}: holds weights only (no optimiser or RNG state) and cannot be resumed; "
            "resume from a run's checkpoints/last.pt or a Tune checkpoint"
        )
    extra = dict(state.get("extra", {}) if state else {}) | dict(extra or {})

    # Real images at the size the family trains on (dsrgan: 2 x resolution for its SR stage).
    real_resolution = getattr(model, "real_resolution", lambda c: c.resolution)(cfg)
    dataset = load_training_images(cfg.data, real_resolution, seed=cfg.seed, progress=show)
    real_images = dataset.images.to(device)  # (N, 1, R, R) uint8, resident on the device
    # Translators: extra input channels (3D auxiliary input) and the second, unpaired domain.
    if hasattr(model, "source_images"):
        real_images = model.source_images(cfg, dataset).to(device)  # (N, C, R, R) uint8
    target_images = None
    if getattr(model, "TARGET_DOMAIN", False):
        target_images = _load_target(cfg, model, dataset, real_resolution, device, show)
    n_real = real_images.shape[0]
    if n_real < 2:
        raise ValueError(f"data: need at least 2 training images, got {n_real}")

    networks = model.build(cfg)
    for net in networks.values():
        net.to(device, memory_format=memory_format)
    optimizers = model.make_optimizers(cfg, networks)
    start_epoch, history, best_value, candidates = 0, [], None, []
    if state:
        require(state, resume, ("networks", "optimizers", "epoch", "rng"))
        load_networks(networks, state, resume)
        for name, opt in optimizers.items():
            try:
                opt.load_state_dict(state["optimizers"][name])
            except (KeyError, ValueError) as err:
                raise ValueError(f"{resume}: optimizers.{name}: does not fit ({err})") from None
        start_epoch, history = state["epoch"], list(state.get("history", []))
        if objective is not None and state.get("objective") == objective.metric:
            best_value = state.get("best_value")
            candidates = list(state.get("candidates") or [])
        rank_states = state.get("rng_ranks") or [state["rng"]]
        if rank < len(rank_states):
            _set_rng_state(rank_states[rank], device)
        else:  # resumed with more ranks than saved: a fresh stream for this one
            seed_everything(cfg.seed + rank + 7919 * start_epoch)
    elif distributed:  # every rank its own latents, augmentations and noise (same weights)
        seed_everything(cfg.seed + rank)
    if state and exploit is not None:  # another trial's state: this run's hyper-parameters
        reapply_hyperparameters(optimizers, model.make_optimizers(cfg, networks))
        seed_everything(cfg.seed + rank + 7919 * start_epoch + int(exploit.get("stream", 0)))
        best_value, candidates = exploit.get("best_value"), []
        # the donor's evaluations stay (the lineage's window), its bests are not this run's
        history = [{**h, "is_best": False, "best_weights": None} for h in history]
    segments = sorted(schedule or [], key=lambda seg: seg["epoch"])

    # The generator's moving average (ema_decay): what evaluations sample. Rank 0 keeps it
    # (the weights are the same on every rank); a resume continues the saved one.
    ema = None
    if is_main and ema_decay(cfg) > 0:
        from fetalgan.ema import GeneratorEMA

        ema = GeneratorEMA(networks, GENERATORS[cfg.model], ema_decay(cfg))
        if state and state.get("ema"):
            ema.load_state_dict(state["ema"], resume)

    wrapped = dict(networks)
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        # BN running stats stay per rank (rank 0's are used for sampling); no per-forward sync.
        wrapped = {
            n: DDP(net, device_ids=ids, broadcast_buffers=False) for n, net in wrapped.items()
        }
    if cfg.compile:  # around DDP, as torch recommends (graph breaks at DDP's bucket boundaries)
        wrapped = {name: torch.compile(net) for name, net in wrapped.items()}
    ctx = StepContext(device, amp_dtype, wrapped)

    evaluator, reference, described = None, None, False
    if cfg.eval_metrics and is_main:  # against eval_reference, never the training subset
        from fetalgan.config import reference_data
        from fetalgan.data import load_reference_images
        from fetalgan.metrics.stats import TrainingMetrics

        reference = load_reference_images(cfg, real_resolution, progress=show)
        evaluator = TrainingMetrics(
            reference.images,
            metrics=list(cfg.eval_metrics),
            fid_weights=cfg.fid_weights,
            dims=cfg.fid_dims,
            device=device,
            cache_dir=reference_data(cfg).cache_dir,
        )

    aug = cfg.data.augment
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=cfg.epochs,
            initial=start_epoch,
            desc=f"train {cfg.model}{cfg.resolution}",
            unit="epoch",
            disable=None,  # off when stderr is no terminal (a Slurm log): the evaluation lines stay
        )
    evaluation = Evaluation.from_dict(history[-1]) if history else Evaluation(epoch=start_epoch)

    # ---- the loop --------------------------------------------------------------------------
    train_seconds = 0.0  # training time since the last evaluation (for eval_fraction)
    for epoch in range(start_epoch, cfg.epochs):
        epoch_start = time.perf_counter()
        now = [seg for seg in segments if seg["epoch"] <= epoch]
        if now and (epoch == start_epoch or now[-1]["epoch"] == epoch):  # a replay's switch
            cfg = with_overrides(cfg, now[-1]["config"])
            reapply_hyperparameters(optimizers, model.make_optimizers(cfg, networks))
            if "stream" in now[-1] and now[-1]["epoch"] == epoch:  # as the exploit re-seeded
                seed_everything(cfg.seed + rank + 7919 * epoch + int(now[-1]["stream"]))
        ctx.epoch = epoch  # 0-based; multi-stage families (dsrgan) switch on it
        for net in wrapped.values():
            net.train()
        order = torch.randperm(n_real, device=device)
        if distributed:  # rank 0's order on every rank (each rank has its own random stream)
            dist.broadcast(order, src=0)
        # Equal shards, so every rank takes the same number of steps (DDP's gradient all-reduce
        # pairs up across ranks); the n_real % world images left over sit this epoch out.
        shard = order[: n_real - n_real % world][rank::world]
        loss_sums = torch.zeros(len(model.LOSS_NAMES), device=device)
        steps = 0
        next_target = None
        if target_images is not None:
            next_target = _target_batches(target_images, cfg, epoch, rank, memory_format)
        for idx in shard.split(cfg.batch_size):
            if idx.numel() < 2:  # batch-norm needs two samples
                continue
            real = real_images[idx].float().div_(127.5).sub_(1.0)
            real = augment_batch(real, hflip=aug.hflip, rotate_deg=aug.rotate_deg)
            real = real.contiguous(memory_format=memory_format)
            if next_target is not None:  # translators: an unpaired batch of the second domain
                ctx.target = next_target(idx.numel())
            loss_sums += model.train_step(wrapped, optimizers, real, cfg, ctx)
            if ema is not None:
                ema.update()
            steps += 1
        if steps == 0:  # the same on every rank (equal shards): no rank waits on another
            raise ValueError(
                f"batch_size: epoch {epoch + 1} took no training step: {shard.numel()} image(s) "
                f"{'per data-parallel worker ' if distributed else ''}in batches of "
                f"{cfg.batch_size}, and a step needs at least 2 (batch-norm)"
            )

        if distributed:
            counts = torch.tensor([float(steps)], device=device)
            loss_sums = torch.cat([loss_sums, counts])
            dist.all_reduce(loss_sums)
            loss_sums, steps = loss_sums[:-1], loss_sums[-1]
        losses = (loss_sums / max(float(steps), 1.0)).tolist()  # the one host sync per epoch
        train_seconds += time.perf_counter() - epoch_start
        done = epoch + 1
        named = dict(zip(model.LOSS_NAMES, losses, strict=True))
        if not all(math.isfinite(v) for v in losses):
            shown = ", ".join(f"{k}={v}" for k, v in named.items())
            raise FloatingPointError(
                f"non-finite loss at epoch {done} ({shown}); "
                f"try lower lr_g/lr_d (now {cfg.lr_g:g}/{cfg.lr_d:g}) or precision: fp32"
            )
        if cfg.fail_at_epoch == done and state is None:
            raise RuntimeError(f"fail_at_epoch: simulated crash at epoch {done} (testing knob)")
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in named.items()}, refresh=False)

        if done % cfg.eval_every and done != cfg.epochs:
            continue

        # ---- evaluation: metrics, sample grid, checkpoint, report ------------------------
        evaluation = Evaluation(epoch=done, losses=named, objective=objective or Objective())
        rank_states = None
        if distributed:  # every rank's random stream into rank 0's checkpoint (exact resume)
            rank_states = [None] * world
            dist.all_gather_object(rank_states, _rng_state(device))
        if is_main:
            t0 = time.perf_counter()
            if ema is not None:  # the average's own batch-norm statistics (fetalgan.ema)
                ema.recalibrate(
                    networks,
                    cfg,
                    device,
                    batch_size=sampling_batch_size(cfg),
                    amp_dtype=amp_dtype,
                )
            fakes = sample_images(
                networks if ema is None else ema.sampling_networks(networks),
                cfg,
                cfg.eval_n,
                device,
                seed=cfg.seed + 1_000_003,
                batch_size=sampling_batch_size(cfg),
                amp_dtype=amp_dtype,
            )
            evaluation.n_fake = int(fakes.shape[0])
            if evaluator is not None:  # plain Python numbers: checkpoints load weights_only
                values = {k: _plain(v) for k, v in evaluator(fakes).items()}
                evaluation.n_real = values.pop("n_real", None)
                evaluation.feature_dim = values.pop("feature_dim", None)
                values.pop("n_fake", None)
                evaluation.values = values
                evaluation.weights_sha256 = evaluator.weights_sha256
                evaluation.reference = reference.key
                evaluation.reference_n = evaluator.n_real
                evaluation.reference_key = evaluator.reference_key
            if not described:  # what this process trains and evaluates on, once
                described = True
                evaluation.datasets = real_sets_used(cfg, dataset, reference, evaluator)
            evaluation.eval_seconds = time.perf_counter() - t0
            evaluation.train_seconds, train_seconds = train_seconds, 0.0
            evaluation.eval_fraction = eval_fraction([*history, evaluation.to_dict()])
            grid = run_dir / "samples" / f"epoch_{done:04d}.png"
            grid.parent.mkdir(parents=True, exist_ok=True)
            write_grid(fakes[:64], grid, nrow=8)
            evaluation.sample_grid = str(grid)
            if objective is not None:
                score = evaluation.get(objective.metric)
                evaluation.is_best = objective.better(score, best_value)
                best_value = score if evaluation.is_best else best_value
                evaluation.best_value = best_value
                if rank_window:
                    evaluation.window_value = window_value(
                        [*(h.get("values", {}).get(objective.metric) for h in history), score],
                        rank_window,
                    )
                if keep_candidates > 1 and is_number(score):
                    sampling = networks if ema is None else ema.sampling_networks(networks)
                    candidates = keep_best_candidates(
                        [
                            *candidates,
                            candidate_state(sampling, GENERATORS[cfg.model], done, score),
                        ],
                        objective,
                        keep_candidates,
                    )
            else:
                evaluation.objective = Objective()
            checkpoint_file = run_dir / "checkpoints" / "last.pt"
            evaluation.checkpoint = str(checkpoint_file)
            history.append(evaluation.to_dict())
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(evaluation.to_dict()) + "\n")
            saved = {
                "model": cfg.model,
                "config": to_dict(cfg),
                "epoch": done,
                "networks": {n: net.state_dict() for n, net in networks.items()},
                "optimizers": {n: opt.state_dict() for n, opt in optimizers.items()},
                **({"ema": ema.state_dict()} if ema is not None else {}),
                "rng": _rng_state(device),
                "history": history,
                "objective": None if objective is None else objective.metric,
                "best_value": best_value,
                "extra": extra,
                **({"candidates": candidates} if candidates else {}),
            }
            if rank_states is not None:  # rank 0's own entry as of now, like "rng"
                saved["rng_ranks"] = [saved["rng"], *rank_states[1:]]
            save_checkpoint(checkpoint_file, saved)  # full: what a resume continues from
            if evaluation.is_best:  # weights only: what generate and MLflow use
                best_file = save_weights(run_dir / "checkpoints" / "best.pt", saved)
                evaluation.best_weights = str(best_file)
            if bar is not None:
                shown = evaluation.metrics()
                bar.write(
                    f"epoch {done}: "
                    + " ".join(
                        f"{k} {shown[k]:.3f}"
                        for k in (*model.LOSS_NAMES, "fid", "kid_mean")
                        if k in shown
                    )
                )
            del fakes
            if device.type == "cuda":  # give sampling's cached blocks back (trials share GPUs)
                torch.cuda.empty_cache()
        if report is not None:
            report(evaluation)

    if bar is not None:
        bar.close()
    return evaluation
