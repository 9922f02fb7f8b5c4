"""The one checkpoint format: a single file with both networks, both optimisers, the epoch,
the full config, RNG states and free-form ``extra`` (e.g. an MLflow run id).

Two kinds share the format: a *full* checkpoint (everything above: what ``--resume`` and Tune
continue from) and a *weights* checkpoint (networks, config, epoch, history and extra, no
optimiser or RNG state: about a third of the size with Adam; what ``generate``, the registered
model and ``best.pt`` / MLflow's ``checkpoint/*.pt`` hold). ``state["kind"]`` says which.

Written with :func:`fetalgan.files.atomic_write` (a crash mid-write never leaves a truncated
checkpoint; the file mode is ``fetalgan.files.FILE_MODE``); read with
``torch.load(weights_only=True)`` so a checkpoint file cannot run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from fetalgan.files import atomic_write

FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"  # the file a checkpoint directory holds (see resolve)
FULL, WEIGHTS = "full", "weights"  # state["kind"]; checkpoints without it are full


class Key(NamedTuple):
    """One key of a full checkpoint."""

    name: str
    weights: bool  # a weights checkpoint keeps it too
    resume: bool = False  # a resume cannot do without it
    optional: bool = False  # written only when the run has one (older checkpoints lack others)


# Every key of a full checkpoint, in the order written (save_checkpoint puts "format" first).
# fetalgan.train_state.TrainState writes and reads them; the weights subset is derived below.
KEYS = (
    Key("model", weights=True),
    Key("config", weights=True),  # the TrainConfig as a dict (config.to_dict)
    Key("epoch", weights=True, resume=True),  # epochs done
    Key("networks", weights=True, resume=True),  # name -> state_dict
    Key("optimizers", weights=False, resume=True),  # name -> state_dict
    # the averaged generator weights (fetalgan.ema), what sampling uses when present
    Key("ema", weights=True, optional=True),
    Key("rng", weights=False, resume=True),  # this process's (rank 0's) random streams
    Key("history", weights=True),  # every evaluation's Evaluation.to_dict()
    Key("objective", weights=True),  # the metric best_value is best at, or None
    Key("best_value", weights=True),
    Key("extra", weights=True),  # free-form (a sweep's MLflow run id)
    Key("candidates", weights=False, optional=True),  # the final selection's candidates
    Key("rng_ranks", weights=False, optional=True),  # every rank's streams (data-parallel)
)
# What a weights checkpoint keeps of a full one, and what a resume needs of it.
WEIGHTS_KEYS = tuple(key.name for key in KEYS if key.weights)
RESUME_KEYS = tuple(key.name for key in KEYS if key.resume)


# A selection candidate's weights file (``checkpoint/candidates/epoch_NNNN.pt``) holds only the
# networks sampling uses, already averaged where EMA is on; ``state[SAMPLING_ONLY]`` is True.
SAMPLING_ONLY = "sampling_only"


def candidate_weights(state: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
    """The weights checkpoint of one of ``state["candidates"]`` (see ``train_state.candidate_state``):
    its sampling networks, epoch and value, with the run's config and extra."""
    return {
        "kind": WEIGHTS,
        SAMPLING_ONLY: True,
        "model": state.get("model"),
        "config": state["config"],
        "epoch": candidate["epoch"],
        "networks": candidate["networks"],
        "objective": state.get("objective"),
        "best_value": candidate["value"],
        "extra": state.get("extra", {}),
    }


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save({"format": FORMAT_VERSION, **state}, f))


def weights_of(state: dict[str, Any]) -> dict[str, Any]:
    """The weights checkpoint of a (full or weights) checkpoint ``state``."""
    kept = {k: state[k] for k in WEIGHTS_KEYS if k in state}
    return {**kept, "kind": WEIGHTS}


def save_weights(path: str | Path, state: dict[str, Any]) -> Path:
    """Write the weights checkpoint of ``state`` to ``path`` atomically."""
    return save_checkpoint(path, weights_of(state))


def is_full(state: dict[str, Any]) -> bool:
    return state.get("kind", FULL) == FULL


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or a directory holding :data:`CHECKPOINT_NAME`; error if neither."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    return path


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (weights only, no pickled code)."""
    import torch

    path = resolve(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt/foreign file
        raise ValueError(f"{path}: not a readable fetalgan checkpoint ({err})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a fetalgan checkpoint (format {FORMAT_VERSION} expected)")
    return state


def require(state: dict[str, Any], path: str | Path, keys: tuple[str, ...]) -> None:
    """``ValueError`` naming the file and the keys ``state`` lacks (a file saved by other code
    in fetalgan's format, or cut down by hand)."""
    missing = [key for key in keys if key not in state]
    if missing:
        raise ValueError(
            f"{path}: {', '.join(missing)}: missing from this checkpoint (it has "
            f"{', '.join(sorted(k for k in state if k != 'format'))}); use one that "
            "`fetalgan train` or a sweep wrote"
        )


def load_networks(networks: dict, state: dict[str, Any], path: str | Path) -> None:
    """Load ``state["networks"]`` into ``networks`` (name -> module); ``ValueError`` naming the
    file and the network when the checkpoint holds another architecture."""
    saved = state["networks"]
    trained = state.get("config") if isinstance(state.get("config"), dict) else {}
    was = ", ".join(
        f"{key} {trained[key]}"
        for key in ("model", "resolution", "nz", "ngf", "ndf")
        if key in trained
    )
    for name, net in networks.items():
        if name not in saved:
            raise ValueError(
                f"{path}: networks.{name}: not in this checkpoint (it has {', '.join(saved)}; "
                f"trained as {was or 'another model'})"
            )
        try:
            net.load_state_dict(saved[name])
        except RuntimeError as err:  # torch lists every mismatched tensor: keep the first
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            detail = lines[1] if len(lines) > 1 else lines[0]
            raise ValueError(
                f"{path}: networks.{name}: another architecture than this config's "
                f"(trained as {was or 'another model'}; {detail})"
            ) from None


def load_sampling_weights(networks: dict, state: dict[str, Any], path: str | Path) -> None:
    """Load what sampling uses into ``networks``: ``state["networks"]``, then the averaged
    generator weights ``state["ema"]`` (see :mod:`fetalgan.ema`) over the networks they
    average, when the checkpoint has them."""
    load_networks(networks, state, path)
    ema = state.get("ema")
    if ema:
        unknown = [name for name in ema["networks"] if name not in networks]
        if unknown:
            raise ValueError(
                f"{path}: ema.{unknown[0]}: not a network of this model ({', '.join(networks)})"
            )
        load_networks({name: networks[name] for name in ema["networks"]}, ema, path)
