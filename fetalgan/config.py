"""Configuration: dataclasses for one training run and for a sweep, loaded strictly from YAML.

Every field has a default and a one-line comment. Loading is strict: an unknown key, a wrong
type or an impossible value raises ``ConfigError`` (a ``ValueError``) whose message names the
key path and what is valid, e.g. ``base.data.kind: unknown value 'hc19'; expected one of ...``.
Only pyyaml is imported here, so ``fetalgan --help`` and config validation stay instant.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A user-facing configuration error; the message starts with the key path."""


# --------------------------------------------------------------------------------------------
# One training run
# --------------------------------------------------------------------------------------------

DATA_KINDS = ("phantom", "hc18", "planes", "folder")
MODELS = ("dcgan", "ddpm", "tbgan", "dsrgan", "us2mri", "cyclegan")
TRANSLATORS = ("us2mri", "cyclegan")  # models that translate data (US) to target_data (MR)
MODALITIES = ("us", "mri")  # phantom renderings (data.modality)
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
# What an evaluation can compute (``eval_metrics``); each produces values named after it:
# fid; kid_mean, kid_std; lbpv_l1, lbpv_l2, lbpv_v8...; mi_normalised, mi_bits; psnr; ssim.
EVAL_METRICS = ("fid", "kid", "lbpv", "mi", "psnr", "ssim")
FID_DIMS = (64, 192, 768, 2048)  # Inception feature blocks FID can use (pytorch-fid's)
SUBSET_ORDERS = ("seeded", "listed")  # how data.size images are chosen
# How data.fit makes an image R x R: crop (short side to R, centre crop), squash (whole image
# to R x R, aspect ratio ignored: the seed studies' resize), pad (letterbox with black, resize)
FITS = ("crop", "squash", "pad")
REAL_KINDS = ("auto", "hc18", "planes", "folder")  # what --real names (auto: from its contents)


@dataclass
class AugmentConfig:
    hflip: bool = True  # random horizontal flip (probe on either side of the head)
    rotate_deg: float = 10.0  # random rotation in [-rotate_deg, +rotate_deg] degrees; 0 = off


@dataclass
class DataConfig:
    kind: str = "phantom"  # phantom | hc18 | planes | folder
    root: str | None = None  # dataset directory (not used by phantom)
    size: int | None = None  # images in the seeded training subset; null = all of them
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    skip_corrupt: bool = False  # skip unreadable images with a warning count instead of failing
    phantom_n: int = 999  # phantom only: images in the procedural pool (HC18 has 999)
    phantom_seed: int = 0  # phantom only: seed of the procedural pool (not the subset)
    modality: str = "us"  # phantom only: us | mri (the same heads as T2-weighted MR slices)
    phantom_slices: float = 0.0  # phantom only: slice positions in +-this fraction of the head
    plane: str | None = None  # planes only: Plane column filter, e.g. "Fetal brain"
    brain_plane: str | None = None  # planes only: Brain_plane filter, e.g. "Trans-cerebellum"
    machine: str | None = None  # planes only: US_Machine filter, e.g. "Voluson E6"
    train_split: bool | None = None  # planes only: Train column (true = 1, false = 0, null = both)
    cache_dir: str | None = (
        None  # decoded-tensor cache; default $FETALGAN_CACHE or ~/.cache/fetalgan
    )
    # seeded: a seeded random subset of `size`; listed: the first `size` in the dataset's order
    # (planes: the CSV's row order, as a "first N rows" training cap takes them)
    order: str = "seeded"
    skip: int = 0  # images at the start of the dataset's order left out (e.g. a training cap)
    # crop | squash | pad: how a non-square image becomes R x R (fetalgan.images.fit_square);
    # crop keeps the middle, squash all of it stretched (the seed studies), pad all of it boxed
    fit: str = "crop"
    # [lo, hi]: the patients in this fraction of the dataset's patients (a fixed order, the
    # same for every set), all their images; null = every patient. For datasets that know the
    # patient: planes (Patient_num), hc18 (the subject number NNN of NNN_HC.png, NNN_2HC.png),
    # a folder with a manifest.csv (fetalgan data import-dicom / import-nifti)
    patients: list[float] | None = None


@dataclass
class ReferenceConfig:
    """``eval_reference``: the real set every evaluation compares with (FID and KID features,
    rLBPv, the reals PSNR/MI/SSIM pair fakes with). Never augmented. A dataset field left null
    is taken from ``data`` (so the default is the whole dataset ``data`` names, not the trial's
    training subset); ``size``, ``seed``, ``order`` and ``skip`` choose the reference's own
    images from it."""

    size: int | None = None  # images in the reference; null = all of the dataset
    seed: int = 0  # draws the reference subset (independent of the training seed)
    order: str = "seeded"  # seeded | listed, as data.order
    skip: int = 0  # images at the start of the dataset's order left out, as data.skip
    kind: str | None = None  # null = data.kind
    root: str | None = None  # null = data.root
    phantom_n: int | None = None  # null = data.phantom_n
    phantom_seed: int | None = None  # null = data.phantom_seed
    plane: str | None = None  # null = data.plane
    brain_plane: str | None = None  # null = data.brain_plane
    machine: str | None = None  # null = data.machine
    train_split: bool | None = None  # null = data.train_split
    skip_corrupt: bool | None = None  # null = data.skip_corrupt
    cache_dir: str | None = None  # null = data.cache_dir
    fit: str | None = None  # null = data.fit
    patients: list[float] | None = None  # null = data.patients; e.g. [0.9, 1.0] for a test set


@dataclass
class DdpmConfig:
    """``model: ddpm`` (and DSR-GAN's stage A): a diffusers UNet2DModel trained with AdamW at
    ``lr_g`` (with ``betas`` and ``weight_decay``)."""

    # UNet widths, one per level (each level but the last halves the side)
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 256, 256])
    layers_per_block: int = 2  # ResNet blocks per UNet level
    attention: bool = True  # self-attention blocks at the lowest UNet level
    num_train_timesteps: int = 1000  # length of the DDPM noise chain
    beta_start: float = 1.0e-4  # linear beta schedule: first beta
    beta_end: float = 0.02  # linear beta schedule: last beta
    sample_steps: int = 100  # DDIM steps (eta 0) when sampling; the study used 40 or 100
    pretrained: str | None = None  # local diffusers UNet2DModel directory to start from


