"""The schema: dataclasses of one training run (``TrainConfig``) and of a sweep
(``SweepConfig``), with the value sets their checks use. Every field has a default and a
one-line comment.

``TrainConfig`` is the run's fields (:class:`RunConfig`) plus one section per registered model
family that has one (``ddpm``, ``tbgan``, ``dsrgan``, ``us2mri``, ``cyclegan``), taken from
:mod:`fetalgan.models.registry`, and ``target_data`` when a family translates. It is built
once, here, as a module-level class, so it pickles (Ray ships configs between processes).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, get_args

from fetalgan.metric_names import EVAL_METRICS  # noqa: F401  (re-exported: the config's names)
from fetalgan.models import registry

# --------------------------------------------------------------------------------------------
# One training run
# --------------------------------------------------------------------------------------------

DATA_KINDS = ("phantom", "hc18", "planes", "folder")
MODALITIES = ("us", "mri")  # phantom renderings (data.modality)
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
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
class RunConfig:
    """The fields of ``TrainConfig`` every family shares (the family sections follow)."""

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


def _family_fields() -> list[tuple[str, Any, Any]]:
    """``TrainConfig``'s fields after the run's: each registered family's section (named
    after it) in registry order, and ``target_data`` before the first translator's."""
    fields: list[tuple[str, Any, Any]] = []
    for spec in registry.freeze():
        if spec.target_domain and "target_data" not in {name for name, *_ in fields}:
            # Translation: the second, unpaired domain (MR); ``data`` is the US side
            fields.append(("target_data", DataConfig | None, field(default=None)))
        if spec.section is not None:
            fields.append((spec.name, spec.section, field(default_factory=spec.section)))
    return fields


TrainConfig = dataclasses.make_dataclass(
    "TrainConfig",
    _family_fields(),
    bases=(RunConfig,),
    namespace={
        "__module__": __name__,  # pickled as fetalgan.config.schema.TrainConfig
        "__doc__": "One training run: the run's fields (RunConfig), then a section per model "
        "family that has one (its spec's dataclass, e.g. ``ddpm``) and, for translators, "
        "``target_data``.",
    },
)

# What PBT/PB2 may change inside a running trial: the optimisers' and losses' continuous
# hyper-parameters. Anything else changes the networks, the data or the schedule's length.
# Read once when training starts: ema_decay and each family's ``read_once`` keys.
PBT_FIXED = ("ema_decay",) + tuple(
    f"{spec.name}.{key}" for spec in registry.specs() for key in spec.read_once
)


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


TRAIN_KEYS = _space_paths(TrainConfig)  # every training key path -> its type
SWEEP_KEYS = tuple(f.name for f in dataclasses.fields(SweepConfig))  # a sweep file's keys
