"""`async_core`, SQLAlchemy Core awaited without `sqlalchemy.ext.asyncio`: transactions commit
or roll back, a cancelled block still gives its connection back, and a caller's own
AsyncConnection or AsyncSession is taken."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import QueuePool

from taskq.store import engine as engines
from taskq.store.async_core import Connection, Engine


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[Engine]:
    created = engines.create_engine(store_url)
    async with created.begin() as conn:
        await conn.execute(text("CREATE TABLE core_notes (label text PRIMARY KEY)"))
    try:
        yield created
    finally:
        await created.dispose()


async def labels(engine: Engine) -> list[str]:
    async with await engine.connect() as conn:
        result = await conn.execute(text("SELECT label FROM core_notes ORDER BY label"))
        return [row[0] for row in result]


async def test_a_block_that_ends_commits_and_one_that_raises_rolls_back(engine: Engine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO core_notes VALUES ('kept')"))
    with pytest.raises(RuntimeError, match="after the insert"):
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO core_notes VALUES ('undone')"))
            raise RuntimeError("after the insert")

    assert await labels(engine) == ["kept"]


async def test_a_cancelled_block_rolls_back_and_gives_its_connection_back(engine: Engine) -> None:
    inside = asyncio.Event()

    async def interrupted() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO core_notes VALUES ('cancelled')"))
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(interrupted())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await labels(engine) == []
    pool = engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    assert pool.checkedout() == 0


async def test_results_are_read_without_awaiting_and_scalar_gives_the_first_value(
    engine: Engine,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO core_notes VALUES ('a'), ('b')"))
        assert await conn.scalar(text("SELECT count(*) FROM core_notes")) == 2
        assert conn.in_transaction()
    assert await labels(engine) == ["a", "b"]


async def test_a_callers_async_connection_and_session_are_taken_in_their_transaction(
    store_url: str, engine: Engine
) -> None:
    theirs = create_async_engine(store_url)
    try:
        async with theirs.connect() as their_conn:
            await their_conn.begin()
            conn = await Connection.of(their_conn)
            await conn.execute(text("INSERT INTO core_notes VALUES ('from a connection')"))
            await their_conn.rollback()
        async with AsyncSession(theirs) as session, session.begin():
            conn = await Connection.of(session)
            assert conn.in_transaction()
            await conn.execute(text("INSERT INTO core_notes VALUES ('from a session')"))
    finally:
        await theirs.dispose()

    assert await labels(engine) == ["from a session"]


async def test_anything_else_is_refused_by_its_type_name() -> None:
    with pytest.raises(TypeError, match="str"):
        await Connection.of("postgresql://nope")  # type: ignore[arg-type]
