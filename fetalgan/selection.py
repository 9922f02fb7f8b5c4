"""The final selection stage: which generator a sweep hands back, and an honest number for it.

The in-sweep value of a trial (``best_<metric>``) is the minimum of many noisy evaluations on
a small reference: it chooses well enough among trials but, as a reported figure, the
minimum pulls it down (the winner's curse) and the few fakes push FID up. After the search,
:func:`run_selection`

1. takes the candidates (:class:`Candidate`): the top ``select.top_k`` trials' ``best.pt``
   and, with ``select.per_trial`` > 1, the weights each trial kept of its next-best
   evaluations;
2. re-scores every candidate on ``select.draws`` draws of ``select.n_fake`` fresh fakes (the
   same latents for every candidate: draw ``d`` uses seed ``select.seed + d``) against the
   selection reference (``select.reference``), and picks the winner by the mean over the draws
   (:func:`fetalgan.config.select_objective`);
3. scores the winner alone on the test reference (``select.test_reference``), on other latents
   (seeds ``select.seed + 1000 + d``): images that played no part in training, ranking or
   choosing it. That test score is the number to report.

Every score is kept in a JSON cache as soon as it is computed (keyed by candidate, metric,
feature dimension, reference digest, fake count and seed), so a selection killed half-way
resumes where it stopped and a candidate is never scored twice. No ray or mlflow here: the
candidates' checkpoint files come through ``fetch``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fetalgan.config import SweepConfig, reference_data, select_objective
from fetalgan.evaluation import is_number, metric_source

SELECTION_FILE = "selection.json"  # the result, in the experiment dir and on the parent run
CACHE_FILE = "selection_scores.json"  # every score computed, in the experiment dir
TEST_SEED_OFFSET = 1000  # test draws use other latents than the selection draws
CACHE_VERSION = 1


@dataclass(frozen=True)
class Candidate:
    """One generator the selection re-scores: a trial run's ``checkpoint/best.pt`` or one of
    its ``checkpoint/candidates/epoch_NNNN.pt``, saved at ``epoch`` with the in-sweep value
    ``in_sweep`` of the sweep's metric."""

    run_id: str
    run_name: str
    trial_id: str | None
    epoch: int
    in_sweep: float | None
    artifact: str  # path of the weights in the run's artefacts

    @property
    def key(self) -> str:
        return f"{self.run_id}/{self.artifact}@{self.epoch}"


class ScoreCache:
    """Scores by key in a JSON file, rewritten atomically after every new score."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.scores: dict[str, float] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{self.path}: not a readable score cache ({err})") from None
            if data.get("version") == CACHE_VERSION:
                self.scores = {k: float(v) for k, v in data.get("scores", {}).items()}
        self.hits = 0

    def get(self, key: str) -> float | None:
        value = self.scores.get(key)
        if value is not None:
            self.hits += 1
        return value

    def put(self, key: str, value: float) -> None:
        from fetalgan.files import atomic_write_text

        self.scores[key] = float(value)
        text = json.dumps({"version": CACHE_VERSION, "scores": self.scores}, indent=1)
        atomic_write_text(self.path, text + "\n")


def _spread(values: list[float]) -> float:
    """The sample standard deviation (0 for one value)."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


class _Scorer:
    """Scores generators against one reference set per (reference, resolution), loading each
    set and its statistics once."""

    def __init__(self, cfg: SweepConfig, metric: str, device, progress: bool):
        self.cfg, self.metric, self.device, self.progress = cfg, metric, device, progress
        self.source = metric_source(metric)
        self.dims = cfg.select.fid_dims or cfg.base.fid_dims
        self.evaluators: dict[tuple[str, int], Any] = {}
        self.identity: dict[str, dict] = {}

    def evaluator(self, name: str, resolution: int):
        if (name, resolution) in self.evaluators:
            return self.evaluators[(name, resolution)]
        from fetalgan.data import load_reference_images
        from fetalgan.data.cache import statistics_dir
        from fetalgan.data.datasets import describe_set
        from fetalgan.metrics.stats import TrainingMetrics

        ref = getattr(self.cfg.select, name)
        data = reference_data(self.cfg.base, ref)
        images = load_reference_images(
            self.cfg.base, resolution, progress=self.progress, ref=ref, section=f"select.{name}"
        )
        evaluator = TrainingMetrics(
            images.images,
            metrics=[self.source],
            fid_weights=self.cfg.base.fid_weights,
            dims=self.dims,
            device=self.device,
            stats_dir=statistics_dir(data.cache_dir),
        )
        self.evaluators[(name, resolution)] = evaluator
        n = int(images.images.shape[0])
        context = "selection" if name == "reference" else "test"
        self.identity[name] = {
            "dataset": images.key,
            "key": evaluator.reference_key,
            "n": n,
            "resolution": resolution,
            "described": describe_set(data, key=images.key, n=n, context=context),
        }
        return evaluator

    def scores(
        self,
        checkpoint: Path,
        key: str,
        reference: str,
        seeds: list[int],
        n_fake: int,
        cache: ScoreCache,
        bar,
    ) -> list[float]:
        """The metric of ``n_fake`` fakes per seed against ``reference``, from the cache
        where it has them; the generator is loaded only when one is missing."""
        from fetalgan.generate import load_generator
        from fetalgan.models import registry
        from fetalgan.sampling import sample_images, sampling_batch_size

        networks, cfg = load_generator(checkpoint, self.device)
        resolution = registry.spec(cfg.model).real_resolution(cfg)
        evaluator = self.evaluator(reference, resolution)
        out = []
        for seed in seeds:
            entry = "|".join(
                (self.metric, str(self.dims), evaluator.reference_key, str(n_fake), str(seed), key)
            )
            value = cache.get(entry)
            if value is None:
                fakes = sample_images(
                    networks, cfg, n_fake, seed=seed, batch_size=sampling_batch_size(cfg)
                )
                value = float(evaluator(fakes)[self.metric])
                cache.put(entry, value)
            out.append(value)
            bar.update(1)
        return out


