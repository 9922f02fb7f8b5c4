"""Configuration: dataclasses for one training run and for a sweep, loaded strictly from YAML.

Every field has a default and a one-line comment. Loading is strict: an unknown key, a wrong
type or an impossible value raises ``ConfigError`` (a ``ValueError``) whose message names the
key path and what is valid, e.g. ``base.data.kind: unknown value 'hc19'; expected one of ...``.
Only pyyaml is imported here (and the torch-free family specs), so ``fetalgan --help`` and
config validation stay instant.

The package by job (everything public is re-exported here):

- :mod:`.schema`: the dataclasses (``TrainConfig`` takes its family sections from
  :mod:`fetalgan.models.registry`) and the value sets; ``TRAIN_KEYS``;
- :mod:`.strict`: the generic strict YAML -> dataclass loader (``read_yaml``);
- :mod:`.rules`: the checks of one training run (``validate_train``, ``reference_data``);
- :mod:`.overrides`: the one dotted-key setter (``set_key``) behind ``--set``,
  ``with_overrides`` and a sweep trial's config;
- :mod:`.sweep_rules`: the search space, search, ASHA/PBT and selection semantics
  (``validate_sweep``, ``max_epochs``, ``expected_trials``, ``pbt_mutable``);
- :mod:`.load`: ``load_sweep``, ``load_train``, ``load_objective``;
- :mod:`.params`: the MLflow param round trip (``to_dict``, ``flatten``, ``param_text``,
  ``param_value``).

``ConfigError`` and the shared value checks are in :mod:`fetalgan.checks`; metric names in
:mod:`fetalgan.metric_names`.
"""

from fetalgan.checks import ConfigError
from fetalgan.config.load import load_objective, load_sweep, load_train, sweep_overrides
from fetalgan.config.overrides import (
    apply_overrides,
    set_key,
    train_config_from_dict,
    with_overrides,
)
from fetalgan.config.params import flatten, param_text, param_value, to_dict
from fetalgan.config.rules import generator_families, reference_data, validate_train
from fetalgan.config.schema import (
    DATA_KINDS,
    DEVICES,
    DISTRIBUTIONS,
    EVAL_METRICS,
    FID_DIMS,
    FITS,
    MODALITIES,
    PBT_FIXED,
    PRECISIONS,
    RANK_BY,
    REAL_KINDS,
    SAMPLERS,
    SCHEDULER_KEYS,
    SCHEDULER_KINDS,
    SEARCH_KINDS,
    SUBSET_ORDERS,
    SWEEP_KEYS,
    TRAIN_KEYS,
    AugmentConfig,
    DataConfig,
    ReferenceConfig,
    ResourcesConfig,
    RunConfig,
    SchedulerConfig,
    SearchConfig,
    SelectConfig,
    SweepConfig,
    TrainConfig,
)
from fetalgan.config.strict import read_yaml
from fetalgan.config.sweep_rules import (
    expected_trials,
    max_epochs,
    pbt_mutable,
    perturbation_interval,
    select_objective,
    space_values,
    validate_space,
    validate_sweep,
)

__all__ = [
    "DATA_KINDS",
    "DEVICES",
    "DISTRIBUTIONS",
    "EVAL_METRICS",
    "FID_DIMS",
    "FITS",
    "MODALITIES",
    "PBT_FIXED",
    "PRECISIONS",
    "RANK_BY",
    "REAL_KINDS",
    "SAMPLERS",
    "SCHEDULER_KEYS",
    "SCHEDULER_KINDS",
    "SEARCH_KINDS",
    "SUBSET_ORDERS",
    "SWEEP_KEYS",
    "TRAIN_KEYS",
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "ReferenceConfig",
    "ResourcesConfig",
    "RunConfig",
    "SchedulerConfig",
    "SearchConfig",
    "SelectConfig",
    "SweepConfig",
    "TrainConfig",
    "apply_overrides",
    "expected_trials",
    "flatten",
    "generator_families",
    "load_objective",
    "load_sweep",
    "load_train",
    "max_epochs",
    "param_text",
    "param_value",
    "pbt_mutable",
    "perturbation_interval",
    "read_yaml",
    "reference_data",
    "select_objective",
    "set_key",
    "space_values",
    "sweep_overrides",
    "to_dict",
    "train_config_from_dict",
    "validate_space",
    "validate_sweep",
    "validate_train",
    "with_overrides",
]
