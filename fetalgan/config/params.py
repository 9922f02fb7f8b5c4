"""The MLflow param round trip: a config as plain data (:func:`to_dict`), flattened to dotted
keys (:func:`flatten`), each value as a param string (:func:`param_text`) and back to its
typed value by the type ``TrainConfig`` declares for the key (:func:`param_value`)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import yaml

from fetalgan.checks import ConfigError
from fetalgan.config.schema import TRAIN_KEYS
from fetalgan.config.strict import _convert


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'data': {'size': 3}} -> {'data.size': 3}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def param_text(value: Any) -> str:
    """A config value as an MLflow param string (lists and mappings as JSON, None as null):
    :func:`param_value` reads it back with the key's declared type."""
    if value is None or isinstance(value, (list, dict, bool)):
        return json.dumps(value)
    return str(value)


def param_value(key: str, text: str) -> Any:
    """An MLflow param string of training key ``key`` (``lr_g``, ``data.size``) back to its
    typed value, by the type TrainConfig declares for the key (not by guessing from the text).
    Unknown keys and unreadable texts come back as the text."""
    tp = TRAIN_KEYS.get(key)
    if tp is None:
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if value is None and text in ("None", "null"):
        value = None
    elif text in ("True", "False"):  # str(bool), as earlier runs logged them
        value = text == "True"
    try:
        return _convert(value, tp, key)
    except ConfigError:
        return text