def run_selection(
    cfg: SweepConfig,
    candidates: list[Candidate],
    fetch: Callable[[Candidate], Path],
    *,
    cache_path: str | Path,
    device: str = "auto",
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Re-score ``candidates`` on the selection reference, pick the winner, score it on the
    test reference (see the module docstring). ``fetch(candidate)`` gives a local checkpoint
    file. Returns the record that ``selection.json`` holds: ``metric``, ``mode``,
    ``candidates`` (each with its ``scores``, ``score`` (mean) and ``spread``, best first),
    ``winner``, ``test`` (``value``, ``std``, ``scores``, ``n_fake``, ``draws``), the
    references' identities, ``optimism`` (the winner's in-sweep value over its selection
    score, when both are the same metric) and ``seconds``."""
    from tqdm.auto import tqdm

    from fetalgan.devices import pick_device

    if cfg.select is None:
        raise ValueError(f"sweep {cfg.name}: no select section; nothing to select with")
    if not candidates:
        raise ValueError(f"sweep {cfg.name}: no candidate to select from (no finished trial)")
    start = time.perf_counter()
    sel = cfg.select
    objective = select_objective(cfg)
    scorer = _Scorer(cfg, objective.metric, pick_device(device), progress)
    cache = ScoreCache(cache_path)
    select_seeds = [sel.seed + d for d in range(sel.draws)]
    test_seeds = [sel.seed + TEST_SEED_OFFSET + d for d in range(sel.draws)]
    say(
        f"fetalgan select: {len(candidates)} candidate(s) x {sel.draws} draw(s) of "
        f"{sel.n_fake} fakes against select.reference, by {objective.metric} "
        f"({objective.mode}); the winner then on select.test_reference"
    )
    records = []
    with tqdm(
        total=len(candidates) * sel.draws + sel.draws,
        desc="select",
        unit="score",
        disable=None if progress else True,
    ) as bar:
        for candidate in candidates:
            scores = scorer.scores(
                fetch(candidate), candidate.key, "reference", select_seeds, sel.n_fake, cache, bar
            )
            records.append(
                {**asdict(candidate), "scores": scores, "score": sum(scores) / len(scores),
                 "spread": _spread(scores)}
            )  # fmt: skip
        sign = 1.0 if objective.mode == "min" else -1.0
        ranked = sorted(  # stable: in-sweep order on ties; a non-finite score ranks last
            records, key=lambda r: sign * r["score"] if is_number(r["score"]) else math.inf
        )
        winner = ranked[0]
        chosen = next(c for c in candidates if c.key == _key(winner))
        test_scores = scorer.scores(
            fetch(chosen), chosen.key, "test_reference", test_seeds, sel.n_fake, cache, bar
        )
    in_sweep_same = objective.metric == cfg.metric
    optimism = None
    if in_sweep_same and winner["in_sweep"] and winner["score"]:
        optimism = winner["in_sweep"] / winner["score"]
    result = {
        "sweep": cfg.name,
        "metric": objective.metric,
        "mode": objective.mode,
        "in_sweep_metric": cfg.metric,
        "n_fake": sel.n_fake,
        "draws": sel.draws,
        "fid_dims": scorer.dims,
        "top_k": sel.top_k,
        "per_trial": sel.per_trial,
        "reference": scorer.identity.get("reference"),
        "test_reference": scorer.identity.get("test_reference"),
        "candidates": ranked,
        "winner": winner,
        "test": {
            "value": sum(test_scores) / len(test_scores),
            "std": _spread(test_scores),
            "scores": test_scores,
            "n_fake": sel.n_fake,
            "draws": sel.draws,
        },
        "optimism": optimism,
        "cached_scores": cache.hits,
        "seconds": time.perf_counter() - start,
    }
    say(describe(result))
    return result


def _key(record: dict) -> str:
    return f"{record['run_id']}/{record['artifact']}@{record['epoch']}"


def describe(result: dict) -> str:
    """The selection's outcome in a few lines: the winner, its three numbers, the runner-up."""
    metric, winner, test = result["metric"], result["winner"], result["test"]
    lines = [
        f"fetalgan select: winner {winner['run_name']} epoch {winner['epoch']} "
        f"({winner['artifact'].rsplit('/', 1)[-1]}) of {len(result['candidates'])} candidates",
        f"   in-sweep {result['in_sweep_metric']} (the lowest of its run's evaluations, on few "
        f"fakes: not for reporting): {_num(winner['in_sweep'])}",
        f"   selection {metric}: {_num(winner['score'])} +- {_num(winner['spread'])} "
        f"({result['draws']} x {result['n_fake']} fakes, select.reference)",
        f"   test {metric}: {_num(test['value'])} +- {_num(test['std'])} "
        f"({test['draws']} x {test['n_fake']} fakes, select.test_reference: report this one)",
    ]
    if len(result["candidates"]) > 1:
        second = result["candidates"][1]
        lines.append(
            f"   runner-up: {second['run_name']} epoch {second['epoch']}: {metric} "
            f"{_num(second['score'])} +- {_num(second['spread'])}"
        )
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def write_result(path: str | Path, result: dict) -> Path:
    from fetalgan.files import atomic_write_text

    return atomic_write_text(path, json.dumps(result, indent=2) + "\n")
