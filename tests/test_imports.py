"""Imports point one way: no module imports the package root, the emulator imports
neither the client nor the scanner, and no two modules import each other round a cycle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fleetscan"
# Cycles that exist and are being removed elsewhere; an entry here that no longer
# matches a cycle fails the test, so the list cannot go stale.
KNOWN_CYCLES = {frozenset({"fleetscan.credentials", "fleetscan.credential_fetchers"})}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    """The fleetscan modules ``name`` imports, anywhere in it (lazy ones too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                ).rstrip(".")
            # ``from pkg import mod`` names a module; ``from mod import name`` does not.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        yield from (t for t in targets if t in MODULES and t != name)


GRAPH = {name: set(_imports(name, path)) for name, path in MODULES.items()}


def _cycles() -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_the_package_root() -> None:
    offenders = sorted(name for name, targets in GRAPH.items() if "fleetscan" in targets)
    assert offenders == []


def test_the_emulator_imports_neither_the_client_nor_the_scan() -> None:
    forbidden = ("fleetscan.client", "fleetscan.scanner", "fleetscan.cli")
    offenders = sorted(
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        if name.startswith("fleetscan.emulator")
        for target in targets
        if target.startswith(forbidden)
    )
    assert offenders == []


def test_no_import_cycle() -> None:
    assert set(_cycles()) == KNOWN_CYCLES
