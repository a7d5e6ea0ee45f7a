"""The package's shape: layering rules that keep the numerical core free of Dask and zarr,
an import graph without circles, and an ``import daskie`` that does no work."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "daskie"
CORE = ("problems", "formulations", "nn", "train", "plan", "reference")
FORBIDDEN = ("dask", "distributed", "zarr", "bokeh", "xarray")


def _module(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports (at any depth of the file, lazy imports included)."""
    tree = TREES[path]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


MODULES = {_module(p): p for p in ROOT.rglob("*.py")}
# Parsed once, at collection, for both tests below (the lock in conftest.py guards ast.parse
# against the threads of in-process clusters, python/cpython#106905).
TREES = {p: ast.parse(p.read_text()) for p in MODULES.values()}


@pytest.mark.parametrize("package", CORE)
def test_core_packages_import_no_dask_zarr_or_bokeh(package):
    for name, path in MODULES.items():
        if name == f"daskie.{package}" or name.startswith(f"daskie.{package}."):
            bad = {m for m in _imports(path) if m.split(".")[0] in FORBIDDEN}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_only_the_store_imports_zarr():
    for name, path in MODULES.items():
        if not name.startswith("daskie.store"):
            assert not {m for m in _imports(path) if m.split(".")[0] == "zarr"}, name


def test_the_import_graph_has_no_circle():
    # module-level imports only: those run at import time and can form a circle
    graph = {}
    for name, path in MODULES.items():
        tree = TREES[path]
        deps = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("daskie"):
                deps |= {m for m in (node.module, *[f"{node.module}.{a.name}" for a in node.names])
                         if m in MODULES}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in MODULES}
        # a package's own __init__ importing its submodules is not a circle through it
        graph[name] = {d for d in deps if d != name}
    # a package's __init__ importing its own submodules is not a circle through it
    _assert_no_cycle({n: {d for d in deps if not d.startswith(n + ".")} for n, deps in graph.items()},
                     "import circle")


def _assert_no_cycle(graph: dict, what: str) -> None:
    """Fail naming the first cycle of ``graph`` (``{node: dependencies}``), if it has one."""
    state: dict = {}

    def visit(node, stack):
        state[node] = "open"
        for dep in graph.get(node, ()):
            if state.get(dep) == "open":
                raise AssertionError(f"{what}: " + " -> ".join([*stack, node, dep]))
            if dep not in state:
                visit(dep, [*stack, node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_strategies_hold_specs_only():
    # execution lives in daskie.runtime: no strategy module submits, gathers or scatters
    for name, path in MODULES.items():
        if name.startswith("daskie.strategies"):
            text = path.read_text()
            for word in (".submit(", ".gather(", ".scatter(", "client"):
                assert word not in text, f"{name} mentions {word!r}"
            assert len(text.splitlines()) < 400, f"{name} is not a small spec module"


def test_no_module_below_the_entry_points_compares_client_to_a_string():
    entry = {"daskie.session", "daskie.cli", "daskie.runtime.executor"}
    for name, path in MODULES.items():
        if name not in entry:
            assert '== "sync"' not in path.read_text() and "!= \"sync\"" not in path.read_text(), name


def test_import_daskie_starts_nothing_and_imports_no_torch_or_dask():
    code = ("import sys, daskie; heavy = [m for m in ('torch', 'dask', 'distributed', 'zarr', "
            "'bokeh', 'xarray') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the package graph, imports inside functions included (issue 25) -------------------------
#: The layers of docs/architecture.md, lowest first: a package imports only packages of its
#: own layer or below, at any depth of its files (lazy imports inside functions included).
LAYERS = (
    ("daskie.errors", "daskie.records", "daskie.config"),
    ("daskie.quadrature", "daskie.nn", "daskie.reference", "daskie.problems",
     "daskie.formulations", "daskie.train", "daskie.plan", "daskie.assess", "daskie.estimate",
     "daskie.collectives"),
    ("daskie.store",),
    ("daskie.report", "daskie.dashboard"),
    ("daskie.runtime",),
    ("daskie.strategies", "daskie.cluster"),
    ("daskie.session", "daskie.parallel_in_time", "daskie.metrics"),
    ("daskie.operator",),
    ("daskie.api", "daskie.fit"),
    ("daskie.cli",),
)
LEVEL = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _package_edges() -> dict:
    """``{package: {imported package: [importing modules]}}`` over every import in the tree."""
    edges: dict = {}
    for name, path in MODULES.items():
        if name == "daskie":
            continue  # the root's lazy names: it sits above everything
        for node in ast.walk(TREES[path]):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "daskie":  # from daskie import config: the module daskie.config
                    targets = [f"daskie.{a.name}" if f"daskie.{a.name}" in MODULES else "daskie"
                               for a in node.names]
                else:
                    targets = [node.module]
            for target in targets:
                if target == "daskie" or target.startswith("daskie."):
                    src, dst = _package(name), _package(target)
                    if src != dst:
                        edges.setdefault(src, {}).setdefault(dst, []).append(name)
    return edges


def test_every_package_has_a_layer():
    packages = {_package(name) for name in MODULES if name != "daskie"}
    assert packages == set(LEVEL), f"not in LAYERS: {sorted(packages - set(LEVEL))}"


def test_packages_import_only_their_layer_and_below():
    bad = [f"{src} -> {dst} (in {sorted(set(mods))})"
           for src, deps in _package_edges().items() for dst, mods in deps.items()
           if dst == "daskie" or LEVEL[dst] > LEVEL[src]]
    assert not bad, "imports upwards: " + "; ".join(bad)


def test_the_package_graph_has_no_cycle_even_through_lazy_imports():
    _assert_no_cycle(_package_edges(), "package cycle")


def test_nothing_imports_the_api_but_the_cli():
    importers = _package_edges()
    users = {src for src, deps in importers.items() if "daskie.api" in deps}
    assert users <= {"daskie.cli"}, sorted(users)