@dataclass
class TbganConfig:
    """``model: tbgan``: StyleSwin-style transformer generator (widths from ``ngf``, latent
    ``nz``), conv discriminator (width ``ndf``), DiffAugment, non-saturating loss + R1."""

    w_dim: int = 256  # style vector size (mapping network output)
    mapping_layers: int = 4  # MLP layers of the mapping network
    max_width: int = 256  # generator channel cap at the low-resolution stages
    start_resolution: int = 8  # side of the learned constant input
    window_size: int = 8  # attention window side (tokens per window = window_size**2)
    head_dim: int = 32  # channels per attention head
    r1_gamma: float = 10.0  # R1 penalty weight on real images; 0 = off
    # DiffAugment policies, colour-free for grey: translation, cutout; [] = off
    diffaugment: list[str] = field(default_factory=lambda: ["translation", "cutout"])


@dataclass
class DsrganConfig:
    """``model: dsrgan``: stage A = ``ddpm`` at ``resolution`` for ``epochs_a`` epochs, then
    stage B = SRGAN-style x2 generator (lr ``lr_sr``) and conv discriminator (lr ``lr_d``, width
    ``ndf``); samples are histogram-matched to the real set before super-resolution."""

    epochs_a: int = 50  # epochs of stage A (diffusion); the rest of ``epochs`` train stage B
    sr_blocks: int = 16  # residual blocks of the SR generator (SRGAN: 16)
    sr_width: int = 64  # channels of the SR generator (SRGAN: 64)
    lr_sr: float = 1.0e-4  # SR generator Adam learning rate
    pixel_weight: float = 1.0  # weight of the L1 pixel loss
    adv_weight: float = 1.0e-3  # weight of the adversarial loss (SRGAN: 1e-3)
    hist_match: bool = True  # match each diffusion sample's histogram to the real set


@dataclass
class Us2mriConfig:
    """``model: us2mri``: US encoder -> latent shared with an MR autoencoder -> MR decoder;
    adversarial losses on images (lr ``lr_d``) and latents, an adversarial structural
    constraint, cross-modal attention, optional 3D auxiliary input. Generators at ``lr_g``."""

    width: int = 32  # channels of the first encoder layer (x2, x4 at the latent, side R/4)
    latent_blocks: int = 2  # residual blocks on the shared latent
    attention: bool = True  # cross-modal attention block (decoder queries, US encoder keys)
    structural: bool = True  # adversarial structural constraint on (input, output) edge maps
    latent_adversarial: bool = True  # discriminator on latents (US vs MR feature space)
    aux3d: bool = False  # 3D auxiliary input: neighbour slices as channels + a location index
    slice_step: float = 0.1  # aux3d: neighbour slice spacing, fraction of the head half-height
    rec_weight: float = 10.0  # L1 reconstruction of the MR and US autoencoders
    adv_weight: float = 1.0  # image-domain adversarial loss (translated vs real MR)
    latent_weight: float = 1.0  # feature-space adversarial loss
    structure_weight: float = 1.0  # adversarial structural constraint
    eval_source: str | None = None  # folder of held-out US to translate at evaluation
    # (null: phantom data uses held-out pool images; other data its own training images)


@dataclass
class CycleganConfig:
    """``model: cyclegan``: the unpaired baseline (Zhu et al. 2017): two ResNet generators
    (lr ``lr_g``), two PatchGAN discriminators (lr ``lr_d``), least-squares GAN loss."""

    width: int = 32  # generator channels at full resolution (x2, x4 after two downsamplings)
    blocks: int = 4  # residual blocks of each generator (CycleGAN: 6 at 128 px, 9 at 256)
    cycle_weight: float = 10.0  # L1 cycle consistency, both directions
    identity_weight: float = 0.0  # L1 identity loss (x5 in CycleGAN; off: the domains differ)


@dataclass
class TrainConfig:
    model: str = "dcgan"  # generator family (registry name)
    resolution: int = 64  # image side in pixels, power of two in 32..256
    data: DataConfig = field(default_factory=DataConfig)
    epochs: int = 100  # passes over the training subset
    eval_every: int = 10  # epochs between evaluations (metrics, sample grid, checkpoint)
    eval_n: int = 800  # fake images generated per evaluation (the study used 800)
    # images per sampling batch at evaluation; null = by resolution (256 up to 64 px, 64 at
    # 128, 16 at 256): a 256 px ddpm UNet's activations fill tens of GB at 256 a batch
    eval_batch_size: int | None = None
    eval_metrics: list[str] = field(default_factory=lambda: ["fid", "kid", "lbpv"])  # at eval
    eval_reference: ReferenceConfig = field(default_factory=ReferenceConfig)  # real set compared
    fid_weights: str | None = None  # FID Inception weights file; default: offline lookup
    fid_dims: int = 2048  # Inception features for FID/KID: 64, 192, 768 or 2048 (logged)
    batch_size: int = 128  # images per optimiser step (per worker when data-parallel), >= 2
    lr_g: float = 2.0e-4  # generator Adam learning rate
    lr_d: float = 2.0e-4  # discriminator Adam learning rate
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])  # Adam betas
    weight_decay: float = 0.0  # Adam weight decay, both networks
    # EMA of the generator's weights, used for samples, FID and generate; 0 = off; null = by
    # model: off for dcgan (the paper's), 0.999 for ddpm, dsrgan and tbgan
    ema_decay: float | None = None
    real_label: float = 1.0  # BCE target for real images; 0.9 = one-sided label smoothing
    nz: int = 100  # latent dimension
    ngf: int = 64  # generator width (channels of the last hidden layer)
    ndf: int = 64  # discriminator width (channels of the first layer)
    precision: str = "auto"  # auto (bf16 where the hardware has it) | fp32 | bf16
    channels_last: bool = True  # NHWC memory format for convolutions
    compile: bool = False  # torch.compile the networks
    device: str = "auto"  # auto (cuda if present) | cpu | cuda
    deterministic: bool = False  # deterministic torch kernels (GPU runs repeat; slower)
    seed: int = 0  # drives torch, numpy and the data subset
    fail_at_epoch: int | None = None  # testing only: raise once at this epoch (fault tests)
    ddpm: DdpmConfig = field(default_factory=DdpmConfig)  # model: ddpm, and dsrgan's stage A
    tbgan: TbganConfig = field(default_factory=TbganConfig)  # model: tbgan
    dsrgan: DsrganConfig = field(default_factory=DsrganConfig)  # model: dsrgan
    # Translation (us2mri, cyclegan): the second, unpaired domain (MR); ``data`` is the US side
    target_data: DataConfig | None = None
    us2mri: Us2mriConfig = field(default_factory=lambda: Us2mriConfig())  # model: us2mri
    cyclegan: CycleganConfig = field(default_factory=lambda: CycleganConfig())  # model: cyclegan


# --------------------------------------------------------------------------------------------
# A sweep
# --------------------------------------------------------------------------------------------

