"""Migrations match the model: `upgrade head` on an empty database == tables.metadata."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

import taskq
from taskq.store import engine as engines
from taskq.store import migrations
from taskq.store.migrations import upgrade_database as _upgrade
from taskq.store.tables import metadata

ROOT = Path(__file__).parent.parent.parent


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no taskq schema: a new PostgreSQL database or a new SQLite file."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}"
    url: str = request.getfixturevalue("empty_postgres_url")
    return url


def schema_diff(sync_conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        sync_conn, opts={"version_table": migrations.VERSION_TABLE, "compare_type": True}
    )
    diff: list[Any] = compare_metadata(context, metadata)
    return diff


def table_names(sync_conn: Connection) -> set[str]:
    return set(inspect(sync_conn).get_table_names())


def downgrade_to_base(sync_conn: Connection) -> None:
    cfg = migrations.config()
    cfg.attributes["connection"] = sync_conn
    command.downgrade(cfg, "base")


async def inspect_db(url: str, operation: Any) -> Any:
    engine = engines.create_engine(url)
    try:
        async with await engine.connect() as conn:
            return await conn.run_sync(operation)
    finally:
        await engine.dispose()


async def current_revision(url: str) -> str | None:
    engine = engines.create_engine(url)
    try:
        async with await engine.connect() as conn:
            return await migrations.current(conn)
    finally:
        await engine.dispose()


async def test_upgrade_head_matches_the_model(empty_url: str) -> None:
    # Given an empty database
    assert await inspect_db(empty_url, table_names) == set()
    # When it is upgraded to head
    await _upgrade(empty_url, "head")
    # Then autogenerate finds no difference between it and tables.metadata
    assert await inspect_db(empty_url, schema_diff) == []
    assert await current_revision(empty_url) == migrations.head()
    assert await inspect_db(empty_url, table_names) == {
        *metadata.tables,
        migrations.VERSION_TABLE,
    }


async def test_downgrade_to_base_then_upgrade_again(empty_url: str) -> None:
    # Given a database at head
    await _upgrade(empty_url, "head")
    # When it is downgraded to base
    engine = engines.create_engine(empty_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(downgrade_to_base)
    finally:
        await engine.dispose()
    # Then taskq's tables are gone and no revision is recorded
    assert "taskq_tasks" not in await inspect_db(empty_url, table_names)
    assert await current_revision(empty_url) is None
    # (and the comparison sees it: it is not vacuous)
    missing = await inspect_db(empty_url, schema_diff)
    assert ("add_table", "taskq_tasks") in [
        (d[0], d[1].name) for d in missing if d[0] == "add_table"
    ]
    # And upgrading again gives the model's schema back
    await _upgrade(empty_url, "head")
    assert await inspect_db(empty_url, schema_diff) == []
    assert await current_revision(empty_url) == migrations.head()


async def test_upgrade_is_idempotent(empty_url: str) -> None:
    await _upgrade(empty_url, "head")
    await _upgrade(empty_url, "head")
    assert await current_revision(empty_url) == migrations.head()


async def test_app_on_an_unmigrated_postgres_says_to_upgrade(empty_postgres_url: str) -> None:
    # Given an empty PostgreSQL database
    app = taskq.App(broker_url="memory://", store_url=empty_postgres_url)
    # When the app opens on it
    with pytest.raises(taskq.SchemaOutOfDate) as caught:
        async with app:
            pass
    # Then the error says how to fix it
    message = str(caught.value)
    assert "taskq db upgrade" in message
    assert migrations.head() in message
    assert isinstance(caught.value, taskq.StoreError)


async def test_app_opens_after_upgrade(empty_postgres_url: str) -> None:
    await _upgrade(empty_postgres_url, "head")
    async with taskq.App(broker_url="memory://", store_url=empty_postgres_url) as app:
        assert app.store.dialect == "postgresql"


async def test_each_database_gets_its_own_random_event_key(
    empty_postgres_url: str, tmp_path: Path
) -> None:
    # Given two databases upgraded to head (PostgreSQL and SQLite)
    sqlite_url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    await _upgrade(empty_postgres_url, "head")
    keys = []
    for url in (empty_postgres_url, sqlite_url):
        # When an app opens on each
        async with taskq.App(broker_url="memory://", store_url=url) as app:
            keys.append(app.store.event_key)
    # Then each has a key of its own, long and random enough to sign events with
    assert keys[0] != keys[1]
    assert all(len(key) >= 32 for key in keys)


def taskq_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    return subprocess.run(
        [sys.executable, "-m", "taskq", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_upgrade_then_current(empty_url: str) -> None:
    # Given an empty database, which `taskq db current` reports as such
    before = taskq_cli("db", "current", "--store-url", empty_url)
    assert before.returncode == 0, before.stderr
    assert "database: none" in before.stdout
    # When `taskq db upgrade` runs on it
    upgraded = taskq_cli("db", "upgrade", "--store-url", empty_url)
    assert upgraded.returncode == 0, upgraded.stderr
    # Then `taskq db current` prints the head revision as the database's
    current = taskq_cli("db", "current", "--store-url", empty_url)
    assert current.returncode == 0, current.stderr
    head = migrations.head()
    assert f"database: {head}" in current.stdout
    assert f"newest:   {head}" in current.stdout


def test_the_revision_the_code_needs_is_the_newest_migration() -> None:
    # The schema check at open compares with migrations.HEAD (no alembic at runtime)
    assert migrations.head() == migrations.alembic_head()
