"""An exponential moving average (EMA) of the generator's weights: what samples, FID and
``generate`` use when ``ema_decay`` is on.

After every optimiser step each averaged parameter moves towards the trained one,
``ema = decay_t * ema + (1 - decay_t) * param``, with the warm-up
``decay_t = min(ema_decay, (1 + t) / (10 + t))`` at step ``t`` (so a short run is not
dominated by its random initialisation); buffers (batch-norm statistics, DSR-GAN's histogram
and step counters) are copied. Which networks are averaged is the family's
(``fetalgan.models.GENERATORS``); the discriminators never are. The average lives on the
training device, is updated without a host sync, and is saved in checkpoints beside the
trained weights (``state["ema"]``), so a resumed run continues it exactly.

Batch normalisation (DCGAN's generator): the running statistics copied from the trained
network belong to the trained weights, not to their average, and sampling the average with
them in eval mode gives visibly worse images. Before it is sampled or saved,
:meth:`GeneratorEMA.recalibrate` measures the average's own statistics on its own outputs:
a generator needs no data for that, only latents (a fixed private seed, so a resumed run and
``generate`` see the same numbers). Averages without batch norm skip it at no cost.
"""

from __future__ import annotations

import copy
from typing import Any

from fetalgan import sampling
from fetalgan.sampling import autocast_context

RECALIBRATION_SEED = 20_240_917  # latents of the batch-norm recalibration (private RNG)
RECALIBRATION_N = 1024  # latents it averages over


class GeneratorEMA:
    """The averaged copies of ``networks[name]`` for ``name`` in ``names``."""

    def __init__(self, networks: dict, names, decay: float):
        import torch

        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay: must be in (0, 1) to average, got {decay}")
        self.decay = decay
        self.steps = 0
        self.averaged = {}
        for name in names:
            net = copy.deepcopy(networks[name])
            net.requires_grad_(False)
            self.averaged[name] = net
        # Parameter and buffer lists fixed once: the update is a few fused foreach calls.
        self._pairs = []
        for name, avg in self.averaged.items():
            self._pairs.append(
                (
                    [p for p in avg.parameters() if p.is_floating_point()],
                    [p for p in networks[name].parameters() if p.is_floating_point()],
                    list(avg.buffers()),
                    list(networks[name].buffers()),
                )
            )
        self._torch = torch
        self._norms = [
            m
            for avg in self.averaged.values()
            for m in avg.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        ]

    def current_decay(self) -> float:
        """The decay of the next update (the warm-up at the first steps)."""
        t = self.steps
        return min(self.decay, (1.0 + t) / (10.0 + t))

    def update(self) -> None:
        """One step of the average, after an optimiser step of the trained networks."""
        torch = self._torch
        weight = 1.0 - self.current_decay()
        with torch.no_grad():
            for avg_params, params, avg_buffers, buffers in self._pairs:
                torch._foreach_lerp_(avg_params, params, weight)
                for avg_buffer, buffer in zip(avg_buffers, buffers, strict=True):
                    avg_buffer.copy_(buffer)
        self.steps += 1

    def recalibrate(self, networks: dict, cfg, device, *, batch_size: int = 256, amp_dtype=None):
        """Batch-norm running statistics of the averaged generators, measured on their own
        outputs: reset, then ``RECALIBRATION_N`` latents decoded in training mode with a
        cumulative average (momentum None). Nothing to do without batch norm. Leaves the
        global RNG, the trained networks and every module's mode as they were."""
        if not self._norms:
            return
        from fetalgan.models import family

        torch = self._torch
        model = family(cfg.model)
        latents = sampling.latents(
            RECALIBRATION_N, cfg, torch.Generator().manual_seed(RECALIBRATION_SEED)
        )
        nets = self.sampling_networks(networks)
        modes = {name: net.training for name, net in nets.items()}
        momenta = [m.momentum for m in self._norms]
        for m in self._norms:
            m.reset_running_stats()
            m.momentum = None
        for name, net in nets.items():  # only the averages' statistics may move
            net.train(name in self.averaged)
        try:
            with torch.no_grad(), autocast_context(device, amp_dtype):
                for start in range(0, RECALIBRATION_N, batch_size):
                    model.decode(nets, latents[start : start + batch_size].to(device), cfg)
        finally:
            for m, momentum in zip(self._norms, momenta, strict=True):
                m.momentum = momentum
            for name, net in nets.items():
                net.train(modes[name])

    def sampling_networks(self, networks: dict) -> dict:
        """``networks`` with the averaged generators in place of the trained ones."""
        return {**networks, **self.averaged}

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "steps": self.steps,
            "networks": {name: net.state_dict() for name, net in self.averaged.items()},
        }

    def load_state_dict(self, state: dict[str, Any], path) -> None:
        """Continue a saved average (``state["ema"]`` of a checkpoint from ``path``)."""
        from fetalgan.checkpoint import load_networks

        load_networks(self.averaged, state, path)
        self.steps = int(state.get("steps", 0))
