"""The store is the only door: outside `taskq/store`, nothing imports its connections or
statements, so nobody composes a transaction or writes SQL but the store itself."""

from __future__ import annotations

from tests.unit.test_layers import PACKAGE, imported

# What only the store may touch: connections, statements, the tables they run on.
INSIDE = tuple(
    f"taskq.store.{name}"
    for name in ("async_core", "statements", "lifecycle", "coordination", "pg", "tables", "writer")
)


def test_nothing_outside_the_store_imports_its_connections_or_statements() -> None:
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if (PACKAGE / "store") not in path.parents
        for line, name in imported(path)
        if any(name == inside or name.startswith(inside + ".") for inside in INSIDE)
    ]
    assert found == []


def test_the_store_offers_verbs_not_a_connection() -> None:
    from taskq.store import Store

    assert not hasattr(Store, "run")
    assert not any(name.startswith("connect") for name in vars(Store))
