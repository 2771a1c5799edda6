"""The import rule, read from the source: broker and store never import each other or above.

cli → worker, scheduler → app, task, handle → broker, store, protocol → exceptions, config
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import taskq

PACKAGE = Path(taskq.__file__).parent
ABOVE = ("taskq.app", "taskq.worker", "taskq.cli", "taskq.scheduler", "taskq.task", "taskq.handle")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


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


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("broker", ("taskq.store", *ABOVE)),
        ("store", ("taskq.broker", *ABOVE)),
    ],
)
def test_layer_imports_nothing_beside_or_above_it(layer: str, forbidden: tuple[str, ...]) -> None:
    assert violations(layer, forbidden) == []


def test_protocol_imports_only_exceptions_of_taskq() -> None:
    names = {name for _, name in imported(PACKAGE / "protocol.py")}
    ours = {name for name in names if name == "taskq" or name.startswith("taskq.")}
    assert ours
    assert all(name.startswith("taskq.exceptions") for name in ours), ours


def test_exceptions_is_a_leaf() -> None:
    names = {name for _, name in imported(PACKAGE / "exceptions.py")}
    assert not any(name == "taskq" or name.startswith("taskq.") for name in names), names
