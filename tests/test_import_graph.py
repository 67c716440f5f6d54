"""The project's module-level import graph has no cycles, and its layers point one way.

Built statically (``ast``), so it needs none of the imported packages: an edge is an
``import``/``from ... import`` of a project module executed when the module loads (class
bodies, ``try`` and ``if`` blocks included). Imports inside functions are deliberate lazy
imports (start-up cost, optional stacks) and ``if TYPE_CHECKING:`` blocks never run: neither
counts. A package's ``__init__`` is an edge only when it is the module named (``from store
import migrate`` names ``store.migrate``; ``from api.web import router`` names ``api.web``),
not for every submodule beneath it, which Python loads first without a cycle.

A second check adds the lazy imports back: none may close a cycle either, so a circle is
broken by moving what both sides need, never by tucking one import into a function.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "cli", "client", "nas_core", "store", "worker")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[_module_name(path)] = path
    return found


MODULES = _modules()


@dataclass(frozen=True)
class Import:
    target: str
    line: int
    lazy: bool  # inside a function: runs when called, not when the module loads


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The project modules an import statement loads by name."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in MODULES}
    source = _absolute(module, node)
    found = set()
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        if submodule in MODULES:
            found.add(submodule)
        elif source in MODULES:
            found.add(source)
    return found


def _walk(module: str, body: list[ast.stmt], lazy: bool) -> Iterator[Import]:
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield from (Import(t, node.lineno, lazy) for t in sorted(_targets(module, node)))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _walk(module, node.body, True)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(module, node.orelse, lazy)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, field, None) or []
                for child in children:
                    if isinstance(child, (ast.ExceptHandler, ast.match_case)):
                        yield from _walk(module, child.body, lazy)
                if children and isinstance(children[0], ast.stmt):
                    yield from _walk(module, children, lazy)


def _imports(module: str) -> list[Import]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"), filename=str(MODULES[module]))
    return [i for i in _walk(module, tree.body, False) if i.target != module]


IMPORTS = {module: _imports(module) for module in MODULES}
GRAPH = {module: sorted({i.target for i in found if not i.lazy}) for module, found in IMPORTS.items()}
WITH_LAZY = {module: sorted({i.target for i in found}) for module, found in IMPORTS.items()}


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def _shortest_cycle(graph: dict[str, list[str]], members: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, as ``a -> b -> a``."""
    inside = set(members)
    start = members[0]
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in graph[node]:
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if child in inside and child not in came_from:
                came_from[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def _describe(cycle: list[str]) -> str:
    hops = []
    for source, target in pairwise(cycle):
        first = min((i for i in IMPORTS[source] if i.target == target), key=lambda i: (i.lazy, i.line))
        where = " (inside a function)" if first.lazy else ""
        hops.append(f"  {MODULES[source].relative_to(ROOT)}:{first.line} imports {target}{where}")
    return " -> ".join(cycle) + "\n" + "\n".join(hops)


def _cycles(graph: dict[str, list[str]]) -> list[str]:
    return [_describe(_shortest_cycle(graph, members)) for members in _strongly_connected(graph)]


PARSED = """
from typing import TYPE_CHECKING
import store.models, json
from store import migrate
from api.errors import NotFound, ApiError
from . import deps
from .routes import health
if TYPE_CHECKING:
    from worker import app
else:
    import store.db
try:
    import store.jobs
except ImportError:
    import store.users
class Holder:
    import store.types
def later():
    from worker import dispatch
"""


def test_what_counts_as_an_import() -> None:
    """Guards the parser on a known text (as if it were ``api/main.py``)."""
    found = {(i.target, i.lazy) for i in _walk("api.main", ast.parse(PARSED).body, False)}
    assert found == {
        ("store.models", False), ("store.migrate", False), ("api.errors", False), ("api.deps", False),
        ("api.routes.health", False), ("store.db", False), ("store.jobs", False), ("store.users", False),
        ("store.types", False), ("worker.dispatch", True),
    }


def test_the_graph_sees_the_project() -> None:
    """A graph that found no edges would pass the cycle check vacuously."""
    assert {"api.main", "worker.app", "store.models", "nas_core.search", "cli.main", "client"} <= set(MODULES)
    assert "api.deps" in GRAPH["api.routes.jobs"]
    assert "store.models" in GRAPH["worker.dispatch"]
    assert "store.migrate" in GRAPH["api.state"]  # `from store import migrate`: the submodule
    assert "worker.dispatch" in WITH_LAZY["api.queue"] and "worker.dispatch" not in GRAPH["api.queue"]


def test_no_import_cycles() -> None:
    cycles = _cycles(GRAPH)
    assert not cycles, (
        "module-level import cycles (move what both need to the module they share; import inside a function "
        "only for start-up cost):\n" + "\n".join(cycles))


def test_no_lazy_import_hides_a_cycle() -> None:
    """An import moved into a function to break a circle leaves the circle in the design: none do.

    Lazy imports are for start-up cost (``torch``, Celery, the readers) and so point the same
    way as the module-level ones; one that closed a circle would show here.
    """
    cycles = _cycles(WITH_LAZY)
    assert not cycles, "import cycles hidden inside functions:\n" + "\n".join(cycles)


# What each package may import when it loads, one way down: nas_core (the ML library) at the bottom,
# store on it, the API and the workers beside each other on both, the command line on top.
LAYERS = {
    "nas_core": set(),
    "store": {"nas_core"},
    "api": {"store", "nas_core"},  # worker.dispatch only on first use (api.queue.CeleryQueue)
    "worker": {"store", "nas_core"},
    "client": set(),
    "cli": {"client", "nas_core", "store", "worker", "api"},
}


def _crossings(package: str, *, lazy_too: bool) -> list[str]:
    return [
        f"{MODULES[module].relative_to(ROOT)}:{i.line} imports {i.target}"
        for module, found in IMPORTS.items() if module.split(".")[0] == package
        for i in found if (lazy_too or not i.lazy)
        and i.target.split(".")[0] not in LAYERS[package] | {package}
    ]


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_layers_point_one_way(package: str) -> None:
    """In particular the API imports no worker module at load: it starts without Celery."""
    assert _crossings(package, lazy_too=False) == []


def test_nas_core_imports_nothing_of_the_service() -> None:
    """The ML library runs on its own: not even a lazy import of api, worker, store, cli or client."""
    assert _crossings("nas_core", lazy_too=True) == []
