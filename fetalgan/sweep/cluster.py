"""Ray for a sweep's driver: connected (``$RAY_ADDRESS``) or started locally with a fresh token,
its output set to the driver's verbosity, the cluster checked to fit a trial, and the one
context (:func:`ray_session`) the driver runs in from before it writes anything to after the
fit: Ray shut down on the way out when the driver started it, SIGTERM saving like SIGUSR1.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

from fetalgan.config import SweepConfig
from fetalgan.sweep import space


def ray_address() -> str | None:
    """``$RAY_ADDRESS``; empty or blank counts as unset (a local Ray)."""
    return (os.environ.get("RAY_ADDRESS") or "").strip() or None


def _local_ray_token() -> None:
    """Token authentication for a Ray this sweep starts itself: ``RAY_AUTH_MODE=token`` and a
    fresh random ``RAY_AUTH_TOKEN`` in this process's environment, which every Ray process
    started from it inherits, so nobody else reaching its ports can run code as this user (a
    token left in ``~/.ray/auth_token`` or the caller's ``RAY_AUTH_*`` are not used)."""
    import secrets

    from ray._raylet import AuthenticationTokenLoader, Config

    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    # Ray read both when it was imported; re-read them, as its own `_enable_token_auth` does.
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def ray_output(verbose: int) -> None:
    """Ray's own output for ``run_sweep``'s ``verbose``, set before Ray starts. Ray's loggers
    (and Optuna's, see ``space.searcher``) follow the level fetalgan's logging is set to
    (``fetalgan sweep`` default WARNING, ``-v`` INFO, ``-vv`` DEBUG). Below 2 (fetalgan's own
    lines only), Tune's documented switches: no traceback of a failed trial (the progress line
    gives its reason and its ``error.txt``), no warning that experiment snapshots come often
    (every trial checkpoint forces one with ``num_to_keep=1``, by design here), and Tune's
    legacy output engine, which at verbosity 0 prints nothing (the new one prints its
    experiment header and TensorBoard hint whatever the verbosity)."""
    import logging

    if verbose < 2:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    logging.getLogger("ray").setLevel(logging.getLogger().getEffectiveLevel())


def _ensure_ray(verbose: int = 1) -> bool:
    """Connect to ``$RAY_ADDRESS`` (with the ``RAY_AUTH_*`` the caller gives, e.g.
    slurm/ray_cluster.sh's per-job token) or start a local Ray with a fresh token (see
    :func:`_local_ray_token`); True if this call started it. The trials' own output (Ray's
    checkpoint lines, their warnings and tracebacks, which also land in each trial's
    ``error.txt`` and Ray's worker logs) reaches this console only with ``verbose`` >= 2."""
    import logging

    import ray

    if ray.is_initialized():
        return False
    address = ray_address()
    if address is None:
        os.environ.pop("RAY_ADDRESS", None)  # Ray itself reads it too
        _local_ray_token()
    else:  # a cluster without a token of its own: do not pick up a stale ~/.ray/auth_token
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        address=address,
        include_dashboard=False,
        log_to_driver=verbose >= 2,
        logging_level=logging.getLogger().getEffectiveLevel(),  # the driver's "ray" logger
    )
    return True


def check_cluster(cfg: SweepConfig) -> None:
    """``ValueError`` when no trial of ``cfg`` fits the connected Ray cluster (see
    ``space.check_resources``)."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    space.check_resources(cfg, ray.cluster_resources(), nodes)


def _term_to_usr1(signum, frame) -> None:  # Slurm/scancel send TERM: save like USR1 does
    os.kill(os.getpid(), signal.SIGUSR1)


@contextlib.contextmanager
def ray_session(cfg: SweepConfig, verbose: int) -> Iterator[None]:
    """The driver's time on Ray: its output set (:func:`ray_output`), connected or started
    (:func:`_ensure_ray`) and the cluster checked to fit a trial of ``cfg`` (a sweep none of
    whose trials fits stops before anything is written). On the way out, whatever happened, a
    Ray this call started is shut down."""
    ray_output(verbose)
    started_ray = _ensure_ray(verbose)
    try:
        check_cluster(cfg)
        yield
    finally:
        if started_ray:
            import ray

            ray.shutdown()


@contextlib.contextmanager
def term_saves() -> Iterator[None]:
    """SIGTERM (Slurm's time limit, scancel) turned into Tune's SIGUSR1 (save and stop) while
    Tune runs; the previous handler restored after."""
    previous_term = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _term_to_usr1)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
