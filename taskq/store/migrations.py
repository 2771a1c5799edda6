"""Alembic, driven from code: `taskq db upgrade`, and the schema check at `app.open()`."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

VERSION_TABLE = "taskq_alembic_version"


def script_location() -> Path:
    """The migrations: shipped in the wheel as taskq/_migrations, or alembic/ in a checkout."""
    package = Path(__file__).parent.parent
    for candidate in (package / "_migrations", package.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("taskq's migrations are missing from this installation")


def config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    return cfg


def head() -> str:
    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None
    return revision


async def current(conn: AsyncConnection) -> str | None:
    def read(sync_conn: Connection) -> str | None:
        context = MigrationContext.configure(sync_conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()

    return await conn.run_sync(read)


async def upgrade(conn: AsyncConnection, revision: str = "head") -> None:
    """Apply migrations on `conn` (the caller commits)."""

    def run(sync_conn: Connection) -> None:
        cfg = config()
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, revision)

    await conn.run_sync(run)
