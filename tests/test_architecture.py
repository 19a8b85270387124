"""The house rules of docs/architecture.md, checked on the source: no import cycle, small modules, one room per concern.

The import graph is read with the standard library's ``ast`` (nothing is imported), once for module-level imports
and once counting the imports inside functions too: a lazy import that closes a circle is still a circle for a
reader. A package's own ``__init__`` importing its children is not an edge back from the children.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "methods")
MAX_LINES = 500
STATUS_VALUES = {"queued", "running", "done", "failed", "diverged", "interrupted"}


@cache
def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(path: Path, name: str, *, lazy: bool) -> set[str]:
    """Project modules ``path`` imports (``lazy``: also inside functions); TYPE_CHECKING blocks never count."""
    known = modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if lazy:
                    visit(node.body)
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    visit([c for c in children if isinstance(c, (ast.stmt, ast.ExceptHandler))])

    tree = ast.parse(path.read_text())
    visit(tree.body)
    return {m for m in found if m in known and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
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
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("lazy", [False, True], ids=["module-level", "with-lazy-imports"])
def test_no_import_cycle_between_modules(lazy):
    graph = {name: _imports(path, name, lazy=lazy) for name, path in modules().items()}
    # A package's __init__ gathering its children is how a package is made, not an edge back from them.
    for name in graph:
        graph[name] = {m for m in graph[name] if not (name.startswith(m + ".") and modules()[m].name == "__init__.py")}
    assert _cycles(graph) == []


def test_no_module_over_the_size_limit():
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_only_the_results_room_touches_the_database():
    """No reader outside bench/results/ opens the ORM: SQLAlchemy and the schema stay behind bench.results."""
    offenders = {}
    for name, path in modules().items():
        if name.startswith("bench.results"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for imported in names:
                if imported.startswith("sqlalchemy") or imported.startswith("bench.results.schema"):
                    offenders.setdefault(name, []).append(imported)
    assert offenders == {}


def test_status_values_are_spelled_only_in_bench_cell():
    """``Status`` is the one place a cell status is spelled (report labels go through it too)."""
    found = []
    for name, path in modules().items():
        if name == "bench.cell":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in STATUS_VALUES:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert found == []


def test_the_light_modules_stay_light():
    """Hashing a cell and reading its status import neither torch nor SQLAlchemy nor pandas (a fresh interpreter)."""
    code = ("import sys, bench.cell, bench.accel_keys, bench.cli; "
            "print(sorted(m for m in ('torch', 'sqlalchemy', 'pandas', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
