"""Alembic, driven from code: `taskq db upgrade`, and the schema check at `app.open()`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import inspect, text

from taskq.exceptions import ConfigurationError, SchemaOutOfDate
from taskq.store import engine as engines
from taskq.store import partitions
from taskq.store.async_core import Connection

if TYPE_CHECKING:
    from alembic.config import Config

VERSION_TABLE = "taskq_alembic_version"
# The revision this code needs (a test checks it is alembic's head). Known here so that the
# schema check at every `app.open()` reads one row, without loading alembic (4 MB, 0.1 s).
HEAD = "0011"


def script_location() -> Path:
    """The migrations: shipped in the wheel as taskq/_migrations, or alembic/ in a checkout."""
    package = Path(__file__).parent.parent
    for candidate in (package / "_migrations", package.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("taskq's migrations are missing from this installation")


def config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    return cfg


def head() -> str:
    return HEAD


def alembic_head() -> str:
    """The newest revision among the migration scripts (what `HEAD` must equal)."""
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None
    return revision


async def current(conn: Connection) -> str | None:
    """The database's revision, or None before the first migration."""

    def read(sync_conn: SyncConnection) -> str | None:
        if not inspect(sync_conn).has_table(VERSION_TABLE):
            return None
        version = sync_conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        return None if version is None else str(version)

    return await conn.run_sync(read)


async def upgrade(conn: Connection, revision: str = "head") -> None:
    """Apply migrations on `conn` (the caller commits)."""

    def run(sync_conn: SyncConnection) -> None:
        from alembic import command
        from alembic.util import CommandError

        cfg = config()
        cfg.attributes["connection"] = sync_conn
        try:
            command.upgrade(cfg, revision)
        except CommandError as exc:
            raise ConfigurationError(
                f"cannot upgrade to revision {revision!r}: {exc} (this taskq knows 0001 to "
                f"{HEAD}; `taskq db current` shows the database's)"
            ) from None

    await conn.run_sync(run)


async def upgrade_database(
    url: str, revision: str = "head", namespace: str = "", *, partitioned: int = 0
) -> str:
    """`taskq db upgrade`: apply migrations up to `revision`, in one transaction (in the
    namespace's schema, made first if need be); with `partitioned` (days a partition, at
    the newest revision only), then make `taskq_tasks` partitioned. → what that did."""
    if partitioned and revision != "head":
        raise ConfigurationError("--partitioned upgrades to the newest revision only")
    parsed = engines.in_namespace(engines.parse_url(url), namespace)
    engine = engines.create_engine(parsed.render_as_string(hide_password=False), namespace)
    try:
        async with engines.translated_errors(parsed), engine.begin() as conn:
            if namespace and conn.dialect.name == "postgresql":
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{namespace}"'))
            await upgrade(conn, revision)
            if not partitioned:
                return ""
            if conn.dialect.name != "postgresql":
                raise ConfigurationError("--partitioned needs PostgreSQL")
            return await partitions.convert(conn, datetime.now(UTC), partitioned)
    finally:
        await engine.dispose()


async def database_revision(url: str, namespace: str = "") -> str | None:
    """`taskq db current`: the database's revision, or None before the first migration."""
    parsed = engines.in_namespace(engines.parse_url(url), namespace)
    engine = engines.create_engine(parsed.render_as_string(hide_password=False), namespace)
    try:
        async with (
            engines.translated_errors(parsed),
            await engine.connect() as conn,
        ):
            return await current(conn)
    finally:
        await engine.dispose()


async def check(conn: Connection, shown_url: str, namespace: str = "") -> None:
    """Refuse a database whose schema is not this taskq's."""
    now, wanted = await current(conn), head()
    if now != wanted:
        where = f" in namespace {namespace!r}" if namespace else ""
        env = f" and TASKQ_NAMESPACE={namespace}" if namespace else ""
        raise SchemaOutOfDate(
            f"the database at {shown_url}{where} is at schema revision {now or 'none'}, "
            f"but this taskq needs {wanted}: run `taskq db upgrade` "
            f"(with TASKQ_STORE_URL set to this database{env})"
        )
