"""The one training loop: ``train(cfg, report=None, resume=None) -> dict of final metrics``.

Reads top to bottom as the loop it is. The trainer knows nothing of Ray or MLflow: a sweep
passes ``report`` (called after every evaluation with the metrics and the checkpoint file)
and ``resume`` (a checkpoint to continue from).

Hot-loop rules: the real images live on the training device as one uint8 tensor, batches are
indexed, augmented and normalised there; losses are accumulated on the device and read once
per epoch (one host sync per epoch, which is also where a non-finite loss is caught).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fetalgan.config import TrainConfig, to_dict

Report = Callable[[dict, "Path | None"], None]


def pick_device(name: str = "auto"):
    """``cuda`` when present (or asked for), else ``cpu``."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but torch sees no CUDA device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def autocast_dtype(precision: str, device) -> Any:
    """``torch.bfloat16`` when bf16 is asked for or ``auto`` finds hardware bf16; else None."""
    import torch

    if precision == "fp32":
        return None
    if device.type == "cuda":
        has_bf16 = torch.cuda.is_bf16_supported()
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


def sample_images(generator, n: int, nz: int, device, *, seed: int, batch_size: int = 256):
    """``n`` images ``(n, 1, R, R) uint8`` on the CPU from a seeded private RNG (the global
    RNG, which training draws from, is left untouched)."""
    import torch

    rng = torch.Generator(device=device).manual_seed(seed)
    was_training = generator.training
    generator.eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            z = torch.randn(b, nz, 1, 1, device=device, generator=rng)
            chunks.append(to_uint8_tensor(generator(z)))
    generator.train(was_training)
    return torch.cat(chunks)


def _plain(value: Any) -> Any:
    """numpy/torch scalars -> Python numbers (JSON and ``weights_only`` checkpoints need them)."""
    return value.item() if hasattr(value, "item") else value


def _default_run_dir() -> Path:
    return Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")


