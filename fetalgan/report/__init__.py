"""``fetalgan report EXPERIMENT``: one sweep's results as a self-contained HTML page.

From the MLflow store (through :mod:`fetalgan.tracking`, the one package that speaks MLflow):

- the trials table (status, the hyperparameters that vary, metrics at the last evaluation, the
  best value of the sweep metric and its epoch, the number of fake images behind each FID),
  and every evaluation's metrics per trial (also as ``trials.csv`` and ``evaluations.csv``);
- for a grid over data size (e.g. ``sweeps/paper_grid.yaml``): tables of FID / KID / LBPv by
  data size x epochs, as in the fetal head DCGAN study (cells are means when several trials
  fall in one cell, with the count shown), and the test of a difference across data sizes
  (Kruskal-Wallis and ANOVA, also as ``significance.csv``);
- ``curves.png``: FID and KID against epoch for every trial on one plot, with ASHA stops (and
  failed or killed trials) marked at their last evaluation;
- ``hyperparams.png``: the sweep metric at each trial's last evaluation against every
  hyperparameter that varies;
- the best trial's samples (``best_samples.png``, the grid logged at its best evaluation)
  beside real training images (``real_samples.png``, loaded with the trial's own data
  config; the report says so when the data is not on this machine);
- the environment of the runs (git sha, host, Slurm job, container image, package versions)
  and the nodes that ran the trials, with how many each.

One module per job:

- :mod:`~fetalgan.report.records`: the sweep as typed records (:class:`SweepRecord`,
  :class:`RunRecord`) built once from :func:`fetalgan.tracking.sweep_runs`, and the rules
  read off them (a trial's state and best value, the best trial, varying params, metrics);
- :mod:`~fetalgan.report.tables`: the tables (raw values) and their CSV;
- :func:`fetalgan.study.stats.significance_table`: the test across data sizes, beside the
  reader study's statistics;
- :mod:`~fetalgan.report.plots`: the figures (drawn by :mod:`fetalgan.figures`);
- :mod:`~fetalgan.report.samples`: the best trial's sample grid and real training images;
- :mod:`~fetalgan.report.html`: the page's layout and rendering
  (``fetalgan/templates/report.html``);
- :mod:`~fetalgan.report.write`: :func:`write_report`, reading, writing and logging back.

Best is :class:`fetalgan.evaluation.Objective` (the sweep's metric and mode) applied to each
trial's best value over its evaluations (:func:`trial_best`), as ``fetalgan best`` ranks them.
Params are read back by their TrainConfig type (:func:`fetalgan.config.param_value`); tag and
artefact names come from :mod:`fetalgan.tracking.names`.

Images are embedded as base64 PNG data URIs and the page loads nothing else, so it opens
offline; every text is HTML-escaped (Jinja autoescaping). The HTML and the figures are written
to ``--out`` and logged back to the sweep's parent run under ``report/``.
"""

from fetalgan.report.html import render_html
from fetalgan.report.records import (
    RunRecord,
    SweepRecord,
    best_trial,
    ordered_metrics,
    trial_best,
    trial_state,
    varying_params,
)
from fetalgan.report.samples import best_samples, real_samples
from fetalgan.report.tables import UNKNOWN_HOST, environment_table, fmt, trial_hosts
from fetalgan.report.write import write_report
from fetalgan.study.stats import across_groups, significance_table

__all__ = [
    "UNKNOWN_HOST",
    "RunRecord",
    "SweepRecord",
    "across_groups",
    "best_samples",
    "best_trial",
    "environment_table",
    "fmt",
    "ordered_metrics",
    "real_samples",
    "render_html",
    "significance_table",
    "trial_best",
    "trial_hosts",
    "trial_state",
    "varying_params",
    "write_report",
]
