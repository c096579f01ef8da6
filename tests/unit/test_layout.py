"""berth's module layout, read from the source with ``ast`` (nothing is imported).

* no import circle among berth's modules, counting every import statement wherever it stands:
  at the top, under ``if TYPE_CHECKING:``, inside a function;
* no module outside a sub-package of ``berth/worker/`` or ``berth/deployers/`` names one of
  that sub-package's private modules (a name with a ``_`` component below the sub-package);
* the root of ``berth/worker/`` holds at most eight modules.

An edge A -> B is an import in A of the berth module B: ``import berth.x.y`` names
``berth.x.y``; ``from berth.x import y`` names ``berth.x.y`` when that is a module, else
``berth.x``; relative imports are resolved first. Importing ``berth.x.y`` adds no edge to
``berth.x`` (Python runs that ``__init__`` too, but that is not what this layout checks).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import berth

BERTH = Path(berth.__file__).parent

#: Import circles present today, each as its sorted module names. The list may only shrink:
#: a circle not listed fails, and so does a listed one that no longer exists.
KNOWN_CYCLES: frozenset[tuple[str, ...]] = frozenset()

#: The packages whose sub-packages keep their private modules to themselves.
PRIVATE_SCOPES = ("berth/worker", "berth/deployers")
WORKER_ROOT_LIMIT = 8


def module_name(path: Path) -> str:
    """``berth/a/b.py`` -> ``berth.a.b``; ``berth/a/__init__.py`` -> ``berth.a``."""
    parts = list(path.relative_to(BERTH.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def berth_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(BERTH.rglob("*.py"))}


def _imported_names(tree: ast.AST, name: str, is_package: bool) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(base module, imported names) of every import in ``tree``, relative ones resolved;
    ``import a.b`` yields (``a.b``, ())."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield base, tuple(alias.name for alias in node.names)


def _known_prefix(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` or its longest prefix that is a berth module (``berth.x.attr`` -> ``berth.x``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph() -> dict[str, set[str]]:
    """Each berth module -> the berth modules it imports."""
    modules = berth_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: set[str] = set()
        for base, names in _imported_names(tree, name, path.name == "__init__.py"):
            if base != "berth" and not base.startswith("berth."):
                continue
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
            if submodules:
                targets.update(submodules)
            if len(submodules) < len(names) or not names:
                target = _known_prefix(base, modules)
                if target is not None:
                    targets.add(target)
        graph[name] = targets
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = []

        def visit(node: str) -> None:
            index[node] = low[node] = len(index)
            stack.append(node)
            on_stack.add(node)
            work.append((node, iter(sorted(graph.get(node, ())))))

        visit(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    visit(succ)
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Every circle: a component of more than one module, or a module importing itself."""
    found = {tuple(c) for c in strongly_connected(graph) if len(c) > 1}
    found |= {(name,) for name, targets in graph.items() if name in targets}
    return found