SEARCH_KINDS = ("optuna", "random", "grid")
SAMPLERS = ("tpe", "gp")  # Optuna's: tree-structured Parzen estimator, Gaussian process
SCHEDULER_KINDS = ("asha", "fifo", "pbt", "pb2")
RANK_BY = ("last", "best", "window")
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint", "grid")


@dataclass
class SchedulerConfig:
    kind: str = "asha"  # asha | fifo | pbt | pb2
    max_t: int | None = None  # ASHA: last epoch a trial may reach; default base.epochs
    grace_period: int = 1  # ASHA: epochs before a trial may be stopped
    reduction_factor: float = 3.0  # ASHA: keep 1/reduction_factor of trials per rung
    # PBT/PB2: epochs between a trial's chances to exploit (copy a better trial's state) and
    # explore (change its hyper-parameters); a multiple of eval_every; null = 2 x eval_every
    perturbation_interval: int | None = None
    quantile_fraction: float = 0.25  # PBT/PB2: bottom fraction that copies the top fraction
    resample_probability: float = 0.25  # PBT: draw afresh from the space instead of x0.8/1.2
    synch: bool = False  # PBT/PB2: perturb the whole population at once (waits for the slowest)


# What PBT/PB2 may change inside a running trial: the optimisers' and losses' continuous
# hyper-parameters. Anything else changes the networks, the data or the schedule's length.
PBT_FIXED = ("ema_decay", "ddpm.beta_start", "ddpm.beta_end", "us2mri.slice_step")  # read once
SCHEDULER_KEYS = {  # the keys that belong to each kind (others must keep their defaults)
    "asha": ("max_t", "grace_period", "reduction_factor"),
    "fifo": (),
    "pbt": ("perturbation_interval", "quantile_fraction", "resample_probability", "synch"),
    "pb2": ("perturbation_interval", "quantile_fraction", "synch"),
}


@dataclass
class SearchConfig:
    kind: str = "optuna"  # optuna | random | grid
    seed: int = 0  # sampler seed
    # optuna: trials sampled at random before TPE models the results; null = a quarter of
    # num_samples, at least 2 and at most 10 (Optuna's own default is 10 whatever the budget,
    # which leaves a 12-trial sweep with two guided trials)
    startup_trials: int | None = None
    # optuna: the model that proposes trials after the startup ones: tpe (Optuna's default) or
    # gp (Gaussian-process Bayesian optimisation: for a few continuous parameters and a budget
    # of tens of trials; it accounts for running trials, so concurrent trials differ)
    sampler: str = "tpe"


@dataclass
class ResourcesConfig:
    cpu: float = 1.0  # CPUs per trial (per worker when workers_per_trial > 1)
    gpu: float = 0.0  # GPUs per trial; a fraction packs several trials on one GPU


@dataclass
class SelectConfig:
    """``select``: the final selection stage after the search. The top ``top_k`` trials (by
    their best in-sweep value) give ``per_trial`` candidates each (their best evaluation's
    ``best.pt`` and, beyond 1, weights-only snapshots of their next-best evaluations); every
    candidate is re-scored on ``draws`` x ``n_fake`` fresh fakes (the same latents for every
    candidate) against ``reference``; the winner is then scored alone on ``test_reference``,
    images that played no part in choosing it. The four real sets (training, eval_reference,
    reference, test_reference) must not share an image (or, for planes, a patient)."""

    top_k: int = 3  # trials whose candidates are re-scored, by their best in-sweep value
    per_trial: int = 1  # candidates per trial: its best evaluation and the next per_trial - 1
    n_fake: int = 1024  # fresh fakes per draw
    draws: int = 2  # draws per candidate (and for the test score), other latents each
    metric: str | None = None  # null = the sweep's metric (fid, kid_mean, lbpv_l1, ...)
    mode: str | None = None  # null = the sweep's mode when metric is the sweep's, else min
    fid_dims: int | None = None  # Inception features for FID/KID here; null = base.fid_dims
    seed: int = 0  # seeds the draws' latents (selection: seed + d; test: seed + 1000 + d)
    # the selection reference and the test reference: null dataset fields come from base.data
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    test_reference: ReferenceConfig = field(default_factory=ReferenceConfig)


@dataclass
class SweepConfig:
    name: str = "fetalgan"  # MLflow experiment name and Tune experiment directory
    metric: str = "fid"  # what ASHA and the search minimise or maximise
    mode: str = "min"  # min | max
    # what ASHA's rungs and the search compare trials by: last = the latest evaluation's
    # value of metric (Tune's rule); best = the trial's best value so far (best_<metric>,
    # what its best.pt holds and what `fetalgan best` ranks by); window = the mean of the
    # log-metric over the trial's last rank_window evaluations (window_<metric>, reported as
    # the geometric mean; the plain mean when a value is <= 0)
    rank_by: str = "last"
    rank_window: int = 3  # evaluations in rank_by: window
    num_samples: int = 1  # trials (with grid: repeats of the whole grid)
    max_concurrent: int | str = 1  # trials running at once; auto = as many as the cluster holds
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    workers_per_trial: int = 1  # > 1: one trial runs data-parallel (DDP)
    max_failures: int = 2  # restarts of a crashed trial from its last checkpoint
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    storage: str | None = (
        None  # Tune storage dir (shared FS); default $FETALGAN_STORAGE or ./ray_results
    )
    checkpoint_epochs: list[int] = field(
        default_factory=list
    )  # also kept in MLflow as checkpoint/epoch_NNNN.pt
    base: TrainConfig = field(default_factory=TrainConfig)
    space: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # key path -> distribution
    select: SelectConfig | None = None  # the final selection stage; null = none (best in-sweep)


# --------------------------------------------------------------------------------------------
# Strict loading
# --------------------------------------------------------------------------------------------

