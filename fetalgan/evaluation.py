"""What "best" means and what one evaluation produced: the two values that travel from the
trainer through Tune to MLflow and back out to ``fetalgan best``, the report and the study.

- :class:`Objective` (``metric`` + ``mode``) is the one definition of best. The sweep's
  ``metric``/``mode`` (or a standalone ``train``'s file's) decide which checkpoint the trainer
  keeps as ``best.pt``, the per-run ``best_<metric>`` logged at every evaluation, and the
  ranking of runs everywhere they are ranked: always by the best value over a run's history,
  never by its last value.
- :class:`Evaluation` is one evaluation's record, made in ``train()``: epoch, losses, metric
  values, the number of fakes, the feature dimension, the identity of the real reference set,
  the FID weights hash, and the sample-grid and checkpoint files. Numbers and bookkeeping are
  separate fields, so nothing downstream filters a dict by hand.

No torch, ray or mlflow import here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fetalgan.metric_names import LOSS_METRICS, metric_source  # noqa: F401  (re-exported)

MODES = ("min", "max")


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Objective:
    """What best means: ``metric`` minimised (``mode: min``) or maximised (``mode: max``)."""

    metric: str = "fid"
    mode: str = "min"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode: expected min or max, got {self.mode!r}")

    @property
    def best_key(self) -> str:
        """The metric key of a run's best value so far (``best_fid``)."""
        return f"best_{self.metric}"

    @property
    def window_key(self) -> str:
        """The metric key of the mean over a run's last evaluations (``window_fid``)."""
        return f"window_{self.metric}"

    @property
    def worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    def better(self, value: float, than: float | None) -> bool:
        """``value`` strictly better than ``than`` (None or non-finite: anything finite is)."""
        if not is_number(value):
            return False
        if than is None or not is_number(than):
            return True
        return value < than if self.mode == "min" else value > than

    def best(self, values: Iterable[float | None]) -> float | None:
        """The best finite value, None if there is none."""
        finite = [v for v in values if is_number(v)]
        if not finite:
            return None
        return min(finite) if self.mode == "min" else max(finite)

    def pick(self, items: Iterable[Any], key) -> Any | None:
        """The item whose ``key(item)`` is best (first on ties); None when none is finite."""
        chosen, chosen_value = None, None
        for item in items:
            value = key(item)
            if self.better(value, chosen_value):
                chosen, chosen_value = item, value
        return chosen


@dataclass
class Evaluation:
    """One evaluation of a generator during training.

    ``losses``: mean training losses over the epoch (``loss_g``, ``loss_d``, ...).
    ``values``: the metrics of ``n_fake`` generated images against the real reference set
    (``fid``, ``kid_mean``, ``kid_std``, ``lbpv_*``), plain floats.
    ``best_value``: the run's best value of the objective's metric up to and including this
    evaluation; ``is_best``: this evaluation set it (and wrote ``best.pt``).
    """

    epoch: int
    losses: dict[str, float] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    n_fake: int = 0
    n_real: int | None = None
    feature_dim: int | None = None
    reference: str | None = None  # identity of the real set (dataset cache key)
    reference_n: int | None = None  # images in the real reference set (eval_reference)
    reference_key: str | None = None  # digest of the reference images (statistics cache key)
    # the real sets behind it (training, evaluation) as MLflow dataset inputs describe them
    # (fetalgan.data.datasets.describe_set); on a training process's first evaluation only
    datasets: list[dict] = field(default_factory=list)
    # PBT/PB2: the trial's hyper-parameters at this evaluation (they change at exploits),
    # logged as hp/<key>, and its exploits so far ({epoch, donor, config}), as pbt/exploits
    hyper: dict[str, Any] = field(default_factory=dict)
    exploits: list[dict] | None = None
    weights_sha256: str | None = None  # FID Inception weights
    eval_seconds: float = 0.0  # sampling the fakes and computing the metrics
    train_seconds: float = 0.0  # the training epochs since the previous evaluation
    # the run's evaluation time over its evaluation + training time, up to this evaluation
    eval_fraction: float | None = None
    objective: Objective = field(default_factory=Objective)
    best_value: float | None = None
    is_best: bool = False
    # rank_by: window: the mean of the log-metric over the run's last rank_window evaluations
    # up to this one, as a geometric mean (window_value)
    window_value: float | None = None
    sample_grid: str | None = None  # PNG of the first 64 fakes
    checkpoint: str | None = None  # the full training state after this evaluation
    best_weights: str | None = None  # weights-only best.pt, written when is_best

    def metrics(self) -> dict[str, float]:
        """Every number to plot against epoch: losses, metric values, ``best_<metric>``,
        ``eval_seconds``, ``train_seconds``, ``eval_fraction``, ``n_fake``, ``n_real``,
        ``feature_dim``, PBT's ``hp/<key>`` and ``pbt/exploits`` (finite values only)."""
        out: dict[str, float] = {**self.losses, **self.values}
        if self.best_value is not None:
            out[self.objective.best_key] = self.best_value
        if self.window_value is not None:
            out[self.objective.window_key] = self.window_value
        out["eval_seconds"] = self.eval_seconds
        out["train_seconds"] = self.train_seconds
        out["n_fake"] = self.n_fake
        for key in ("n_real", "feature_dim", "eval_fraction"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        for key, value in self.hyper.items():
            if isinstance(value, list | tuple):  # betas: hp/betas_0, hp/betas_1
                out.update({f"hp/{key}_{i}": v for i, v in enumerate(value)})
            else:
                out[f"hp/{key}"] = value
        if self.exploits is not None:
            out["pbt/exploits"] = len(self.exploits)
        return {k: float(v) for k, v in out.items() if is_number(v)}

    def get(self, key: str) -> float | None:
        return self.metrics().get(key)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON, Tune results, ``weights_only`` checkpoints)."""
        data = dataclasses.asdict(self)
        data["objective"] = {"metric": self.objective.metric, "mode": self.objective.mode}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        data = dict(data)
        data["objective"] = Objective(**data.get("objective", {}))
        return cls(**data)


def window_value(values: Iterable[float | None], window: int) -> float | None:
    """The mean of the log of the last ``window`` finite ``values`` (oldest first), given back
    as the geometric mean, in the metric's units; the plain mean when one of them is <= 0 (a
    KID estimate can be); None when none is finite. One noisy low evaluation moves it by a
    ``window``-th of its log, where a best-so-far would keep it for good."""
    finite = [float(v) for v in values if is_number(v)][-window:]
    if not finite:
        return None
    if min(finite) <= 0:
        return sum(finite) / len(finite)
    return math.exp(sum(math.log(v) for v in finite) / len(finite))


def eval_fraction(records: Iterable[dict[str, Any]]) -> float | None:
    """The share of a run's time spent evaluating: the sum of ``eval_seconds`` over the sum
    of ``eval_seconds + train_seconds`` of ``records`` (a run's history, as
    :meth:`Evaluation.to_dict` gives them); None before any time was recorded."""
    evaluating = training = 0.0
    for record in records:
        evaluating += record.get("eval_seconds") or 0.0
        training += record.get("train_seconds") or 0.0
    total = evaluating + training
    return evaluating / total if total > 0 else None
