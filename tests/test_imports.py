"""Imports point one way: no module of fleetscan imports, directly or through others,
a module that imports it back.

Every import counts, at module level or in a function, under ``TYPE_CHECKING`` or not:
a function-level import that closes a cycle is a cycle that only waits for someone to
move it to the top. Importing ``a.b.c`` runs the packages ``a`` and ``a.b`` first,
but that is not an edge here (a package's ``__init__`` re-exporting its modules would
otherwise close a loop with each of them); ``import a.b`` or ``from a.b import name``
of a package, named explicitly, is one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fleetscan"

# Imports that close a cycle today and are being removed elsewhere, as (importer,
# imported). Remove an entry when its import is gone (the test says so).
KNOWN: set[tuple[str, str]] = {
    # `__version__` imported back from the package root (a module of its own fixes it).
    ("fleetscan.client", "fleetscan"),
    ("fleetscan.cli", "fleetscan"),
    # The fetchers need the value type the chain module defines (a leaf type fixes it).
    ("fleetscan.credential_fetchers", "fleetscan.credentials"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def cycles(edges: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_the_checker_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset("abc")}
    assert cycles({"a": {"b"}, "b": set()}) == set()


def test_the_engine_is_imported_by_entry_points_only() -> None:
    edges = graph()
    importers = {
        m for m, deps in edges.items() if any(d.startswith("fleetscan.engine") for d in deps)
    }
    outside = {m for m in importers if not m.startswith("fleetscan.engine")}
    assert outside == {"fleetscan", "fleetscan.cli"}


def test_no_import_cycle_beyond_the_known_ones() -> None:
    edges = graph()
    present = {(a, b) for a, deps in edges.items() for b in deps}
    assert KNOWN - present == set(), "a known import is gone: remove it from KNOWN"
    for importer, imported in KNOWN:
        edges[importer].discard(imported)
    assert cycles(edges) == set()
