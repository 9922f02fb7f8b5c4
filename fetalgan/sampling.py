"""Images from networks: the one sampler, and the precision helpers it shares with training.

:func:`iter_samples` is the one sampling path: training's evaluation (under the training
precision), ``fetalgan generate``, the MLflow model (:mod:`fetalgan.tracking.model`), the
selection stage and the benches all decode through it, so the same networks, seed and batch
size give the same images everywhere. All ``n`` latents come from one private CPU generator
seeded with ``seed``: the images do not depend on the batch size or the device's RNG, and the
global RNG that training draws from is left untouched. :func:`decode_uint8` is its one batch,
also what ``translate`` runs on a batch of US images.

Imports torch only inside functions (``fetalgan --help`` stays fast).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from fetalgan.config import TrainConfig

# Training's evaluations sample with ``cfg.seed + EVAL_SEED_OFFSET`` (a stream of its own).
EVAL_SEED_OFFSET = 1_000_003


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


def autocast_context(device, amp_dtype):
    """Autocast to ``amp_dtype`` on ``device``'s type, or nothing when it is None (fp32)."""
    import torch

    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


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


def network_device(networks: dict):
    """The device of the first network's parameters (where a loaded model samples)."""
    return next(networks[next(iter(networks))].parameters()).device


@contextlib.contextmanager
def evaluating(networks: dict):
    """``networks`` in eval mode inside, each back in its own mode after."""
    modes = {name: net.training for name, net in networks.items()}
    for net in networks.values():
        net.eval()
    try:
        yield
    finally:
        for name, net in networks.items():
            net.train(modes[name])


def decode_uint8(decode: Callable, networks: dict, inputs, cfg: TrainConfig, amp_dtype=None):
    """``decode(networks, inputs, cfg)`` (images in [-1, 1]: a family's ``decode`` of latents
    or ``translate`` of US images, ``inputs`` on the networks' device) as a
    ``(b, 1, R, R) uint8`` CPU tensor, run with ``networks`` in eval mode, under inference
    mode and, when ``amp_dtype`` is given, autocast to it. Entered per batch, so nothing leaks
    past a generator's yield."""
    import torch

    with (
        evaluating(networks),
        torch.inference_mode(),
        autocast_context(inputs.device, amp_dtype),
    ):
        return to_uint8_tensor(decode(networks, inputs, cfg))


def check_counts(n: int, batch_size: int) -> None:
    """ValueError for a count ``n`` or a ``batch_size`` <= 0, named as the CLI's options."""
    if n <= 0:
        raise ValueError(f"-n: must be > 0, got {n}")
    if batch_size <= 0:
        raise ValueError(f"--batch-size: must be > 0, got {batch_size}")


def iter_samples(
    networks: dict,
    cfg: TrainConfig,
    n: int,
    *,
    seed: int,
    batch_size: int = 256,
    device=None,
    amp_dtype=None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, images)`` for ``start = 0, batch_size, ...``: images ``start ..`` as a
    ``(b, 1, R, R) uint8`` CPU tensor, decoded on ``device`` (default: the networks' own)
    under autocast to ``amp_dtype`` when given. ValueError for ``n`` or ``batch_size`` <= 0
    (raised on the call, not on first use)."""
    check_counts(n, batch_size)
    return _sample_batches(networks, cfg, n, seed, batch_size, device, amp_dtype)


def latents(n: int, cfg: TrainConfig, generator) -> torch.Tensor:
    """The inputs ``decode`` turns into ``n`` samples of ``cfg.model``, on the CPU: the
    family's random latents, or for a translator (spec ``target_domain``) US images with the
    input channels it declares, from the data layer
    (:func:`fetalgan.data.translation_inputs.latents`)."""
    from fetalgan.models import registry

    spec = registry.spec(cfg.model)
    if spec.target_domain:
        from fetalgan.data import translation_inputs

        return translation_inputs.latents(n, cfg, generator, spec.source_step(cfg))
    return spec.implementation().latents(n, cfg, generator)


def _sample_batches(networks, cfg, n, seed, batch_size, device, amp_dtype):
    import torch

    from fetalgan.models import family

    model = family(cfg.model)
    device = network_device(networks) if device is None else device
    latents_ = latents(n, cfg, torch.Generator().manual_seed(seed))
    for start in range(0, n, batch_size):
        z = latents_[start : start + batch_size].to(device)
        yield start, decode_uint8(model.decode, networks, z, cfg, amp_dtype)


def sample_images(
    networks: dict,
    cfg: TrainConfig,
    n: int,
    *,
    seed: int,
    batch_size: int = 256,
    device=None,
    amp_dtype=None,
) -> torch.Tensor:
    """All ``n`` images of :func:`iter_samples` as one ``(n, 1, R, R) uint8`` CPU tensor:
    exactly the images ``generate`` writes for the same networks and seed."""
    import torch

    batches = iter_samples(
        networks, cfg, n, seed=seed, batch_size=batch_size, device=device, amp_dtype=amp_dtype
    )
    return torch.cat([images for _, images in batches])
