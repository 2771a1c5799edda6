"""Transactional submit on PostgreSQL: runs once committed, nothing after a rollback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

import taskq
from tests.conftest import Backend
from tests.integration.client.helpers import (
    DEADLINE,
    Status,
    queued_messages,
)

# -- transactional submit (PostgreSQL) --------------------------------------------------------


async def test_transactional_submit_runs_once_committed(production: Backend) -> None:
    app = production.app()

    @app.task(name="after_commit")
    async def after_commit(x: int) -> int:
        return x * 2

    engine = create_async_engine(production.store_url)
    try:
        async with app:
            # Given a task submitted inside the caller's transaction
            async with engine.begin() as conn:
                handle = await after_commit.options(transaction=conn).submit(21)
                # Then nobody else sees it before the commit
                with pytest.raises(taskq.TaskNotFound):
                    await app.get(handle.id)
            # And after the commit it waits `scheduled`: the submitter publishes nothing
            assert await handle.status() is Status.SCHEDULED
            assert await queued_messages(app) == []
            # And a worker (which leads) publishes and runs it
            async with app.worker():
                assert await handle.result(timeout=DEADLINE) == 42
    finally:
        await engine.dispose()


async def test_transactional_submit_rolled_back_leaves_nothing(production: Backend) -> None:
    app = production.app()
    ran: list[str] = []

    @app.task(name="maybe_later")
    async def maybe_later(label: str) -> None:
        ran.append(label)

    engine = create_async_engine(production.store_url)
    try:
        async with app:
            async with engine.connect() as conn:
                await conn.begin()
                doomed = await maybe_later.options(transaction=conn).submit("rolled back")
                await conn.rollback()
            with pytest.raises(taskq.TaskNotFound):
                await app.get(doomed.id)
            assert await queued_messages(app) == []
            # A sentinel committed after it: once it ran, the leader had passed both
            async with app.worker(concurrency=1):
                async with engine.begin() as conn:
                    sentinel = await maybe_later.options(transaction=conn).submit("sentinel")
                await sentinel.result(timeout=DEADLINE)
            assert await app.list_tasks() == [await sentinel.info()]
    finally:
        await engine.dispose()
    assert ran == ["sentinel"]


async def test_transactional_submit_with_an_async_session(production: Backend) -> None:
    app = production.app()

    @app.task(name="from_session")
    async def from_session(x: int) -> int:
        return x + 1

    engine = create_async_engine(production.store_url)
    try:
        async with app, app.worker():
            async with AsyncSession(engine) as session, session.begin():
                handle = await from_session.options(transaction=session).submit(1)
            assert await handle.result(timeout=DEADLINE) == 2
    finally:
        await engine.dispose()


async def test_transactional_submit_refuses_what_is_not_a_transaction(
    production: Backend,
) -> None:
    app = production.app()

    @app.task(name="nowhere")
    async def nowhere() -> None:
        pass

    engine = create_async_engine(production.store_url)
    try:
        async with app:
            # A connection that has not begun a transaction
            async with engine.connect() as conn:
                with pytest.raises(taskq.ConfigurationError, match="must be in a transaction"):
                    await nowhere.options(transaction=conn).submit()
            # Something that is not a connection at all
            with pytest.raises(taskq.ConfigurationError, match="AsyncConnection or AsyncSession"):
                await nowhere.options(transaction=object()).submit()  # type: ignore[arg-type]
            assert await app.list_tasks() == []
    finally:
        await engine.dispose()


async def test_transactional_submit_with_countdown_waits_as_scheduled(
    production: Backend,
) -> None:
    app = production.app()

    @app.task(name="delayed")
    async def delayed() -> str:
        return "ran"

    engine = create_async_engine(production.store_url)
    try:
        async with app, app.worker():
            submitted = datetime.now(UTC)
            async with engine.begin() as conn:
                handle = await delayed.options(transaction=conn, countdown=1.0).submit()
            assert await handle.status() is Status.SCHEDULED
            assert await handle.result(timeout=DEADLINE) == "ran"
            info = await handle.info()
    finally:
        await engine.dispose()
    assert info.run_at is not None and info.started_at is not None
    assert info.run_at >= submitted + timedelta(seconds=1)
    assert info.started_at >= info.run_at
