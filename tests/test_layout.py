"""The package's layering, read from its source: no import circle (function-local imports
included), model families and metrics not reaching into the data layer or the config, Ray
imported only in ``sweep/`` and MLflow only in ``tracking/``."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fetalgan"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (top level or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _fetalgan_edges() -> dict[str, set[str]]:
    """Module -> the fetalgan modules it imports (a package's own parent or children are
    not edges: importing ``a.b`` runs ``a`` first by Python's rules)."""

    def resolve(target: str) -> str | None:
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        return target or None

    edges = {}
    for name, path in MODULES.items():
        targets = {resolve(t) for t in _imports(path) if t.startswith("fetalgan")}
        edges[name] = {
            t
            for t in targets
            if t
            and t not in ("fetalgan", name)
            and not t.startswith(name + ".")
            and not name.startswith(t + ".")
        }
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_circle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package():
    edges = _fetalgan_edges()
    assert len(edges) > 80  # the whole package was read
    assert _cycles(edges) == []


def _importers(prefix: str) -> set[str]:
    return {
        name
        for name, path in MODULES.items()
        if any(t == prefix or t.startswith(prefix + ".") for t in _imports(path))
    }


def test_layers_reach_only_downwards():
    edges = _fetalgan_edges()
    for name, targets in edges.items():
        if name.startswith("fetalgan.models."):  # a family declares inputs; data provides them
            assert not any(t.startswith("fetalgan.data") for t in targets), (name, targets)
        if name.startswith("fetalgan.metrics"):  # pure metrics: told where caches are
            bad = {t for t in targets if t.startswith(("fetalgan.data", "fetalgan.config"))}
            assert not bad, (name, bad)
    for leaf in ("fetalgan.metric_names", "fetalgan.checks"):
        assert edges[leaf] == set(), leaf


def test_ray_only_in_sweep_and_mlflow_only_in_tracking():
    assert _importers("ray") and all(n.startswith("fetalgan.sweep") for n in _importers("ray"))
    mlflow = _importers("mlflow")
    assert mlflow and all(n.startswith("fetalgan.tracking") for n in mlflow), mlflow
