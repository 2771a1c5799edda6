"""The import rule, read from the source, lazy and TYPE_CHECKING imports included:

cli → app → worker, scheduler → client → broker, store, protocol, telemetry → config, exceptions

broker and store never import each other or anything above them; the client never imports
the worker, the scheduler or the cli; nothing but the cli imports the cli; and no module of
taskq is part of an import cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import taskq

PACKAGE = Path(taskq.__file__).parent
ABOVE_CLIENT = ("taskq.app", "taskq.worker", "taskq.scheduler", "taskq.cli", "taskq.dashboard")
ABOVE_BROKER_AND_STORE = ("taskq.client", *ABOVE_CLIENT)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in the file, lazy and TYPE_CHECKING ones included.

    `from a import b` yields both `a` and `a.b`, since `b` may be a submodule.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this file's package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def dependencies(path: Path) -> set[str]:
    """The taskq modules this file imports: `from a import b` is an edge to the module
    `a.b` if there is one, else to `a` (whose `__init__` defines `b`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(path, node)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return {name for name in found if name in MODULES} - {module_name(path)}


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module_name(path).split(".")
    if path.name != "__init__.py":
        parts = parts[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, node.module] if node.module else parts)


def import_graph() -> dict[str, set[str]]:
    return {name: dependencies(path) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for line, name in imported(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    return found


def test_the_walker_sees_imports() -> None:
    # Guard against a vacuous pass: known imports are found, relative ones resolved.
    names = {name for _, name in imported(PACKAGE / "broker" / "memory.py")}
    assert "taskq.broker.topology" in names
    assert "taskq.exceptions.PublishError" in names


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("broker", ("taskq.store", *ABOVE_BROKER_AND_STORE)),
        ("store", ("taskq.broker", *ABOVE_BROKER_AND_STORE)),
        ("client", ABOVE_CLIENT),
    ],
)
def test_layer_imports_nothing_beside_or_above_it(layer: str, forbidden: tuple[str, ...]) -> None:
    assert violations(layer, forbidden) == []


def test_only_the_cli_imports_the_cli() -> None:
    found = []
    for name, path in MODULES.items():
        if name.startswith("taskq.cli") or name == "taskq.__main__":
            continue
        found += [
            f"{name}:{line} imports {module}"
            for line, module in imported(path)
            if module == "taskq.cli" or module.startswith("taskq.cli.")
        ]
    assert found == []


def test_no_module_of_taskq_is_part_of_an_import_cycle() -> None:
    graph = import_graph()
    assert graph["taskq.client.task"] >= {"taskq.client.submit", "taskq.client.options"}
    assert cycles(graph) == []


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("protocol.py", ("taskq.exceptions", "taskq.values")),
        ("values.py", ("taskq.exceptions",)),
        ("signing.py", ("taskq.exceptions",)),
    ],
)
def test_protocol_and_values_import_only_exceptions_of_taskq(
    module: str, allowed: tuple[str, ...]
) -> None:
    names = {name for _, name in imported(PACKAGE / module)}
    ours = {name for name in names if name == "taskq" or name.startswith("taskq.")}
    assert ours
    assert all(name.startswith(allowed) for name in ours - {"taskq"}), ours


def test_exceptions_is_a_leaf() -> None:
    names = {name for _, name in imported(PACKAGE / "exceptions.py")}
    assert not any(name == "taskq" or name.startswith("taskq.") for name in names), names


def test_modules_stay_small_and_the_executor_smaller() -> None:
    # One job per module: past about 450 lines a module is doing two. The executor keeps
    # only its pipeline (taskq's own instruments are middleware), so it stays under 300.
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in sizes.items() if n > 450} == {}
    assert sizes["taskq.worker.executor"] < 300