def train(
    cfg: TrainConfig,
    report: Report | None = None,
    resume: str | Path | None = None,
    run_dir: str | Path | None = None,
    progress: bool = True,
    extra: dict | None = None,
) -> dict:
    """Train ``cfg.model`` on ``cfg.data``; return the last evaluation's metrics.

    Every ``cfg.eval_every`` epochs (and at the last one): sample ``cfg.eval_n`` images, compute
    the metrics in ``cfg.eval_metrics``, write ``samples/epoch_NNNN.png``, append to
    ``metrics.jsonl``, save ``checkpoints/last.pt`` (and ``best.pt`` when the metric improved),
    then call ``report(metrics, checkpoint_file)``. ``resume`` continues exactly from a
    checkpoint; ``extra`` is stored unchanged in every checkpoint (a sweep keeps its MLflow run
    id there). Under torch.distributed each rank trains on its shard with averaged gradients;
    rank 0 evaluates and writes, every rank calls ``report`` (others with ``None``).
    """
    import torch
    import torch.nn.functional as F

    from fetalgan import models
    from fetalgan.checkpoint import load_checkpoint, save_checkpoint
    from fetalgan.data import load_training_images
    from fetalgan.data.augment import augment_batch
    from fetalgan.images import write_grid

    dist = torch.distributed
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    is_main = rank == 0
    device = pick_device(cfg.device)
    amp_dtype = autocast_dtype(cfg.precision, device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    run_dir = Path(run_dir) if run_dir else _default_run_dir()
    show = progress and is_main

    # ---- state: fresh or resumed --------------------------------------------------------
    seed_everything(cfg.seed)
    state = load_checkpoint(resume) if resume else None
    extra = dict(state.get("extra", {}) if state else {}) | dict(extra or {})

    dataset = load_training_images(cfg.data, cfg.resolution, seed=cfg.seed, progress=show)
    real_images = dataset.images.to(device)  # (N, 1, R, R) uint8, resident on the device
    n_real = real_images.shape[0]
    if n_real < 2:
        raise ValueError(f"data: need at least 2 training images, got {n_real}")

    generator, discriminator = models.build(cfg)
    generator.to(device, memory_format=memory_format)
    discriminator.to(device, memory_format=memory_format)
    opt_g = torch.optim.Adam(
        generator.parameters(), lr=cfg.lr_g, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
    )
    opt_d = torch.optim.Adam(
        discriminator.parameters(),
        lr=cfg.lr_d,
        betas=tuple(cfg.betas),
        weight_decay=cfg.weight_decay,
    )
    start_epoch, history, best_value = 0, [], math.inf
    if state:
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        start_epoch, history = state["epoch"], list(state.get("history", []))
        best_value = state.get("best_value", math.inf)
        _set_rng_state(state["rng"], device)

    net_g, net_d = generator, discriminator
    if cfg.compile:
        net_g, net_d = torch.compile(net_g), torch.compile(net_d)
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        # BN running stats stay per rank (rank 0's are used for sampling); no per-forward sync.
        net_g = DDP(net_g, device_ids=ids, broadcast_buffers=False)
        net_d = DDP(net_d, device_ids=ids, broadcast_buffers=False)

    evaluator = None
    wanted = [m for m in cfg.eval_metrics]
    if wanted and is_main:
        from fetalgan.metrics.stats import TrainingMetrics

        evaluator = TrainingMetrics(
            dataset.images,
            key=dataset.key,
            metrics=wanted,
            fid_weights=cfg.fid_weights,
            device=device,
            cache_dir=cfg.data.cache_dir,
        )

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=amp_dtype)

    def bce(logits, target: float):
        return F.binary_cross_entropy_with_logits(
            logits.float(), torch.full_like(logits, target, dtype=torch.float32)
        )

    aug = cfg.data.augment
    no_sync_d = net_d.no_sync if distributed else contextlib.nullcontext
    epochs = range(start_epoch, cfg.epochs)
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=cfg.epochs,
            initial=start_epoch,
            desc=f"train {cfg.model}{cfg.resolution}",
            unit="epoch",
        )
    metrics: dict[str, Any] = dict(history[-1]) if history else {}

    # ---- the loop --------------------------------------------------------------------------
    for epoch in epochs:
        net_g.train()
        net_d.train()
        order = torch.randperm(n_real, device=device)  # same on every rank (same seed/state)
        shard = order[rank::world]
        loss_sums = torch.zeros(2, device=device)  # (loss_d, loss_g), summed over steps
        steps = 0
        for idx in shard.split(cfg.batch_size):
            if idx.numel() < 2:  # batch-norm needs two samples
                continue
            real = real_images[idx].float().div_(127.5).sub_(1.0)
            real = augment_batch(real, hflip=aug.hflip, rotate_deg=aug.rotate_deg)
            real = real.contiguous(memory_format=memory_format)
            z = torch.randn(real.shape[0], cfg.nz, 1, 1, device=device)

            # Discriminator: real -> real_label, fake -> 0 (separate real and fake batches).
            with autocast():
                fake = net_g(z)
                loss_d = bce(net_d(real), cfg.real_label) + bce(net_d(fake.detach()), 0.0)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            # Generator: non-saturating loss, fake -> 1; D's gradients here are discarded.
            with no_sync_d(), autocast():
                loss_g = bce(net_d(fake), 1.0)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()

            loss_sums += torch.stack((loss_d.detach(), loss_g.detach()))
            steps += 1

        if distributed:
            dist.all_reduce(loss_sums)
            steps_t = torch.tensor([steps], device=device)
            dist.all_reduce(steps_t)
            steps = int(steps_t.item())
        loss_d_mean, loss_g_mean = (loss_sums / max(steps, 1)).tolist()  # the one sync per epoch
        done = epoch + 1
        if not (math.isfinite(loss_d_mean) and math.isfinite(loss_g_mean)):
            raise FloatingPointError(
                f"non-finite loss at epoch {done} (loss_d={loss_d_mean}, loss_g={loss_g_mean}); "
                f"try lower lr_g/lr_d (now {cfg.lr_g:g}/{cfg.lr_d:g}) or precision: fp32"
            )
        if cfg.fail_at_epoch == done and state is None:
            raise RuntimeError(f"fail_at_epoch: simulated crash at epoch {done} (testing knob)")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss_d=f"{loss_d_mean:.3f}", loss_g=f"{loss_g_mean:.3f}", refresh=False)

        if done % cfg.eval_every and done != cfg.epochs:
            continue

        # ---- evaluation: metrics, sample grid, checkpoint, report ------------------------
        metrics = {"epoch": done, "loss_d": loss_d_mean, "loss_g": loss_g_mean}
        checkpoint_file = None
        if is_main:
            t0 = time.perf_counter()
            fakes = sample_images(generator, cfg.eval_n, cfg.nz, device, seed=cfg.seed + 1_000_003)
            if evaluator is not None:  # plain Python numbers: checkpoints load weights_only
                metrics.update({k: _plain(v) for k, v in evaluator(fakes).items()})
                metrics["weights_sha256"] = evaluator.weights_sha256
            metrics["eval_seconds"] = time.perf_counter() - t0
            grid = run_dir / "samples" / f"epoch_{done:04d}.png"
            grid.parent.mkdir(parents=True, exist_ok=True)
            write_grid(fakes[:64], grid, nrow=8)
            metrics["sample_grid"] = str(grid)
            history.append(metrics)
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
            score = metrics.get("fid", metrics.get("loss_g"))
            improved = score < best_value
            best_value = min(best_value, score)
            checkpoint_file = save_checkpoint(
                run_dir / "checkpoints" / "last.pt",
                {
                    "model": cfg.model,
                    "config": to_dict(cfg),
                    "epoch": done,
                    "generator": generator.state_dict(),
                    "discriminator": discriminator.state_dict(),
                    "opt_g": opt_g.state_dict(),
                    "opt_d": opt_d.state_dict(),
                    "rng": _rng_state(device),
                    "history": history,
                    "best_value": best_value,
                    "extra": extra,
                },
            )
            if improved:
                shutil.copyfile(checkpoint_file, run_dir / "checkpoints" / "best.pt")
            if bar is not None:
                shown = {k: f"{metrics[k]:.2f}" for k in ("fid", "kid_mean") if k in metrics}
                bar.write(
                    f"epoch {done}: loss_d {loss_d_mean:.3f} loss_g {loss_g_mean:.3f} "
                    + " ".join(f"{k} {v}" for k, v in shown.items())
                )
        if report is not None:
            report(metrics, checkpoint_file)

    if bar is not None:
        bar.close()
    return metrics
