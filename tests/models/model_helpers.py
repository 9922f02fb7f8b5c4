"""A tiny CPU training config shared by the model-family tests."""

from fetalgan.config import TrainConfig, with_overrides

TINY = {
    "resolution": 32,
    "data.size": 12,
    "data.phantom_n": 16,
    "batch_size": 6,
    "epochs": 2,
    "eval_every": 1,
    "eval_n": 4,
    "eval_metrics": [],
    "precision": "fp32",
}
TINY_UNET = {
    "lr_g": 1.0e-3,
    "betas": [0.9, 0.999],
    "ddpm.block_out_channels": [8, 16],
    "ddpm.layers_per_block": 1,
    "ddpm.num_train_timesteps": 50,
}


def tiny_config(tmp_path, model: str, overrides: dict) -> TrainConfig:
    """``TINY`` for ``model`` with its data cache under ``tmp_path``, then ``overrides``."""
    base = TINY | {"model": model, "data.cache_dir": str(tmp_path / "cache")}
    return with_overrides(TrainConfig(), base | overrides)