T = typing.TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it; raise ConfigError."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError as err:
                errors.append(err)
        raise (
            errors[0]
            if len(errors) == 1
            else ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        )
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return _build(tp, value, path)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        (item_tp,) = get_args(tp)
        return [_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        _, val_tp = get_args(tp)
        return {str(k): _convert(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{path}: expected one of {list(get_args(tp))}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{path}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {path}")  # a bug in this module


def _build(cls: type[T], data: dict, path: str) -> T:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown key; expected one of {', '.join(names)}")
    kwargs = {k: _convert(v, hints[k], f"{path}.{k}" if path else k) for k, v in data.items()}
    return cls(**kwargs)


def _choice(path: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ConfigError(f"{path}: unknown value {value!r}; expected one of {', '.join(valid)}")


def _positive(path: str, value: float | int | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    bad = value < 0 if allow_zero else value <= 0
    if bad or (isinstance(value, float) and not math.isfinite(value)):
        rel = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{path}: must be {rel}, got {value!r}")


def validate_train(cfg: TrainConfig, prefix: str = "") -> TrainConfig:
    """Check values that types cannot express; return ``cfg`` unchanged."""
    p = prefix
    from fetalgan.models import MODEL_NAMES  # registry, no torch import

    _choice(f"{p}model", cfg.model, MODEL_NAMES)
    r = cfg.resolution
    if r < 32 or r > 256 or r & (r - 1):
        raise ConfigError(
            f"{p}resolution: must be a power of two in 32..256 (32, 64, 128, 256), got {r}"
        )
    _choice(f"{p}data.kind", cfg.data.kind, DATA_KINDS)
    if cfg.data.kind != "phantom" and not cfg.data.root:
        raise ConfigError(
            f"{p}data.root: required for data.kind {cfg.data.kind!r} (the dataset directory)"
        )
    _positive(f"{p}data.size", cfg.data.size)
    _positive(f"{p}data.phantom_n", cfg.data.phantom_n)
    _check_selection(cfg.data, f"{p}data", "data")
    _check_reference(cfg, cfg.eval_reference, f"{p}eval_reference", "eval_reference")
    if cfg.fid_dims not in FID_DIMS:
        raise ConfigError(
            f"{p}fid_dims: expected one of {', '.join(map(str, FID_DIMS))}, got {cfg.fid_dims}"
        )
    rot = cfg.data.augment.rotate_deg
    if not 0 <= rot <= 180:
        raise ConfigError(f"{p}data.augment.rotate_deg: must be in 0..180, got {rot}")
    for key in ("epochs", "eval_every", "eval_n", "batch_size", "nz", "ngf", "ndf"):
        _positive(f"{p}{key}", getattr(cfg, key))
    if cfg.batch_size < 2:  # the loop skips one-image batches: nothing would train
        raise ConfigError(
            f"{p}batch_size: must be >= 2 (a training step needs two images for batch-norm), "
            f"got {cfg.batch_size}"
        )
    _positive(f"{p}eval_batch_size", cfg.eval_batch_size)
    for key in ("lr_g", "lr_d"):
        _positive(f"{p}{key}", getattr(cfg, key))
    _positive(f"{p}weight_decay", cfg.weight_decay, allow_zero=True)
    _check_ema(cfg, p)
    _positive(f"{p}seed", cfg.seed, allow_zero=True)
    if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
        raise ConfigError(f"{p}betas: expected two numbers in [0, 1), got {cfg.betas}")
    if not 0 < cfg.real_label <= 1:
        raise ConfigError(f"{p}real_label: must be in (0, 1], got {cfg.real_label}")
    for i, name in enumerate(cfg.eval_metrics):
        _choice(f"{p}eval_metrics[{i}]", name, EVAL_METRICS)
    _validate_families(cfg, p)
    _choice(f"{p}precision", cfg.precision, PRECISIONS)
    _choice(f"{p}device", cfg.device, DEVICES)
    return cfg


def _check_ema(cfg: TrainConfig, p: str) -> None:
    """``ema_decay``: in [0, 1), and only for a model whose generator can be averaged."""
    from fetalgan.models import GENERATORS

    decay = cfg.ema_decay
    if decay is None:
        return
    if not 0 <= decay < 1 or not math.isfinite(decay):
        raise ConfigError(f"{p}ema_decay: must be in [0, 1) (0 = off, e.g. 0.999), got {decay}")
    if decay > 0 and cfg.model not in GENERATORS:
        raise ConfigError(
            f"{p}ema_decay: model {cfg.model} has no generator to average; EMA is for "
            f"{', '.join(GENERATORS)} (set 0 or null)"
        )


def _check_reference(cfg: TrainConfig, ref: ReferenceConfig, path: str, name: str) -> None:
    """A reference section (``eval_reference``, ``select.reference``, ...): counts, kind, a
    root where its dataset needs one, and its selection within the dataset."""
    _positive(f"{path}.size", ref.size)
    _positive(f"{path}.phantom_n", ref.phantom_n)
    _positive(f"{path}.seed", ref.seed, allow_zero=True)
    if ref.kind is not None:
        _choice(f"{path}.kind", ref.kind, DATA_KINDS)
    data = reference_data(cfg, ref)
    if data.kind != "phantom" and not data.root:
        raise ConfigError(f"{path}.root: required for kind {data.kind!r} (the dataset directory)")
    _check_selection(data, path, name)


def _check_patients(data: DataConfig, path: str) -> None:
    """``patients: [lo, hi]``: two fractions, 0 <= lo < hi <= 1, on a dataset with patients."""
    if data.patients is None:
        return
    value = data.patients
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or not 0 <= value[0] < value[1] <= 1
    ):
        raise ConfigError(
            f"{path}: must be [lo, hi], fractions of the dataset's patients with "
            f"0 <= lo < hi <= 1 (e.g. [0.0, 0.8] for training, [0.9, 1.0] for a test set), "
            f"got {value!r}"
        )
    if data.kind == "phantom":
        raise ConfigError(
            f"{path}: the phantom has no patients; choose its images with size, skip and "
            "order, or another phantom_seed"
        )


def _check_selection(data: DataConfig, path: str, phantom_path: str) -> None:
    """``order``, ``skip``, ``fit`` and, for the phantom, that ``skip + size`` fits the pool."""
    _choice(f"{path}.order", data.order, SUBSET_ORDERS)
    _choice(f"{path}.fit", data.fit, FITS)
    _positive(f"{path}.skip", data.skip, allow_zero=True)
    _check_patients(data, f"{path}.patients")
    if data.kind == "phantom" and (data.size or 0) + data.skip > data.phantom_n:
        after = f" after skip {data.skip}" if data.skip else ""
        raise ConfigError(
            f"{path}.size: {data.size}{after} is larger than the dataset "
            f"({phantom_path}.phantom_n = {data.phantom_n} images)"
        )


def reference_data(cfg: TrainConfig, ref: ReferenceConfig | None = None) -> DataConfig:
    """The dataset of ``ref`` (default ``cfg.eval_reference``; also a sweep's
    ``select.reference`` and ``select.test_reference``) as a DataConfig (null fields taken
    from ``cfg.data``, no augmentation). Its images are drawn with the reference's ``seed``.
    Translators (``target_data`` set) compare their translations with the target domain (MR):
    null fields come from ``cfg.target_data`` instead, and so does the phantom's modality."""
    ref, data = ref or cfg.eval_reference, cfg.target_data or cfg.data
    inherited = {
        name: getattr(data, name) if getattr(ref, name) is None else getattr(ref, name)
        for name in (
            "kind", "root", "phantom_n", "phantom_seed", "plane", "brain_plane", "machine",
            "train_split", "skip_corrupt", "cache_dir", "fit", "patients",
        )
    }  # fmt: skip
    return DataConfig(
        **inherited,
        size=ref.size,
        order=ref.order,
        skip=ref.skip,
        augment=AugmentConfig(hflip=False, rotate_deg=0.0),
        modality=data.modality,
        phantom_slices=data.phantom_slices,
    )


DIFFAUGMENT_POLICIES = ("translation", "cutout")


def _validate_families(cfg: TrainConfig, p: str) -> None:
    """The per-model sections (checked whatever the model, so a sweep's base is all valid)."""
    dd = cfg.ddpm
    if not dd.block_out_channels:
        raise ConfigError(f"{p}ddpm.block_out_channels: expected widths, e.g. [64, 128]")
    for i, width in enumerate(dd.block_out_channels):
        _positive(f"{p}ddpm.block_out_channels[{i}]", width)
    levels = len(dd.block_out_channels)
    if cfg.model in ("ddpm", "dsrgan") and cfg.resolution % 2 ** (levels - 1):
        raise ConfigError(
            f"{p}ddpm.block_out_channels: {levels} levels halve {levels - 1} times, "
            f"too many for resolution {cfg.resolution}"
        )
    for key in ("layers_per_block", "num_train_timesteps", "sample_steps"):
        _positive(f"{p}ddpm.{key}", getattr(dd, key))
    if not 0 < dd.beta_start < dd.beta_end < 1:
        raise ConfigError(
            f"{p}ddpm.beta_start/beta_end: need 0 < beta_start < beta_end < 1, "
            f"got {dd.beta_start}, {dd.beta_end}"
        )
    if dd.sample_steps > dd.num_train_timesteps:
        raise ConfigError(
            f"{p}ddpm.sample_steps: must be <= ddpm.num_train_timesteps "
            f"({dd.num_train_timesteps}), got {dd.sample_steps}"
        )
    tb = cfg.tbgan
    for key in ("w_dim", "mapping_layers", "max_width", "window_size", "head_dim"):
        _positive(f"{p}tbgan.{key}", getattr(tb, key))
    _positive(f"{p}tbgan.r1_gamma", tb.r1_gamma, allow_zero=True)
    s0 = tb.start_resolution
    if s0 < 4 or s0 & (s0 - 1) or (cfg.model == "tbgan" and s0 > cfg.resolution):
        raise ConfigError(
            f"{p}tbgan.start_resolution: must be a power of two >= 4 and <= resolution, got {s0}"
        )
    for i, name in enumerate(tb.diffaugment):
        _choice(f"{p}tbgan.diffaugment[{i}]", name, DIFFAUGMENT_POLICIES)
    if cfg.compile and cfg.model == "tbgan" and tb.r1_gamma > 0:
        raise ConfigError(
            f"{p}compile: tbgan's R1 penalty differentiates the discriminator's gradient "
            "(double backward), which torch.compile'd modules refuse; set compile: false, "
            f"or tbgan.r1_gamma: 0 (now {tb.r1_gamma:g})"
        )
    _validate_translation(cfg, p)
    ds = cfg.dsrgan
    for key in ("epochs_a", "sr_blocks", "sr_width", "lr_sr"):
        _positive(f"{p}dsrgan.{key}", getattr(ds, key))
    for key in ("pixel_weight", "adv_weight"):
        _positive(f"{p}dsrgan.{key}", getattr(ds, key), allow_zero=True)
    if cfg.model == "dsrgan" and ds.epochs_a > cfg.epochs:
        raise ConfigError(
            f"{p}dsrgan.epochs_a: stage A cannot be longer than the run; "
            f"got epochs_a {ds.epochs_a} with epochs {cfg.epochs}"
        )


def _validate_translation(cfg: TrainConfig, p: str) -> None:
    """``target_data``, ``us2mri`` and ``cyclegan``: translators need a second domain and
    nothing else uses one; 3D auxiliary input needs slices of phantom volumes."""
    for name, data in (("data", cfg.data), ("target_data", cfg.target_data)):
        if data is not None:
            _choice(f"{p}{name}.modality", data.modality, MODALITIES)
            if not 0 <= data.phantom_slices <= 0.9:
                raise ConfigError(
                    f"{p}{name}.phantom_slices: must be in 0..0.9, got {data.phantom_slices}"
                )
    target = cfg.target_data
    if cfg.model in TRANSLATORS and target is None:
        raise ConfigError(
            f"{p}target_data: model {cfg.model} translates data (US) to a second domain (MR); "
            "set target_data (same keys as data), e.g. {kind: phantom, modality: mri, skip: 500}"
        )
    if target is not None:
        if cfg.model not in TRANSLATORS:
            raise ConfigError(
                f"{p}target_data: only {', '.join(TRANSLATORS)} use a second domain, "
                f"not model {cfg.model}"
            )
        _choice(f"{p}target_data.kind", target.kind, DATA_KINDS)
        if target.kind != "phantom" and not target.root:
            raise ConfigError(f"{p}target_data.root: required for kind {target.kind!r}")
        _positive(f"{p}target_data.size", target.size)
        _positive(f"{p}target_data.phantom_n", target.phantom_n)
        _check_selection(target, f"{p}target_data", "target_data")
    if cfg.model in TRANSLATORS and cfg.resolution < 32:
        raise ConfigError(f"{p}resolution: translation needs >= 32 px, got {cfg.resolution}")
    um = cfg.us2mri
    for key in ("width", "latent_blocks", "slice_step"):
        _positive(f"{p}us2mri.{key}", getattr(um, key))
    for key in ("rec_weight", "adv_weight", "latent_weight", "structure_weight"):
        _positive(f"{p}us2mri.{key}", getattr(um, key), allow_zero=True)
    if cfg.model == "us2mri" and um.aux3d and cfg.data.kind != "phantom":
        raise ConfigError(
            f"{p}us2mri.aux3d: needs neighbouring slices and their 3D position, which only the "
            f"phantom's volumes give here (data.kind phantom), got data.kind {cfg.data.kind!r}"
        )
    cg = cfg.cyclegan
    for key in ("width", "blocks"):
        _positive(f"{p}cyclegan.{key}", getattr(cg, key))
    for key in ("cycle_weight", "identity_weight"):
        _positive(f"{p}cyclegan.{key}", getattr(cg, key), allow_zero=True)


def _space_paths(cls: type, prefix: str = "") -> dict[str, Any]:
    """All settable key paths of a dataclass, e.g. {'lr_g': float, 'data.size': int | None}."""
    out: dict[str, Any] = {}
    for name, tp in typing.get_type_hints(cls).items():
        optional = [a for a in get_args(tp) if a is not type(None)]  # target_data: Data | None
        if len(optional) == 1 and dataclasses.is_dataclass(optional[0]):
            tp = optional[0]
        if dataclasses.is_dataclass(tp):
            out.update(_space_paths(tp, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = tp
    return out


TRAIN_KEYS = _space_paths(TrainConfig)


def validate_space(space: dict[str, dict[str, list[Any]]], prefix: str = "space") -> None:
    """Check a search space: key paths exist, distributions are known, ranges are non-empty."""
    for key, dist in space.items():
        path = f"{prefix}.{key}"
        if key not in TRAIN_KEYS:
            raise ConfigError(
                f"{path}: unknown training key; expected one of {', '.join(sorted(TRAIN_KEYS))}"
            )
        if len(dist) != 1:
            raise ConfigError(
                f"{path}: expected exactly one distribution, e.g. {{loguniform: [1.0e-5, 1.0e-2]}}; "
                f"one of {', '.join(DISTRIBUTIONS)}"
            )
        ((kind, args),) = dist.items()
        if kind not in DISTRIBUTIONS:
            raise ConfigError(
                f"{path}: unknown distribution {kind!r}; expected one of {', '.join(DISTRIBUTIONS)}"
            )
        if kind in ("choice", "grid"):
            if not args:
                raise ConfigError(f"{path}.{kind}: empty list of values")
            for i, value in enumerate(args):  # each value must be valid for the key
                _convert(value, TRAIN_KEYS[key], f"{path}.{kind}[{i}]")
            continue
        if len(args) != 2 or not all(
            isinstance(a, (int, float)) and not isinstance(a, bool) for a in args
        ):
            raise ConfigError(f"{path}.{kind}: expected [low, high] numbers, got {args!r}")
        low, high = args
        if not low < high:
            raise ConfigError(f"{path}.{kind}: empty range [{low}, {high}]; need low < high")
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"{path}.loguniform: low must be > 0, got {low}")
        if kind == "randint" and not (isinstance(low, int) and isinstance(high, int)):
            raise ConfigError(f"{path}.randint: expected integer bounds, got {args!r}")


def validate_sweep(cfg: SweepConfig) -> SweepConfig:
    if not cfg.name or "/" in cfg.name:
        raise ConfigError(f"name: must be a non-empty name without '/', got {cfg.name!r}")
    _choice("mode", cfg.mode, ("min", "max"))
    _choice("rank_by", cfg.rank_by, RANK_BY)
    _choice("search.kind", cfg.search.kind, SEARCH_KINDS)
    _choice("scheduler.kind", cfg.scheduler.kind, SCHEDULER_KINDS)
    for key in ("num_samples", "workers_per_trial"):
        _positive(key, getattr(cfg, key))
    if isinstance(cfg.max_concurrent, str):
        if cfg.max_concurrent != "auto":
            raise ConfigError(
                f"max_concurrent: expected a positive integer or auto, got {cfg.max_concurrent!r}"
            )
    else:
        _positive("max_concurrent", cfg.max_concurrent)
    _positive("max_failures", cfg.max_failures, allow_zero=True)
    _positive("resources.cpu", cfg.resources.cpu)
    _positive("resources.gpu", cfg.resources.gpu, allow_zero=True)
    if cfg.workers_per_trial > 1 and 0 < cfg.resources.gpu < 1:
        raise ConfigError(
            f"resources.gpu: {cfg.resources.gpu:g} per worker with workers_per_trial "
            f"{cfg.workers_per_trial}: data-parallel workers need a whole GPU each (NCCL cannot "
            "run two ranks on one GPU); use resources.gpu: 1, or workers_per_trial: 1 to pack "
            "trials"
        )
    _positive("search.startup_trials", cfg.search.startup_trials)
    _choice("search.sampler", cfg.search.sampler, SAMPLERS)
    if cfg.search.sampler != SearchConfig.sampler and cfg.search.kind != "optuna":
        raise ConfigError(
            f"search.sampler: {cfg.search.sampler} is one of Optuna's samplers; search.kind is "
            f"{cfg.search.kind}"
        )
    if cfg.search.startup_trials is not None and cfg.search.kind != "optuna":
        raise ConfigError(
            f"search.startup_trials: only Optuna's search has startup trials; search.kind is "
            f"{cfg.search.kind}"
        )
    _positive("scheduler.max_t", cfg.scheduler.max_t)
    _positive("scheduler.grace_period", cfg.scheduler.grace_period)
    if not (1 < cfg.scheduler.reduction_factor < math.inf):  # NaN fails this too
        raise ConfigError(
            f"scheduler.reduction_factor: must be a finite number > 1, got "
            f"{cfg.scheduler.reduction_factor}"
        )
    _positive("rank_window", cfg.rank_window)
    validate_train(cfg.base, prefix="base.")
    validate_space(cfg.space)
    _check_whole_sweep(cfg)
    if cfg.select is not None:
        _validate_select(cfg)
    return cfg


def select_objective(cfg: SweepConfig):
    """What the final selection minimises or maximises: ``select.metric`` (default: the
    sweep's metric) with ``select.mode`` (default: the sweep's mode for the sweep's metric,
    else min)."""
    from fetalgan.evaluation import Objective

    sel = cfg.select or SelectConfig()
    metric = sel.metric or cfg.metric
    mode = sel.mode or (cfg.mode if metric == cfg.metric else "min")
    return Objective(metric, mode)


def _validate_select(cfg: SweepConfig) -> None:
    """``select``: counts, a metric the selection can compute from images, references that
    resolve to datasets, models that generate, and (phantom sets, no files needed) that the
    four real sets share no image; file-based sets are checked when the sweep starts."""
    from fetalgan.evaluation import metric_source
    from fetalgan.models import GENERATORS

    sel = cfg.select
    for key in ("top_k", "per_trial", "n_fake", "draws"):
        _positive(f"select.{key}", getattr(sel, key))
    if sel.n_fake < 2:
        raise ConfigError(f"select.n_fake: must be >= 2 (a covariance needs two), got {sel.n_fake}")
    _positive("select.seed", sel.seed, allow_zero=True)
    if sel.mode is not None:
        _choice("select.mode", sel.mode, ("min", "max"))
    objective = select_objective(cfg)
    try:
        source = metric_source(objective.metric)
    except ValueError as err:
        raise ConfigError(f"select.{err}") from None
    if source is None:
        raise ConfigError(
            f"select.metric: {objective.metric!r} is a training loss, not a measure of the "
            "images; expected fid, kid_mean, lbpv_l1, psnr, ssim or mi_normalised"
        )
    if sel.fid_dims is not None and sel.fid_dims not in FID_DIMS:
        raise ConfigError(
            f"select.fid_dims: expected one of {', '.join(map(str, FID_DIMS))}, got {sel.fid_dims}"
        )
    models = {cfg.base.model, *(space_values(cfg.space.get("model", {"choice": []})) or [])}
    for model in sorted(models):
        if model not in GENERATORS:
            raise ConfigError(
                f"select: model {model} translates images and has no sampler to re-score; the "
                f"selection stage is for {', '.join(GENERATORS)}"
            )
    for name in ("reference", "test_reference"):
        _check_reference(cfg.base, getattr(sel, name), f"select.{name}", name)
    from fetalgan.data.splits import check_real_sets

    check_real_sets(cfg, files=False)


def space_values(dist: dict[str, list[Any]]) -> list[Any] | None:
    """The explicit values of a ``choice``/``grid`` distribution, else None."""
    ((kind, args),) = dist.items()
    return list(args) if kind in ("choice", "grid") else None


def max_epochs(cfg: SweepConfig) -> int:
    """The most epochs any trial of the sweep can run."""
    dist = cfg.space.get("epochs")
    if dist is None:
        return cfg.base.epochs
    values = space_values(dist)
    return int(max(values)) if values else int(next(iter(dist.values()))[1])


def expected_trials(cfg: SweepConfig) -> int:
    """Trials a complete sweep has: ``num_samples`` times the number of grid points (each
    ``grid`` key's values, and each ``choice`` key's under ``search.kind: grid``, which expands
    choices too)."""
    points = 1
    for dist in cfg.space.values():
        if "grid" in dist:
            points *= len(dist["grid"])
        elif "choice" in dist and cfg.search.kind == "grid":
            points *= len(dist["choice"])
    return cfg.num_samples * points


def pbt_mutable(key: str) -> bool:
    """Whether PBT/PB2 may change ``key`` inside a running trial: a continuous (float)
    training hyper-parameter or ``betas``, not a data, reference or target-data key, nor one
    read once when training starts (:data:`PBT_FIXED`)."""
    if key == "betas":
        return True
    if key.startswith(("data.", "eval_reference.", "target_data.")) or key in PBT_FIXED:
        return False
    return TRAIN_KEYS.get(key) in (float, float | None)


def perturbation_interval(cfg: SweepConfig) -> int:
    """PBT/PB2's ``perturbation_interval`` in epochs (null: two evaluations)."""
    return cfg.scheduler.perturbation_interval or 2 * cfg.base.eval_every


def _check_population_based(cfg: SweepConfig) -> None:
    """PBT/PB2: keys of the kind only, an interval on evaluation epochs, a searcher that does
    not generate configurations, a space of hyper-parameters a running trial can change,
    a fitness that can get worse, one candidate per trial."""
    sch, kind = cfg.scheduler, cfg.scheduler.kind
    for other, keys in SCHEDULER_KEYS.items():
        for key in keys:
            if key not in SCHEDULER_KEYS[kind] and getattr(sch, key) != getattr(
                SchedulerConfig, key
            ):
                raise ConfigError(f"scheduler.{key}: belongs to scheduler.kind {other}, not {kind}")
    if cfg.search.kind == "optuna":
        raise ConfigError(
            f"search.kind: optuna generates each trial's configuration, which {kind} cannot "
            f"follow (it changes them during training); use search.kind random or grid for "
            "the initial population"
        )
    interval = perturbation_interval(cfg)
    _positive("scheduler.perturbation_interval", interval)
    if interval % cfg.base.eval_every:
        raise ConfigError(
            f"scheduler.perturbation_interval: {interval} is not a multiple of "
            f"base.eval_every ({cfg.base.eval_every}): a trial can only be copied from a "
            "checkpoint, written at each evaluation"
        )
    if not 0 < sch.quantile_fraction <= 0.5:
        raise ConfigError(
            f"scheduler.quantile_fraction: must be in (0, 0.5], got {sch.quantile_fraction}"
        )
    if not 0 <= sch.resample_probability <= 1:
        raise ConfigError(
            f"scheduler.resample_probability: must be in [0, 1], got {sch.resample_probability}"
        )
    if not cfg.space:
        raise ConfigError(f"space: {kind} needs at least one hyper-parameter to change")
    for key, dist in cfg.space.items():
        if not pbt_mutable(key):
            raise ConfigError(
                f"space.{key}: {kind} changes every space key while a trial runs, and {key} "
                "cannot change inside a trial (it fixes the networks, the data or the "
                "schedule); set it in base, or run one sweep per value"
            )
        ((dist_kind, _),) = dist.items()
        if kind == "pb2" and dist_kind not in ("uniform", "loguniform"):
            raise ConfigError(
                f"space.{key}: pb2 models continuous ranges only (uniform, loguniform), got "
                f"{dist_kind}"
            )
    if cfg.workers_per_trial > 1:
        raise ConfigError(
            f"workers_per_trial: {kind} restarts a trial from another trial's checkpoint, "
            "which a data-parallel trial's Ray Train run does not take; use workers_per_trial: "
            "1 (one GPU per trial)"
        )
    if cfg.rank_by == "best":
        raise ConfigError(
            f"rank_by: best never gets worse, so {kind} would keep a diverged trial; use last "
            "or window"
        )
    if cfg.select is not None and cfg.select.per_trial > 1:
        raise ConfigError(
            f"select.per_trial: {cfg.select.per_trial} with {kind}: a trial's earlier weights "
            "are replaced when it copies another trial; use per_trial: 1 (each trial's best.pt)"
        )


def _check_whole_sweep(cfg: SweepConfig) -> None:
    """Checks that need the whole sweep: the metric is one a trial reports, the search can
    express the space, integer keys get integer distributions, every listed value gives a
    valid trial config (a range's two bounds too, through the same checks as base values),
    data-parallel workers each get two images, ASHA's grace period fits its max_t, and
    ``checkpoint_epochs`` are evaluation epochs."""
    from fetalgan.evaluation import metric_source

    try:
        source = metric_source(cfg.metric)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if source is not None and source not in cfg.base.eval_metrics:
        raise ConfigError(
            f"metric: {cfg.metric!r} needs {source!r} in base.eval_metrics "
            f"(now {cfg.base.eval_metrics})"
        )
    for key, dist in cfg.space.items():
        ((kind, args),) = dist.items()
        path = f"space.{key}.{kind}"
        if kind == "grid" and cfg.search.kind == "optuna":
            raise ConfigError(
                f"{path}: grid values need search.kind grid or random; with optuna use choice"
            )
        key_type = TRAIN_KEYS[key]
        if kind in ("uniform", "loguniform") and key_type in (int, int | None):
            raise ConfigError(f"{path}: {key} is an integer key; use randint, choice or grid")
        if kind in ("uniform", "loguniform", "randint") and key_type not in (
            int,
            float,
            int | None,
            float | None,
        ):
            raise ConfigError(f"{path}: {key} is not numeric; use choice or grid")
        for i, value in enumerate(space_values(dist) or []):
            try:
                with_overrides(cfg.base, {key: value})
            except ConfigError as err:
                raise ConfigError(f"{path}[{i}]: {err}") from None
        if kind in ("uniform", "loguniform", "randint"):  # both ends: the values it can draw
            for i, bound in enumerate(args):
                try:
                    with_overrides(cfg.base, {key: bound})
                except ConfigError as err:
                    raise ConfigError(f"{path}[{i}]: {err}") from None
    size = cfg.base.data.size
    if cfg.workers_per_trial > 1 and "data.size" not in cfg.space and size is not None:
        if size // cfg.workers_per_trial < 2:  # each rank steps on its shard, batch_size each
            raise ConfigError(
                f"workers_per_trial: {cfg.workers_per_trial} data-parallel workers share "
                f"base.data.size {size} images, fewer than 2 per worker (a step needs two)"
            )
    if cfg.scheduler.kind in ("pbt", "pb2"):
        _check_population_based(cfg)
    if cfg.scheduler.kind == "asha":
        max_t = max_epochs(cfg) if cfg.scheduler.max_t is None else cfg.scheduler.max_t
        if cfg.scheduler.grace_period > max_t:
            raise ConfigError(
                f"scheduler.grace_period: {cfg.scheduler.grace_period} is beyond max_t {max_t}"
            )
    if cfg.checkpoint_epochs and not {"epochs", "eval_every"} & set(cfg.space):
        base = cfg.base
        for i, epoch in enumerate(cfg.checkpoint_epochs):
            if not (
                0 < epoch <= base.epochs and (epoch % base.eval_every == 0 or epoch == base.epochs)
            ):
                raise ConfigError(
                    f"checkpoint_epochs[{i}]: {epoch} is not an evaluation epoch "
                    f"(multiples of eval_every={base.eval_every} up to epochs={base.epochs})"
                )


# --------------------------------------------------------------------------------------------
# Files and overrides
# --------------------------------------------------------------------------------------------


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def apply_overrides(data: dict, overrides: list[str], *, prefix: str = "") -> dict:
    """Apply ``key.path=value`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"--set {item!r}: expected KEY=VALUE, e.g. lr_g=1e-3 or data.size=300"
            )
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw else None
        node = data
        parts = (prefix + key.strip()).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part} is not a section")
        node[parts[-1]] = value
    return data


def train_config_from_dict(data: dict, prefix: str = "") -> TrainConfig:
    return validate_train(_build(TrainConfig, data, prefix.rstrip(".")), prefix)


SWEEP_KEYS = tuple(f.name for f in dataclasses.fields(SweepConfig))


def sweep_overrides(overrides: list[str]) -> list[str]:
    """``--set`` items of a sweep: a key whose first part is a sweep-file key
    (``max_concurrent``, ``num_samples``, ``scheduler.max_t``, ``base.lr_g``) stays as it is;
    any other key is a ``base`` key (``lr_g=1e-3``, ``data.size=300``)."""
    routed = []
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        routed.append(item if key.split(".")[0] in SWEEP_KEYS else f"base.{item.strip()}")
    return routed


def load_sweep(path: str | Path | SweepConfig, overrides: list[str] = ()) -> SweepConfig:
    """The one sweep loader: read (or take) a sweep, apply ``--set`` overrides (sweep-file keys
    or ``base`` keys, see :func:`sweep_overrides`) and validate all of it, the checks that need
    the whole sweep included. Errors name the file and the key path."""
    overrides = sweep_overrides(list(overrides))
    if isinstance(path, SweepConfig):
        if not overrides:
            return validate_sweep(path)
        data, where = to_dict(path), "sweep"
    else:
        data, where = read_yaml(path), str(path)
    base = data.get("base")
    if base is not None and not isinstance(base, dict):
        raise ConfigError(f"{where}: base: expected a mapping, got {base!r}")
    data = apply_overrides(data, overrides)
    try:
        return validate_sweep(_build(SweepConfig, data, ""))
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def load_train(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """The ``base`` section of a sweep file (or a bare TrainConfig file), with overrides."""
    data = read_yaml(path)
    prefix = "base." if "base" in data else ""
    if prefix and not isinstance(data["base"], dict):
        raise ConfigError(f"{path}: base: expected a mapping, got {data['base']!r}")
    base = apply_overrides(dict(data["base"] if prefix else data), list(overrides))
    try:
        return train_config_from_dict(base, prefix)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def load_objective(path: str | Path):
    """What best means for ``fetalgan train FILE``: a sweep file's ``metric``/``mode``; None
    for a bare training file or a sweep file without ``metric``, which ``train`` reads as its
    default (the lowest FID, else KID, else LBPv distance, among what ``eval_metrics``
    computes; no ``best.pt`` when nothing is evaluated)."""
    from fetalgan.evaluation import Objective

    data = read_yaml(path)
    if "base" not in data or "metric" not in data:
        return None  # train's default_objective: FID, else KID, else LBPv, else no best.pt
    metric, mode = data["metric"], data.get("mode", "min")
    if not isinstance(metric, str):
        raise ConfigError(f"{path}: metric: expected a string, got {metric!r}")
    _choice(f"{path}: mode", mode, ("min", "max"))
    return Objective(metric, mode)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'data': {'size': 3}} -> {'data.size': 3}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def with_overrides(cfg: TrainConfig, flat: dict[str, Any]) -> TrainConfig:
    """A copy of ``cfg`` with dotted-key values applied (as a sweep trial does), validated."""
    data = to_dict(cfg)
    for key, value in flat.items():
        if key not in TRAIN_KEYS:
            raise ConfigError(f"{key}: unknown training key")
        node = data
        *parents, last = key.split(".")
        for part in parents:
            if node[part] is None:  # an optional section (target_data) that is not set yet
                node[part] = {}
            node = node[part]
        node[last] = value
    return train_config_from_dict(data)


def param_text(value: Any) -> str:
    """A config value as an MLflow param string (lists and mappings as JSON, None as null):
    :func:`param_value` reads it back with the key's declared type."""
    import json

    if value is None or isinstance(value, (list, dict, bool)):
        return json.dumps(value)
    return str(value)


def param_value(key: str, text: str) -> Any:
    """An MLflow param string of training key ``key`` (``lr_g``, ``data.size``) back to its
    typed value, by the type TrainConfig declares for the key (not by guessing from the text).
    Unknown keys and unreadable texts come back as the text."""
    tp = TRAIN_KEYS.get(key)
    if tp is None:
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if value is None and text in ("None", "null"):
        value = None
    elif text in ("True", "False"):  # str(bool), as earlier runs logged them
        value = text == "True"
    try:
        return _convert(value, tp, key)
    except ConfigError:
        return text
