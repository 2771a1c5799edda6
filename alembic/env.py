"""Alembic environment for taskq's tables (async template, shared-connection aware).

`taskq db upgrade` passes a live connection in `config.attributes["connection"]`; the
`alembic` command line builds an async engine from TASKQ_STORE_URL instead.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from taskq.store.migrations import VERSION_TABLE
from taskq.store.tables import metadata

config = context.config


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    url = os.environ.get("TASKQ_STORE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set TASKQ_STORE_URL to the database to migrate")
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
        await connection.commit()
    await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    do_run_migrations(connection)
else:
    asyncio.run(run_async_migrations())
