"""What a training run carries from epoch to epoch, and what its checkpoint holds.

:class:`TrainState` is the run's networks, optimisers, generator average, epoch, evaluation
history, best value, selection candidates and ``extra``, with the config in force. It writes
a full checkpoint (:meth:`TrainState.checkpoint`) and continues from one
(:meth:`TrainState.resume`) through the one key list :data:`fetalgan.checkpoint.KEYS`; the
random streams (``rng``, one per rank) are saved and restored here too.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fetalgan.checkpoint import KEYS, RESUME_KEYS, load_networks, require
from fetalgan.config import TrainConfig, to_dict
from fetalgan.evaluation import Objective

# Fresh streams are seeded from (seed, rank, epoch): seed + rank + STREAM_EPOCH * epoch + stream.
STREAM_EPOCH = 7919


def rng_state(device) -> dict[str, Any]:
    """This process's random streams (torch, numpy, Python, and ``device``'s CUDA one)."""
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


def set_rng_state(state: dict[str, Any], device) -> None:
    """Continue the random streams :func:`rng_state` saved."""
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


def fresh_stream(cfg: TrainConfig, rank: int, epoch: int, stream: int = 0) -> None:
    """Seed a new random stream for ``rank`` from ``epoch`` on (an exploit, a replay's switch,
    a resume with more ranks than saved)."""
    seed_everything(cfg.seed + rank + STREAM_EPOCH * epoch + stream)


def reapply_hyperparameters(optimizers: dict, fresh: dict) -> None:
    """Put the hyper-parameters of ``fresh`` optimisers (built from the config now in force)
    into ``optimizers`` (loaded from a state), keeping their moments: a loaded state carries
    the learning rate, betas and weight decay it was saved with, which would otherwise win."""
    for name, opt in optimizers.items():
        for group, new in zip(opt.param_groups, fresh[name].param_groups, strict=True):
            group.update({k: v for k, v in new.items() if k != "params"})


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


@dataclass
class TrainState:
    """A run's state between epochs. ``cfg`` is the config in force (a PBT replay switches it
    per segment); ``epoch`` counts the epochs done; ``history`` holds every evaluation's
    record; ``best_value`` and ``candidates`` are measured by ``objective`` (None: no best)."""

    cfg: TrainConfig
    networks: dict
    optimizers: dict
    objective: Objective | None
    ema: Any = None  # fetalgan.ema.GeneratorEMA when ema_decay is on (rank 0)
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_value: float | None = None
    candidates: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def sampling_networks(self) -> dict:
        """What evaluations sample: the networks, the generators averaged where EMA is on."""
        return self.networks if self.ema is None else self.ema.sampling_networks(self.networks)

    def resume(self, saved: dict[str, Any], path: str | Path, rank: int, device) -> None:
        """Continue the full checkpoint ``saved`` (read from ``path``): weights, optimiser
        moments, epoch, history, this rank's random stream, and the best record and
        candidates when they were measured by this run's objective. (The average is
        :meth:`start_ema`'s.)"""
        require(saved, path, RESUME_KEYS)
        load_networks(self.networks, saved, path)
        for name, opt in self.optimizers.items():
            try:
                opt.load_state_dict(saved["optimizers"][name])
            except (KeyError, ValueError) as err:
                raise ValueError(f"{path}: optimizers.{name}: does not fit ({err})") from None
        self.epoch, self.history = saved["epoch"], list(saved.get("history", []))
        if self.objective is not None and saved.get("objective") == self.objective.metric:
            self.best_value = saved.get("best_value")
            self.candidates = list(saved.get("candidates") or [])
        rank_states = saved.get("rng_ranks") or [saved["rng"]]
        if rank < len(rank_states):
            set_rng_state(rank_states[rank], device)
        else:  # resumed with more ranks than saved: a fresh stream for this one
            fresh_stream(self.cfg, rank, self.epoch)

    def exploit(self, exploit: dict, make_optimizers, rank: int) -> None:
        """PBT: the resumed state is another trial's. Its weights, moments and epoch stay;
        this run's hyper-parameters, random stream and best record replace the donor's."""
        reapply_hyperparameters(self.optimizers, make_optimizers(self.cfg, self.networks))
        fresh_stream(self.cfg, rank, self.epoch, int(exploit.get("stream", 0)))
        self.best_value, self.candidates = exploit.get("best_value"), []
        # the donor's evaluations stay (the lineage's window), its bests are not this run's
        self.history = [{**h, "is_best": False, "best_weights": None} for h in self.history]

    def switch_config(self, cfg: TrainConfig, make_optimizers) -> None:
        """Train on with ``cfg`` (a replay's next segment): its hyper-parameters go into the
        optimisers, their moments stay."""
        self.cfg = cfg
        reapply_hyperparameters(self.optimizers, make_optimizers(cfg, self.networks))

    def start_ema(self, generators: tuple[str, ...], decay: float, saved, path) -> None:
        """Average ``generators`` with ``decay`` from now on, continuing ``saved``'s average
        when it has one."""
        from fetalgan.ema import GeneratorEMA

        self.ema = GeneratorEMA(self.networks, generators, decay)
        if saved and saved.get("ema"):
            self.ema.load_state_dict(saved["ema"], path)

    def checkpoint(self, device, rank_states: list | None = None) -> dict[str, Any]:
        """The full checkpoint of this state, keyed and ordered by
        :data:`fetalgan.checkpoint.KEYS`. ``rank_states``: every rank's random streams
        (data-parallel; rank 0's own entry is taken as of now, like ``rng``)."""
        rng = rng_state(device)
        values = {
            "model": self.cfg.model,
            "config": to_dict(self.cfg),
            "epoch": self.epoch,
            "networks": {n: net.state_dict() for n, net in self.networks.items()},
            "optimizers": {n: opt.state_dict() for n, opt in self.optimizers.items()},
            "ema": None if self.ema is None else self.ema.state_dict(),
            "rng": rng,
            "history": self.history,
            "objective": None if self.objective is None else self.objective.metric,
            "best_value": self.best_value,
            "extra": self.extra,
            "candidates": self.candidates or None,
            "rng_ranks": None if rank_states is None else [rng, *rank_states[1:]],
        }
        return {
            key.name: values[key.name]
            for key in KEYS
            if not (key.optional and values[key.name] is None)
        }
