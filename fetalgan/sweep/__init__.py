"""Sweeps: many copies of ``train()`` under Ray Tune, each trial tracked in MLflow. The ONLY
package that imports ray (lazily: importing ``fetalgan.sweep`` does not). One module per role:

- :mod:`~fetalgan.sweep.space`: search space, searcher (Optuna in a ConcurrencyLimiter, or
  Tune's variant generator for ``random``/``grid``), scheduler (ASHA on the sweep's metric with
  ``time_attr = epoch``, or FIFO), concurrency (``max_concurrent: auto``), each trial's config;
- :mod:`~fetalgan.sweep.trainable`: what runs in a Ray worker for one trial (``train()``, or a
  data-parallel Ray Train run of it when ``workers_per_trial > 1``);
- :mod:`~fetalgan.sweep.callback`: the driver's Tune callback forwarding trials to tracking;
- :mod:`~fetalgan.sweep.progress`: the driver's Tune callback printing the sweep's progress
  (a trial table, stops, failures; Ray's own output only with ``fetalgan sweep -v``);
- :mod:`~fetalgan.sweep.run`: ``run_sweep``, the driver in named steps (run and resume);
- :mod:`~fetalgan.sweep.experiment`: the experiment folder (storage, the files kept in it,
  the checks a resumed sweep passes);
- :mod:`~fetalgan.sweep.cluster`: Ray for the driver (connect or start, check the cluster fits,
  SIGTERM saving like SIGUSR1);
- :mod:`~fetalgan.sweep.select`: the final selection stage (after the fit, ``fetalgan select``);
- :mod:`~fetalgan.sweep.summary`: the end-of-sweep summary.

Sweep files are loaded and checked by :func:`fetalgan.config.load_sweep` (the one loader).
Faults: ``FailureConfig(max_failures)`` restarts a crashed trial from its last checkpoint
(into the same MLflow run); a NaN trial fails alone. Interruption: SIGUSR1 or SIGINT (Tune's
own handlers) or SIGTERM (converted to SIGUSR1) saves the experiment; ``--resume`` continues.
"""

from fetalgan.config import expected_trials, load_sweep


def run_sweep(*args, **kwargs) -> dict:
    """See :func:`fetalgan.sweep.run.run_sweep`."""
    from fetalgan.sweep.run import run_sweep as run

    return run(*args, **kwargs)


__all__ = ["expected_trials", "load_sweep", "run_sweep"]
