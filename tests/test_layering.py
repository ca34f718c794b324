"""The rooms' one-way arrows (design.md, Layout): driver -> targets -> passes -> core, and no package cycle.

Every import of every module is read with `ast`, imports inside functions included, so a lazy import cannot
hide an arrow that points the wrong way.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"fusionc.passes": "passes", "fusionc.targets": "targets", "fusionc": "compiler"}
# room -> the rooms it may import (itself included)
ALLOWED = {
    "core": {"core"},
    "passes": {"core", "passes"},
    "targets": {"core", "passes", "targets"},
}


def module_name(path: Path) -> tuple[str, bool]:
    """(dotted module name, is a package __init__) of a source file."""
    rel = path.relative_to(REPO)
    for package, folder in ROOTS.items():
        if rel.parts[0] == folder:
            parts = list(rel.with_suffix("").parts[1:])
            is_package = parts[-1:] == ["__init__"]
            return ".".join([package] + (parts[:-1] if is_package else parts)), is_package
    raise ValueError(path)


PACKAGES: set[str] = set()


def project_imports() -> dict[str, set[str]]:
    """module -> the fusionc modules it imports (`from fusionc.x import y` counts fusionc.x.y when it is a module)."""
    modules = {}
    for folder in ROOTS.values():
        for path in (REPO / folder).rglob("*.py"):
            if "tiny_sd" not in path.parts:
                modules[module_name(path)] = path
    names = {name for name, _ in modules}
    PACKAGES.update(name for name, is_package in modules if is_package)
    edges: dict[str, set[str]] = defaultdict(set)
    for (name, is_package), path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in names else node.module
                           for a in node.names]
            edges[name] |= {t for t in targets if t.split(".")[0] == "fusionc" and t != name}
    return edges


def room(module: str) -> str:
    parts = module.split(".")
    if parts[1:2] == ["core"]:
        return "core"
    if parts[1:2] in (["passes"], ["targets"]):
        return parts[1]
    return "driver"


def package_of(module: str) -> str:
    return module if module in PACKAGES else module.rsplit(".", 1)[0]


EDGES = project_imports()


@pytest.mark.parametrize("source_room", sorted(ALLOWED))
def test_rooms_import_only_what_they_may(source_room: str) -> None:
    wrong = sorted(f"{m} -> {t}" for m, targets in EDGES.items() if room(m) == source_room
                   for t in targets if room(t) not in ALLOWED[source_room])
    assert not wrong, f"{source_room} may import only {sorted(ALLOWED[source_room])}:\n" + "\n".join(wrong)


def test_no_package_import_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in EDGES.items():
        for target in targets:
            if package_of(target) != package_of(module):
                graph[package_of(module)].add(package_of(target))
    cycles = _cycles(graph)
    assert not cycles, "package import cycles:\n" + "\n".join(" <-> ".join(sorted(c)) for c in cycles)


def test_no_module_import_cycle() -> None:
    cycles = _cycles(EDGES)
    assert not cycles, "module import cycles:\n" + "\n".join(" <-> ".join(sorted(c)) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.add(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_the_check_sees_a_wrong_arrow() -> None:
    """The test itself: a pass that imported the driver would be caught."""
    assert room("fusionc.pipeline") == "driver" and "driver" not in ALLOWED["passes"]
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [{"a", "b"}]


def test_every_package_is_in_the_wheel() -> None:
    """pyproject lists packages explicitly (package-dir maps three folders): a new subpackage must be listed, or an
    editable install works while a wheel silently lacks it."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert PACKAGES - listed == set(), f"add to [tool.setuptools] packages: {sorted(PACKAGES - listed)}"
