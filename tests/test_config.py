import textwrap

import pytest

from fetalgan.cli import main
from fetalgan.config import (
    ConfigError,
    TrainConfig,
    load_sweep,
    load_train,
    with_overrides,
)


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_match_the_study():
    cfg = TrainConfig()
    assert (cfg.lr_g, cfg.lr_d, cfg.betas, cfg.eval_n) == (2e-4, 2e-4, [0.5, 0.999], 800)


def test_sweep_file_loads_with_space(tmp_path):
    path = write(
        tmp_path,
        """
        name: t
        search: {kind: random}
        base: {resolution: 32, data: {kind: phantom, size: 10}, lr_g: 1e-3}
        space:
          lr_d: {loguniform: [1.0e-5, 1.0e-2]}
          data.size: {grid: [5, 10]}
        """,
    )
    cfg = load_sweep(path)
    assert cfg.base.resolution == 32 and cfg.base.data.size == 10
    assert cfg.base.lr_g == pytest.approx(1e-3)  # YAML 1.1 reads 1e-3 as a string
    assert set(cfg.space) == {"lr_d", "data.size"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base: {lr_gg: 1}", "base.lr_gg: unknown key; expected one of model, resolution"),
        ("base: {data: {sizee: 3}}", "base.data.sizee: unknown key"),
        ("base: {epochs: ten}", "base.epochs: expected an integer, got 'ten'"),
        ("base: {epochs: 2.5}", "base.epochs: expected an integer"),
        ("base: {data: {augment: {hflip: 3}}}", "base.data.augment.hflip: expected true or false"),
        ("base: {resolution: 48}", "base.resolution: must be a power of two in 32..256"),
        ("base: {resolution: 512}", "base.resolution: must be a power of two in 32..256"),
        ("base: {lr_g: 0}", "base.lr_g: must be > 0"),
        ("base: {lr_d: -1.0e-3}", "base.lr_d: must be > 0"),
        (
            "base: {data: {kind: hc19}}",
            "base.data.kind: unknown value 'hc19'; expected one of phantom, hc18",
        ),
        ("base: {data: {kind: hc18}}", "base.data.root: required"),
        ("base: {data: {size: 2000}}", "base.data.size: 2000 is larger than the dataset"),
        (
            "space: {lr_g: {logunifrom: [1, 2]}}",
            "space.lr_g: unknown distribution 'logunifrom'; expected one of choice, uniform, loguniform, randint, grid",
        ),
        ("space: {lr_g: {uniform: [2, 1]}}", "space.lr_g.uniform: empty range"),
        ("space: {lr_x: {uniform: [1, 2]}}", "space.lr_x: unknown training key"),
        ("space: {resolution: {grid: []}}", "space.resolution.grid: empty list"),
        (
            "scheduler: {kind: hyperband}",
            "scheduler.kind: unknown value 'hyperband'; expected one of asha, fifo",
        ),
        ("mode: minimum", "mode: unknown value 'minimum'"),
        ("base: {seed: -1}", "base.seed: must be >= 0"),
    ],
)
def test_strict_errors_name_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_overrides_and_cli_exit_code(tmp_path, capsys):
    path = write(tmp_path, "base: {resolution: 32}")
    cfg = load_train(path, ["lr_g=1e-3", "data.size=300", "betas=[0.0, 0.9]"])
    assert (cfg.lr_g, cfg.data.size, cfg.betas) == (1e-3, 300, [0.0, 0.9])
    with pytest.raises(ConfigError, match="base.resolution"):
        load_train(path, ["resolution=100"])
    assert main(["train", str(path), "--set", "lr_g=-1"]) == 2
    assert "lr_g: must be > 0" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_with_overrides_validates():
    cfg = with_overrides(TrainConfig(), {"lr_g": 1e-3, "data.size": 5})
    assert cfg.lr_g == 1e-3 and cfg.data.size == 5
    with pytest.raises(ConfigError, match="resolution"):
        with_overrides(TrainConfig(), {"resolution": 100})
