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


# ---- bad input that used to pass (and fail mid-sweep, or train nothing) ---------------------

SPACE_SWEEP = """
name: s
search: {kind: random}
base: {resolution: 32, data: {kind: phantom, size: 10, phantom_n: 40}, batch_size: 4}
space:
  %s
"""


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("lr_g: {uniform: [-1, 1]}", r"space\.lr_g\.uniform\[0\]: lr_g: must be > 0, got -1"),
        ("lr_d: {uniform: [0.0, 1.0e-3]}", r"space\.lr_d\.uniform\[0\]: lr_d: must be > 0"),
        ("real_label: {uniform: [0.5, 1.5]}", r"space\.real_label\.uniform\[1\]: real_label"),
        ("data.size: {randint: [2, 50]}", r"space\.data\.size\.randint\[1\]: data\.size: 50 is"),
        ("batch_size: {randint: [1, 8]}", r"space\.batch_size\.randint\[0\]: batch_size: must"),
        ("data.augment.rotate_deg: {uniform: [0, 270]}", r"rotate_deg\.uniform\[1\]: .*0\.\.180"),
    ],
)
def test_space_bounds_get_the_checks_of_base_values(tmp_path, space, message):
    path = write(tmp_path, SPACE_SWEEP % space)
    with pytest.raises(ConfigError, match=message):
        load_sweep(path)


def test_space_bounds_inside_the_valid_range_load(tmp_path):
    path = write(tmp_path, SPACE_SWEEP % "data.size: {randint: [2, 40]}")
    assert load_sweep(path).space["data.size"] == {"randint": [2, 40]}


@pytest.mark.parametrize("value", [".nan", ".inf", "1", "0.5"])
def test_reduction_factor_must_be_finite_and_above_one(tmp_path, value):
    path = write(tmp_path, f"name: r\nscheduler: {{kind: asha, reduction_factor: {value}}}\n")
    with pytest.raises(ConfigError, match=r"scheduler\.reduction_factor: must be a finite number"):
        load_sweep(path)


def test_batch_size_below_two_is_refused(tmp_path, capsys):
    path = write(tmp_path, "name: b\nbase: {resolution: 32, batch_size: 1}\n")
    with pytest.raises(ConfigError, match=r"base\.batch_size: must be >= 2 .* got 1"):
        load_sweep(path)
    with pytest.raises(ConfigError, match=r"batch_size: must be >= 2"):
        load_train(path)
    bare = write(tmp_path, "resolution: 32\n", "t.yaml")
    assert main(["train", str(bare), "--set", "batch_size=1"]) == 2
    assert "t.yaml: batch_size: must be >= 2" in capsys.readouterr().err


def test_data_parallel_workers_each_need_two_images(tmp_path):
    text = "name: d\nworkers_per_trial: 4\nbase: {resolution: 32, data: {size: %d}}\n"
    with pytest.raises(ConfigError, match=r"workers_per_trial: 4 .* base\.data\.size 7 images"):
        load_sweep(write(tmp_path, text % 7))
    assert load_sweep(write(tmp_path, text % 8, "ok.yaml")).workers_per_trial == 4


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name: x\nbase: [1, 2]\n", "base: expected a mapping, got [1, 2]"),
        (b"name: x\nbase: 3\n", "base: expected a mapping, got 3"),
        (b"name: \xff\xfe x\n", "not UTF-8 text"),
    ],
)
def test_malformed_sweep_files_are_one_line_errors_naming_the_file(
    tmp_path, capsys, content, message
):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    for command in (["sweep", str(path)], ["train", str(path)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"fetalgan: error: {path}: ") and message in err, err
        assert len(err.strip().splitlines()) == 1


def test_compile_is_refused_for_tbgan_with_r1(tmp_path):
    """torch.compile'd modules refuse the double backward of tbgan's R1 penalty: refused at
    load, not an hour into a GPU job; without R1, or for other kinds, compile loads."""
    text = "name: c\nbase: {resolution: 32, model: %s, compile: true%s}\n"
    with pytest.raises(ConfigError, match=r"base\.compile: tbgan's R1 penalty .*double backward"):
        load_sweep(write(tmp_path, text % ("tbgan", "")))
    no_r1 = load_sweep(write(tmp_path, text % ("tbgan", ", tbgan: {r1_gamma: 0}"), "r1.yaml"))
    assert no_r1.base.compile
    assert load_sweep(write(tmp_path, text % ("dcgan", ""), "d.yaml")).base.compile


def test_fractional_gpu_with_data_parallel_is_refused(tmp_path):
    text = "name: g\nworkers_per_trial: %d\nresources: {cpu: 1, gpu: %s}\nbase: {resolution: 32}\n"
    with pytest.raises(ConfigError, match=r"resources\.gpu: 0\.5 per worker .* whole GPU each"):
        load_sweep(write(tmp_path, text % (2, "0.5")))
    assert load_sweep(write(tmp_path, text % (2, "1"), "a.yaml")).resources.gpu == 1
    assert load_sweep(write(tmp_path, text % (1, "0.25"), "b.yaml")).resources.gpu == 0.25


def test_eval_batch_size_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match=r"eval_batch_size: must be > 0"):
        with_overrides(TrainConfig(), {"eval_batch_size": 0})
    assert with_overrides(TrainConfig(), {"eval_batch_size": 8}).eval_batch_size == 8


def test_the_three_dotted_key_setters_agree(tmp_path):
    """``--set``, ``with_overrides`` and a sweep trial's config put values in with one setter:
    a null section (``target_data`` unset) becomes one with its defaults in all three, and an
    unknown key never reaches a config (``--set`` and ``with_overrides`` refuse it naming the
    key; a trial takes only training keys from Tune's config)."""
    from fetalgan.config import set_key, to_dict
    from fetalgan.sweep.space import trial_config

    base = TrainConfig(model="us2mri")  # target_data null (not validated: it needs one)
    path = write(tmp_path, "model: us2mri\ntarget_data: null\n")
    by_set = load_train(path, ["target_data.size=5"])
    by_overrides = with_overrides(base, {"target_data.size": 5})
    by_trial = trial_config(to_dict(base), {"target_data.size": 5})
    assert by_set == by_overrides == by_trial
    assert by_set.target_data.size == 5 and by_set.target_data.kind == "phantom"
    path = write(tmp_path, "model: us2mri\n")  # a missing section, as a null one
    assert load_train(path, ["target_data.size=5"]) == by_set

    with pytest.raises(ConfigError, match=r"cfg.yaml: lr_x: unknown key; expected one of model"):
        load_train(path, ["target_data.size=5", "lr_x=1"])
    with pytest.raises(ConfigError, match=r"^lr_x: unknown training key"):
        with_overrides(by_set, {"lr_x": 1})
    assert trial_config(to_dict(by_set), {"lr_x": 1}) == by_set
    with pytest.raises(ConfigError, match=r"target_data.sise: unknown key; expected one of kind"):
        load_train(path, ["target_data.sise=5"])
    with pytest.raises(ConfigError, match=r"^target_data.sise: unknown training key"):
        with_overrides(by_set, {"target_data.sise": 5})
    assert trial_config(to_dict(by_set), {"target_data.sise": 5}) == by_set

    path = write(tmp_path, "model: us2mri\nlr_g: 0.001\n")
    with pytest.raises(ConfigError, match=r"^--set lr_g.x: lr_g is not a section"):
        load_train(path, ["lr_g.x=1"])
    data = {"a": None}
    set_key(data, "a.b.c", 1)
    assert data == {"a": {"b": {"c": 1}}}
