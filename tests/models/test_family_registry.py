"""A model family is one folder plus a registration: the test-only family ``tiny``
(``tests/models/tiny_family/``: a spec and a one-layer model) gets a config section that YAML
and ``--set`` accept and its spec validates, and trains through ``fetalgan.train.train``.

``TrainConfig`` takes its family sections from the registry once, when ``fetalgan.config`` is
first imported, so the family is registered in a fresh interpreter, before that import."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fetalgan.config import TRAIN_KEYS, TrainConfig, to_dict
from fetalgan.models import GENERATORS, MODEL_NAMES, REGISTRY, family, registry

TESTS = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import math
    from pathlib import Path

    from fetalgan.models import registry
    from tiny_family import SPEC

    registry.register(SPEC)  # before fetalgan.config builds TrainConfig

    import pytest
    from fetalgan.checks import ConfigError
    from fetalgan.config import TRAIN_KEYS, load_sweep, load_train, to_dict
    from fetalgan.models import GENERATORS, MODEL_NAMES, ema_decay, family
    from fetalgan.sweep.space import trial_config
    from fetalgan.train import train
    from tiny import tiny_train_config

    assert MODEL_NAMES[-1] == "tiny" and GENERATORS["tiny"] == ("generator",)
    assert {"tiny.hidden", "tiny.gain"} <= TRAIN_KEYS.keys()
    with pytest.raises(RuntimeError, match="before fetalgan.config is imported"):
        registry.register(SPEC)

    # YAML and --set
    path = Path("tiny.yaml")
    path.write_text("model: tiny\\ntiny:\\n  hidden: 3\\n")
    cfg = load_train(path, ["tiny.gain=0.5"])
    assert (cfg.model, cfg.tiny.hidden, cfg.tiny.gain) == ("tiny", 3, 0.5)
    assert ema_decay(cfg) == 0.0

    # validated: the section whatever the model, the model-specific check for tiny only
    with pytest.raises(ConfigError, match=r"tiny.yaml: tiny.hidden: must be > 0, got 0"):
        load_train(path, ["tiny.hidden=0"])
    with pytest.raises(ConfigError, match=r"tiny.hidden: must be > 0, got 0"):
        load_train(path, ["model=dcgan", "tiny.hidden=0"])
    with pytest.raises(ConfigError, match=r"tiny.gain: at most 10 for model tiny, got 20"):
        load_train(path, ["tiny.gain=20"])
    assert load_train(path, ["model=dcgan", "tiny.gain=20"]).tiny.gain == 20
    with pytest.raises(ConfigError, match=r"tiny.hiden: unknown key; expected one of hidden, gain"):
        load_train(path, ["tiny.hiden=1"])
    sweep = Path("sweep.yaml")  # a sweep over the section: every range bound is checked
    sweep.write_text("name: t\\nbase:\\n  model: tiny\\nspace:\\n  tiny.gain: {uniform: [0.5, 20]}\\n")
    with pytest.raises(ConfigError, match=r"space.tiny.gain.uniform\\[1\\]: tiny.gain: at most 10"):
        load_sweep(sweep)
    assert trial_config(to_dict(cfg), {"tiny.gain": 2.0}).tiny.gain == 2.0

    # trained one epoch on the phantom, evaluated, checkpointed
    cfg = tiny_train_config(Path("cache"), model="tiny", epochs=1, **{"tiny.gain": 0.5})
    out = train(cfg, run_dir=Path("run"), progress=False)
    assert out.epoch == 1 and all(math.isfinite(v) for v in out.losses.values())
    assert set(out.losses) == set(family("tiny").LOSS_NAMES)
    assert (Path("run") / "checkpoints" / "last.pt").is_file()
    print("TINY FAMILY OK")
    """
)


def test_a_registered_family_is_configured_validated_and_trained(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS.parent), str(TESTS), str(TESTS / "models"), env.get("PYTHONPATH", "")]
    )
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "TINY FAMILY OK" in done.stdout


def test_the_builtin_families_are_registered_in_order():
    assert MODEL_NAMES == ("dcgan", "ddpm", "tbgan", "dsrgan", "us2mri", "cyclegan")
    assert GENERATORS == {
        "dcgan": ("generator",),
        "ddpm": ("unet",),
        "tbgan": ("generator",),
        "dsrgan": ("unet", "sr_generator"),
    }  # the translators have no EMA and no final selection
    assert REGISTRY["ddpm"] == "fetalgan.models.ddpm.model"
    sections = [name for name in to_dict(TrainConfig()) if name in MODEL_NAMES]
    assert sections == ["ddpm", "tbgan", "dsrgan", "us2mri", "cyclegan"]  # dcgan has none
    assert "target_data.size" in TRAIN_KEYS  # there is a translator
    for name in MODEL_NAMES:
        spec = registry.spec(name)
        assert spec.real_resolution(TrainConfig(resolution=32)) == (64 if name == "dsrgan" else 32)
        assert spec.target_domain == (name in ("us2mri", "cyclegan"))


def test_registering_after_the_config_is_built_is_refused():
    spec = registry.FamilySpec(name="late", module="late.model")
    with pytest.raises(RuntimeError, match="register it before fetalgan.config is imported"):
        registry.register(spec)
    assert "late" not in MODEL_NAMES
    with pytest.raises(ValueError, match="model: unknown model 'late'"):
        family("late")


def test_the_specs_import_no_torch():
    code = (
        "import sys, fetalgan.config, fetalgan.models, fetalgan.models.registry as r; "
        "r.specs(); assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=TESTS.parent)
