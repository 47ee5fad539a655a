"""The import graph of bench/ and providers/ has no cycle, and nothing imports bench.cli.

Every ``import`` and ``from ... import`` counts, wherever it is written: at module level,
under ``if TYPE_CHECKING:`` (a type-only cycle says a type lives in the wrong module) and
inside functions (a deferred import hides a cycle without removing it). Importing
``a.b.c`` from outside package ``a.b`` also runs ``a/b/__init__.py`` first, so it counts as an
import of that package too (and of ``a``); from inside the package it does not (a package's
``__init__`` importing its own modules is how packages work). Modules named by strings and
imported with ``importlib`` at run time (the provider registry, report sections, workloads'
report parts) are not edges: they are resolved after every module has loaded.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "providers")
#: The command line is the top of the program: only the ``python -m bench`` entry point and the
#: console script (pyproject.toml) may import it.
ENTRY_POINTS = frozenset({"bench.__main__"})


def module_names(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Module name -> file, for every .py file of ``packages`` under ``root``."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return name in modules and modules[name].name == "__init__.py"


def imports_of(name: str, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that importing ``name`` imports (see the module docstring)."""
    path = modules[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if _is_package(name, modules) else name.rpartition(".")[0]
    named: set[str] = set()  # what the statements name: imported for sure
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            submodules = [f"{source}.{alias.name}" for alias in node.names]
            # ``from a.b import c`` imports module a.b.c when there is one; a name that is not
            # a module is read from a.b itself.
            named.update(m for m in submodules if m in modules)
            if any(m not in modules for m in submodules):
                named.add(source)
    edges = set()
    for target in named:
        if target in modules and target != name:
            edges.add(target)
        # Importing a module runs its packages' __init__ first, unless the importer is inside.
        parts = target.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            inside = name == parent or name.startswith(parent + ".")
            if _is_package(parent, modules) and not inside:
                edges.add(parent)
    return edges


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    modules = module_names(root, packages)
    return {name: imports_of(name, modules) for name in modules}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each as a cycle path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
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
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_through(sorted(g), graph) for g in groups]


def _path_through(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One cycle inside a strongly connected group, as a -> b -> ... -> a (for the message)."""
    members = set(group)
    start = group[0]
    path, seen = [start], {start}
    node = start
    while True:
        nxt = sorted(n for n in graph[node] if n in members)
        step = next((n for n in nxt if n == start and len(path) > 1), None) or next(
            (n for n in nxt if n not in seen), None
        )
        if step is None or step == start:
            return [*path, start]
        path.append(step)
        seen.add(step)
        node = step


def test_bench_and_providers_import_without_cycles():
    found = cycles(import_graph(ROOT, PACKAGES))
    assert found == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_nothing_imports_the_command_line():
    graph = import_graph(ROOT, PACKAGES)
    importers = sorted(n for n, edges in graph.items() if "bench.cli" in edges)
    assert [n for n in importers if n not in ENTRY_POINTS] == []


def test_providers_never_import_bench():
    graph = import_graph(ROOT, PACKAGES)
    leaks = sorted(
        f"{n} -> {t}" for n, edges in graph.items() if n.startswith("providers") for t in edges
        if t.split(".")[0] == "bench"
    )  # fmt: skip
    assert leaks == []


# -- the checker itself finds what it must ------------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return import_graph(tmp_path, ("pkg",))


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        (  # a type-only cycle
            {
                "pkg/__init__.py": "",
                "pkg/a.py": "from pkg.b import B\n",
                "pkg/b.py": "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from pkg.a import A\n",
            },
            ["pkg.a", "pkg.b", "pkg.a"],
        ),
        (  # a cycle through an import inside a function
            {
                "pkg/__init__.py": "",
                "pkg/a.py": "import pkg.b\n",
                "pkg/b.py": "def f():\n    from pkg import a\n",
            },
            ["pkg.a", "pkg.b", "pkg.a"],
        ),
        (  # importing a sub-module runs its package's __init__, which imports back
            {
                "pkg/__init__.py": "",
                "pkg/sub/__init__.py": "from pkg.sub.x import X\n",
                "pkg/sub/x.py": "from pkg.c import C\n",
                "pkg/c.py": "from pkg.sub.y import Y\n",
                "pkg/sub/y.py": "",
            },
            ["pkg.c", "pkg.sub", "pkg.sub.x", "pkg.c"],
        ),
        (  # relative imports resolve against the importer's package
            {
                "pkg/__init__.py": "",
                "pkg/a.py": "from . import b\n",
                "pkg/b.py": "from .a import thing\n",
            },
            ["pkg.a", "pkg.b", "pkg.a"],
        ),
        (  # a name read from the package's own __init__, from inside the package
            {
                "pkg/__init__.py": "from pkg.a import A\nB = 1\n",
                "pkg/a.py": "from pkg import B\n",
            },
            ["pkg", "pkg.a", "pkg"],
        ),
    ],
)
def test_the_checker_finds_cycles_of_every_kind(tmp_path, files, cycle):
    assert cycles(_package(tmp_path, files)) == [cycle]


def test_a_package_importing_its_own_modules_is_not_a_cycle(tmp_path):
    graph = _package(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import A\nfrom pkg.b import B\n",
            "pkg/a.py": "from pkg.b import B\n",
            "pkg/b.py": "import json\n",
        },
    )
    assert cycles(graph) == []
    assert graph["pkg.a"] == {"pkg.b"}


def test_a_sibling_module_imported_through_its_package_is_not_a_cycle(tmp_path):
    graph = _package(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import A\n",
            "pkg/a.py": "from pkg import b\n",
            "pkg/b.py": "",
        },
    )
    assert cycles(graph) == []
    assert graph["pkg.a"] == {"pkg.b"}