def _path_in(component: tuple[str, ...], graph: dict[str, set[str]]) -> str:
    """One circle through a component, for the failure message: ``a -> b -> a``."""
    members = set(component)
    start = component[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:  # breadth-first back to start, staying inside the component
        following: list[str] = []
        for node in frontier:
            for succ in sorted(graph[node] & members):
                if succ == start:
                    back = [node]
                    while back[-1] != start:
                        back.append(came_from[back[-1]])
                    return " -> ".join([*reversed(back), start])
                if succ not in came_from:
                    came_from[succ] = node
                    following.append(succ)
        frontier = following
    return " -> ".join(component)


# -- the graph itself ----------------------------------------------------------------------


def test_the_graph_reads_every_kind_of_import() -> None:
    graph = import_graph()
    assert "berth.deployers.base" in graph["berth.deployers.memory"]  # at the top
    assert "berth.deployers.base" in graph["berth.backends.base"]  # under TYPE_CHECKING
    assert "berth.utils.args" in graph["berth.schemas.models"]  # inside a function
    assert "berth.deployers._stdlib.proc" in graph["berth.deployers.process._start"]  # from a package, a module
    assert all(target.startswith("berth") for targets in graph.values() for target in targets)


def test_relative_imports_are_resolved() -> None:
    source = "from . import a\nfrom .. import b\nfrom ..c import d\nif X:\n    import berth.e\n"
    tree = ast.parse(source)
    assert list(_imported_names(tree, "berth.p.q", is_package=False)) == [
        ("berth.p", ("a",)), ("berth", ("b",)), ("berth.c", ("d",)), ("berth.e", ()),
    ]
    assert list(_imported_names(ast.parse("from . import a"), "berth.p", is_package=True)) == [("berth.p", ("a",))]


def test_tarjan_finds_circles_and_self_imports() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"d"}}
    assert cycles(graph) == {("a", "b", "c"), ("e",)}
    assert _path_in(("a", "b", "c"), graph) == "a -> b -> c -> a"
    assert cycles({str(i): {str(i + 1)} for i in range(5000)}) == set()  # deep, no recursion


# -- the layout ----------------------------------------------------------------------------


def test_no_import_circle() -> None:
    graph = import_graph()
    found = cycles(graph)
    new = sorted(found - KNOWN_CYCLES)
    gone = sorted(KNOWN_CYCLES - found)
    problems = [f"import circle: {_path_in(c, graph)}" for c in new]
    problems += [f"KNOWN_CYCLES lists {' <-> '.join(c)}, which is gone: remove it from the list" for c in gone]
    assert not problems, "\n".join(problems)


def _private_modules(package: str, modules: Iterable[str]) -> set[str]:
    """Modules below ``package`` with a private component after it."""
    prefix = package + "."
    return {
        name for name in modules
        if name.startswith(prefix) and any(part.startswith("_") for part in name[len(prefix):].split("."))
    }


def sub_packages() -> list[str]:
    packages = set()
    for scope in PRIVATE_SCOPES:
        root = BERTH.parent / scope
        packages |= {module_name(init.parent / "__init__.py") for init in root.rglob("__init__.py")
                     if init.parent != root}
    return sorted(packages)


def private_import_violations(graph: dict[str, set[str]], packages: list[str]) -> list[str]:
    """``importer imports target`` for each private module of a package imported from outside it."""
    found = []
    for package in packages:
        private = _private_modules(package, graph)
        for importer, targets in sorted(graph.items()):
            if importer == package or importer.startswith(package + "."):
                continue
            found += [f"{importer} imports {target}" for target in sorted(targets & private)]
    return found


def test_sub_packages_are_found() -> None:
    packages = sub_packages()
    assert {"berth.deployers.process", "berth.deployers.launcher", "berth.worker.swap"} <= set(packages)
    assert "berth.worker" not in packages and "berth.deployers" not in packages


def test_private_modules_are_told_apart() -> None:
    graph = {
        "p": {"p.sub._state"}, "p.sub": {"p.sub._state"}, "p.sub._state": set(), "p.sub.x": {"p.sub._in._deep"},
        "p.sub._in": set(), "p.sub._in._deep": set(), "p.sub.public": set(), "p.other": {"p.sub._in", "p.sub.public"},
    }
    assert private_import_violations(graph, ["p.sub", "p.sub._in"]) == [
        "p imports p.sub._state", "p.other imports p.sub._in", "p.sub.x imports p.sub._in._deep",
    ]


def test_no_module_outside_a_sub_package_names_its_private_modules() -> None:
    violations = private_import_violations(import_graph(), sub_packages())
    assert not violations, "\n".join(violations)


def test_the_worker_root_holds_at_most_eight_modules() -> None:
    root = sorted(p.name for p in (BERTH / "worker").glob("*.py"))
    assert len(root) <= WORKER_ROOT_LIMIT, f"{len(root)} modules at berth/worker/: {', '.join(root)}"
