"""Optional features and the pip extra (pyproject.toml's optional-dependencies) each needs.

An optional import that fails says which extra brings it, e.g. ``fetalgan study serve needs
the Python package 'flask', which is not installed: pip install 'fetalgan[study]'``.
"""

from __future__ import annotations


def install_hint(extra: str) -> str:
    """The command that installs ``extra``: ``pip install 'fetalgan[EXTRA]'``."""
    return f"pip install 'fetalgan[{extra}]'"


def missing(module: str, extra: str, feature: str) -> ModuleNotFoundError:
    """The error for ``feature`` when ``module`` (of ``extra``) is not installed."""
    return ModuleNotFoundError(
        f"{feature} needs the Python package {module!r}, which is not installed: "
        f"{install_hint(extra)}",
        name=module,
    )
