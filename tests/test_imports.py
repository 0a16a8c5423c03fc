"""Imports point one way: no cycle inside fleetscan/, no module imports the package
root, and the emulator imports neither the client nor the scan.

The graph is read with ast from every fleetscan/**/*.py: every import that can run,
at import time or, deferred into a function, at its first call (the cycle this test
was written for, credentials <-> credential_fetchers, hid in a deferred import); not
``if TYPE_CHECKING:`` blocks, which never run. ``from x
import y`` counts as an import of ``x.y`` when that is a module. Importing ``a.b.c``
also runs ``a/__init__`` and ``a/b/__init__``, so those are edges too, except from a
module inside that package (its package is already being imported then).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fleetscan"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the package ``root``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _run_at_import(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _run_at_import(node.body)
            yield from _run_at_import(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _run_at_import(block)
            for handler in node.handlers:
                yield from _run_at_import(handler.body)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from _run_at_import(node.body)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            # Deferred imports run on the first call: a cycle hidden there is one still.
            yield from _run_at_import(node.body)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules its import runs."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _run_at_import(tree.body):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    here = name.split(".") if is_package else name.split(".")[:-1]
                    here = here[: len(here) - (node.level - 1)]
                    base = ".".join([*here, base] if base else here)
                targets = [base]
                targets += [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
            for target in targets:
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    step = ".".join(parts[:i])
                    inside = name == step or name.startswith(step + ".")
                    if step in modules and not inside:
                        graph[name].add(step)
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_fleetscan_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE)
    # The reading works: known edges are there (a graph of nothing has no cycle either).
    assert "fleetscan.credentials" in graph["fleetscan.client.connection"]
    assert "fleetscan.credentials.value" in graph["fleetscan.credentials.fetchers"]
    assert cycles(graph) == []


def test_the_cycle_of_old_is_one_the_check_finds(tmp_path: Path) -> None:
    # The shape of credentials.py <-> credential_fetchers.py before the package.
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "credentials.py": "from pkg.credential_fetchers import fetch\nclass Credentials: ...\n",
            "credential_fetchers.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from pkg.credentials import Credentials\n"
                "def fetch():\n    from pkg.credentials import Credentials\n"
            ),
        },
    )
    assert cycles(import_graph(root)) == [["pkg.credential_fetchers", "pkg.credentials"]]


def test_the_credentials_value_type_is_a_leaf() -> None:
    graph = import_graph(PACKAGE)
    assert graph["fleetscan.credentials.value"] == set()


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_the_check_finds_cycles_of_each_kind(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from pkg import b\n",  # a submodule by `from package import module`
            "b.py": "import pkg.a\n",
            "c.py": "def f():\n    import pkg.d\n",  # deferred, a cycle still
            "d.py": "import pkg.c\n",
            "e.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.f\n",
            "f.py": "import pkg.e\n",
            "sub/__init__.py": "from pkg.sub.inner import X\n",
            "sub/inner.py": "from pkg.sub import other\nX = 1\n",  # inside its package: fine
            "sub/other.py": "",
            "g.py": "from pkg.sub.inner import X\n",  # runs pkg/sub/__init__ ...
            "sub/late.py": "",
        },
    )
    (root / "sub" / "other.py").write_text("from . import late\nimport pkg.h\n")
    (root / "h.py").write_text("import pkg.g\n")  # ... which reaches g again
    graph = import_graph(root)
    found = cycles(graph)
    assert ["pkg.a", "pkg.b"] in found
    assert ["pkg.c", "pkg.d"] in found
    assert not any("pkg.e" in group for group in found)
    assert ["pkg.g", "pkg.h", "pkg.sub", "pkg.sub.inner", "pkg.sub.other"] in found
    assert "pkg.sub.late" in graph["pkg.sub.other"]  # relative imports are read


def test_no_module_imports_the_package_root() -> None:
    graph = import_graph(PACKAGE)
    offenders = sorted(name for name, targets in graph.items() if "fleetscan" in targets)
    assert offenders == []


def test_the_emulator_imports_neither_the_client_nor_the_scan() -> None:
    graph = import_graph(PACKAGE)
    forbidden = {"fleetscan.client", "fleetscan.scan", "fleetscan.scanner", "fleetscan.cli"}
    offenders = sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        if name.startswith("fleetscan.emulator.")
        for target in targets
        if ".".join(target.split(".")[:2]) in forbidden
    )
    assert offenders == []
