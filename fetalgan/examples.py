"""The example sweeps and cluster scripts, for users who installed fetalgan with pip.

In a checkout they live at the repository root (``sweeps/*.yaml``, ``slurm/ray_cluster.sh``,
``mlflow/server.sh``), where the README and the tests use them. A wheel carries them as package
data under ``fetalgan/example_files/``, copied there by ``setup.py`` at build time from the list
below: the repository holds one copy of each, so nothing can drift. ``fetalgan examples DIR``
copies them into a working directory, keeping the layout the README's commands expect
(``sbatch slurm/ray_cluster.sh sweeps/smoke.yaml``).

Standard library only: ``setup.py`` loads this file by path, before fetalgan's dependencies
are installed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# Glob patterns relative to the repository root (and to the packaged copy).
EXAMPLES = ("sweeps/*.yaml", "slurm/ray_cluster.sh", "mlflow/server.sh")
PACKAGED = "example_files"  # folder inside the installed package that holds the copies


def example_files(root: str | Path) -> list[Path]:
    """The example files under ``root``, as sorted paths relative to it. A pattern that
    matches nothing is an error (a renamed script must not silently drop out of the wheel)."""
    root = Path(root)
    found = []
    for pattern in EXAMPLES:
        matches = sorted(p.relative_to(root) for p in root.glob(pattern) if p.is_file())
        if not matches:
            raise FileNotFoundError(f"{root}: no file matches {pattern}")
        found.extend(matches)
    return found


def examples_root() -> Path:
    """Where the examples are: the packaged copies of an installed wheel, else the root of the
    checkout this module was imported from (an editable install)."""
    package = Path(__file__).resolve().parent
    if (package / PACKAGED).is_dir():
        return package / PACKAGED
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "sweeps").is_dir():
        return checkout
    raise FileNotFoundError(
        f"fetalgan's example files are missing: neither {package / PACKAGED} nor a checkout "
        f"at {checkout}; reinstall fetalgan"
    )


def copy_examples(dest: str | Path, *, force: bool = False) -> list[Path]:
    """Copy the examples into ``dest`` (created if needed) under their relative paths; the
    written paths. Existing files are left alone and reported unless ``force``: nothing is
    copied then. Shell scripts are made executable."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"{dest}: exists and is not a folder; give a folder")
    root = examples_root()
    files = example_files(root)
    existing = [dest / rel for rel in files if (dest / rel).exists()]
    if existing and not force:
        shown = ", ".join(str(p) for p in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise ValueError(f"{shown}{more} already exist; nothing copied (--force overwrites them)")
    written = []
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, target)
        target.chmod(0o755 if target.suffix == ".sh" else 0o644)
        written.append(target)
    return written
