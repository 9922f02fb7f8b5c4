"""Which real images a set holds, and the refusal of two sets that share one.

A sweep with a final selection stage reads four real sets: the training set, the in-sweep
``eval_reference``, the selection reference and the test reference. A generator chosen on
images it was trained on, or scored on images that chose it, carries an optimistic number;
:func:`check_disjoint` refuses that before anything runs. Members are identified without
decoding an image: the phantom by its procedural identity (seed, modality, index), files by
their resolved path, and, where the dataset knows it (FETAL_PLANES_DB's Patient_num, HC18's
subject number, a folder's manifest.csv), each image's patient too: two sets that share a
patient share anatomy, even through different images. ``patients: [lo, hi]`` on each set
splits a dataset by patient (:func:`fetalgan.data.datasets.in_patient_range`).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from fetalgan.config import ConfigError, DataConfig, SweepConfig


@dataclass(frozen=True)
class SetMembers:
    """The images of one real set: ``names`` (a phantom identity ``phantom:<seed>:<modality>:
    <index>`` or a resolved file path) and, where the dataset knows them, their patients."""

    label: str  # what the user calls the set in the sweep file (``select.reference``)
    names: frozenset[str]
    patients: dict[str, str] = field(default_factory=dict)  # name -> patient
    every_image: bool = False  # the set may hold any image of its pool (a range in the space)

    def __len__(self) -> int:
        return len(self.names)


def _chosen(n_available: int, data: DataConfig, seed: int) -> list[int]:
    from fetalgan.data.datasets import subset_order

    order = subset_order(n_available, data.size, seed, order=data.order, skip=data.skip)
    return sorted(int(i) for i in order[: data.size or len(order)])


def set_members(
    label: str, data: DataConfig, seed: int, *, every_image: bool = False
) -> SetMembers:
    """The images ``data`` selects with ``seed`` (the training seed for a training set, the
    reference's own seed for a reference), without decoding them. ``every_image``: the whole
    pool after ``data.skip`` (a training set whose size or seed the search draws from a range)."""
    if every_image:
        data = dataclasses.replace(data, size=None)
    if data.kind == "phantom":
        where = f"phantom:{data.phantom_seed}:{data.modality}:{data.phantom_slices:g}"
        chosen = _chosen(data.phantom_n, data, seed)
        return SetMembers(label, frozenset(f"{where}:{i}" for i in chosen), {}, every_image)
    from fetalgan.data.datasets import file_patients, list_files

    files = list_files(data)
    chosen = [files[i] for i in _chosen(len(files), data, seed)]
    known = file_patients(data, chosen) or {}
    names = [str(p.resolve()) for p in chosen]
    patients = {str(p.resolve()): known[p] for p in chosen if p in known}
    return SetMembers(label, frozenset(names), patients, every_image)


def _shown(name: str) -> str:
    if name.startswith("phantom:"):
        return f"phantom image {name.rsplit(':', 1)[1]}"
    return Path(name).name


def check_disjoint(sets: list[SetMembers]) -> None:
    """``ConfigError`` naming the first two sets that share an image or a patient, how many,
    and an example; nothing when all are disjoint."""
    for i, first in enumerate(sets):
        for second in sets[i + 1 :]:
            shared = sorted(first.names & second.names)
            if shared:
                pool = " (any image of its pool: the search draws its size or seed)"
                raise ConfigError(
                    f"{first.label} and {second.label} share {len(shared)} image(s), e.g. "
                    f"{_shown(shared[0])}{pool if first.every_image else ''}: a generator "
                    "chosen or scored on images it was trained or chosen on carries an "
                    "optimistic number. Give each set its own images (data.size/skip, "
                    "order: listed, or another root)"
                )
            patients = set(first.patients.values()) & set(second.patients.values())
            if patients:
                patient = sorted(patients)[0]
                example = sorted(n for n, p in second.patients.items() if p == patient)[0]
                raise ConfigError(
                    f"{first.label} and {second.label} share {len(patients)} patient(s), e.g. "
                    f"patient {patient} ({_shown(example)} in {second.label}): split by "
                    "patient, e.g. patients: [0.0, 0.8] on the training set and "
                    "[0.8, 0.9], [0.9, 1.0] on the references"
                )


def _variants(cfg: SweepConfig, prefixes: tuple[str, ...]) -> tuple[list, bool]:
    """The TrainConfigs of the sweep's listed values of the keys starting with ``prefixes``
    (or equal to them), and whether one such key is a range (any value can be drawn)."""
    from fetalgan.config import space_values, with_overrides

    keys = [k for k in cfg.space if k in prefixes or k.startswith(prefixes)]
    ranged = any(space_values(cfg.space[k]) is None for k in keys)
    options = [[(k, v) for v in space_values(cfg.space[k]) or []] for k in keys]
    options = [o for o in options if o]
    combos = [dict(c) for c in itertools.product(*options)] if options else [{}]
    return [with_overrides(cfg.base, combo) for combo in combos], ranged


def _union(label: str, members: list[SetMembers]) -> SetMembers:
    patients: dict[str, str] = {}
    for m in members:
        patients.update(m.patients)
    names = frozenset().union(*(m.names for m in members))
    return SetMembers(label, names, patients, any(m.every_image for m in members))


def real_sets(cfg: SweepConfig) -> list[SetMembers]:
    """The four real sets of a sweep with a ``select`` section, in order: the training set
    (every trial's, united), ``eval_reference``, ``select.reference``,
    ``select.test_reference``. A training set whose size, skip or seed the search draws from
    a range counts as its whole pool after ``data.skip``."""
    from fetalgan.config import reference_data

    trials, ranged = _variants(cfg, ("data.", "seed"))
    training = _union(
        "the training set (data)",
        [set_members("data", t.data, t.seed, every_image=ranged) for t in trials],
    )
    references, _ = _variants(cfg, ("data.", "eval_reference."))
    evaluation = _union(
        "eval_reference",
        [
            set_members("eval_reference", reference_data(t), t.eval_reference.seed)
            for t in references
        ],
    )
    out = [training, evaluation]
    for name in ("reference", "test_reference"):
        ref = getattr(cfg.select, name)
        out.append(set_members(f"select.{name}", reference_data(cfg.base, ref), ref.seed))
    return out


def check_real_sets(cfg: SweepConfig, *, files: bool = True) -> list[SetMembers] | None:
    """Refuse (``ConfigError``) a sweep whose selection or test reference shares an image or
    a patient with another of its four real sets (see :func:`real_sets`). The training set and
    ``eval_reference`` may overlap (a published protocol may evaluate on its training images;
    the numbers a user is shown at the end come from the other two). ``files=False``: check
    only sweeps whose every set is the phantom (no file is read); None when not checked."""
    from fetalgan.config import reference_data

    if cfg.select is None:
        return None
    if not files:
        kinds = {cfg.base.data.kind, reference_data(cfg.base).kind}
        kinds |= {
            reference_data(cfg.base, getattr(cfg.select, n)).kind
            for n in ("reference", "test_reference")
        }
        if kinds != {"phantom"} or any(k.startswith("data.kind") for k in cfg.space):
            return None
    sets = real_sets(cfg)
    training, evaluation, selection, test = sets
    for first, second in (
        (selection, test),
        (training, selection),
        (training, test),
        (evaluation, selection),
        (evaluation, test),
    ):
        check_disjoint([first, second])
    return sets
