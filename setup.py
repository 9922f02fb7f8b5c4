"""Build step beyond pyproject.toml: the example sweeps and cluster scripts go into the wheel.

They stay at the repository root (README and tests use them there); at build time they are
copied into ``fetalgan/example_files/`` of the build tree, from the list in
``fetalgan/examples.py`` (loaded by path: fetalgan's dependencies are not installed yet).
An editable install copies nothing: ``fetalgan examples`` reads the checkout instead.
MANIFEST.in puts the same files into the sdist, so a wheel built from it has them too.
"""

import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _examples_module():
    spec = importlib.util.spec_from_file_location(
        "_fetalgan_examples", ROOT / "fetalgan" / "examples.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithExamples(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        examples = _examples_module()
        target = Path(self.build_lib) / "fetalgan" / examples.PACKAGED
        shutil.rmtree(target, ignore_errors=True)
        for rel in examples.example_files(ROOT):
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / rel, target / rel)


setup(cmdclass={"build_py": BuildPyWithExamples})
