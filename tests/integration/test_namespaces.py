"""Namespaces (`App(namespace=...)`, TASKQ_NAMESPACE): two apps on one RabbitMQ vhost and one
PostgreSQL database, with the same task names and queue names, never see each other's tasks
in queues, rows, the CLI or events. On SQLite each namespace has a file of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aio_pika
import pytest
from typer.testing import CliRunner

import taskq
from taskq.cli import app as cli
from taskq.exceptions import ConfigurationError, SchemaOutOfDate, TaskNotFound
from taskq.store.migrations import upgrade_database
from tests.conftest import Backend
from tests.support import eventually

DEADLINE = 15.0


def namespaced_app(backend: Backend, namespace: str, ran: list[str]) -> taskq.App:
    """An app whose task `work` (queue `default`, like the other's) records who ran it."""
    app = backend.app(namespace=namespace)

    @app.task(name="work")
    async def work(label: str) -> str:
        ran.append(f"{namespace}:{label}")
        return namespace

    return app


async def pump(events: AsyncIterator[taskq.TaskEvent], into: list[str]) -> None:
    async for event in events:
        into.append(event.task_id)


async def test_two_namespaces_on_one_vhost_and_database_never_meet(production: Backend) -> None:
    # Given two namespaces migrated in one database, and an app in each on one vhost
    for namespace in ("billing", "shipping"):
        await upgrade_database(production.store_url, "head", namespace)
    ran: list[str] = []
    billing = namespaced_app(production, "billing", ran)
    shipping = namespaced_app(production, "shipping", ran)
    async with billing, shipping:
        # And a tail of shipping's events, bound (it has seen one of its own tasks)
        seen: list[str] = []
        tail = asyncio.create_task(pump(shipping.events(), seen))
        try:
            async with shipping.worker(concurrency=2):
                warm = await shipping.tasks["work"].submit("warm")
                await warm.result(timeout=DEADLINE)
                await _until(lambda: warm.id in seen, "shipping's tail saw its own task")

                # When billing submits while only shipping has a worker
                waiting = await billing.tasks["work"].submit("b1")
                mine = await shipping.tasks["work"].submit("s1")

                # Then shipping's worker runs its own task and not billing's
                assert await mine.result(timeout=DEADLINE) == "shipping"
                assert await waiting.status() is taskq.TaskStatus.QUEUED

            # And billing's task runs on a billing worker, as billing's
            async with billing.worker(concurrency=2):
                assert await waiting.result(timeout=DEADLINE) == "billing"
            last = await _run_one(shipping, "s2")
            await _until(lambda: last in seen, "shipping's tail saw its last task")
        finally:
            tail.cancel()
            await asyncio.gather(tail, return_exceptions=True)

        assert ran == ["shipping:warm", "shipping:s1", "billing:b1", "shipping:s2"]
        # And no event of billing's reached shipping's tail
        assert waiting.id not in seen
        # And each namespace's rows hold its own tasks only
        assert {r.id for r in await billing.list_tasks()} == {waiting.id}
        assert {r.id for r in await shipping.list_tasks()} == {warm.id, mine.id, last}
        with pytest.raises(TaskNotFound):
            await shipping.get(waiting.id)

    # And the RabbitMQ names are the namespace's
    assert await _queue_exists(production.broker_url, "billing:default")
    assert await _queue_exists(production.broker_url, "shipping:default.dlq")
    assert not await _queue_exists(production.broker_url, "default")
    # And the CLI, in a namespace, shows that namespace's tasks
    env = {"TASKQ_STORE_URL": production.store_url, "TASKQ_NAMESPACE": "billing"}
    listed = await asyncio.to_thread(CliRunner().invoke, cli, ["tasks", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert waiting.id in listed.output
    assert mine.id not in listed.output


async def test_a_namespace_without_its_schema_says_how_to_make_it(production: Backend) -> None:
    app = production.app(namespace="notyet")
    with pytest.raises(SchemaOutOfDate, match="TASKQ_NAMESPACE=notyet"):
        await app.open()


async def test_a_task_written_in_a_callers_transaction_lands_in_the_namespace(
    production: Backend,
) -> None:
    # Given an app in namespace "billing", and the caller's own engine (default search path)
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    await upgrade_database(production.store_url, "head", "billing")
    ran: list[str] = []
    app = namespaced_app(production, "billing", ran)
    engine = create_async_engine(production.store_url)
    try:
        async with app:
            # When a task is submitted in the caller's transaction
            async with engine.begin() as conn:
                handle = await app.tasks["work"].options(transaction=conn).submit("outbox")
                # Then the caller's own statements still see their own schema
                assert await conn.scalar(text("SELECT current_schema()")) == "public"
            # And the row is the namespace's, and the task runs there
            async with app.worker(concurrency=1):
                assert await handle.result(timeout=DEADLINE) == "billing"
            async with engine.connect() as conn:
                count = "SELECT count(*) FROM {}.taskq_tasks WHERE id = :id"
                found = {
                    schema: await conn.scalar(text(count.format(schema)), {"id": handle.id})
                    for schema in ("billing", "public")
                }
            assert found == {"billing": 1, "public": 0}
    finally:
        await engine.dispose()


async def test_on_sqlite_a_namespace_has_a_file_of_its_own(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'taskq.sqlite3'}"
    ran: list[str] = []
    embedded = Backend("embedded", "memory://", url)
    billing, plain = namespaced_app(embedded, "billing", ran), embedded.app()
    async with billing, plain:
        async with billing.worker(concurrency=1):
            handle = await billing.tasks["work"].submit("x")
            assert await handle.result(timeout=DEADLINE) == "billing"
        assert await plain.list_tasks() == []
    assert (tmp_path / "taskq.billing.sqlite3").is_file()


@pytest.mark.parametrize("bad", ["Billing", "1st", "a-b", "x" * 32, "a:b"])
def test_a_namespace_is_plain_lowercase(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="namespace"):
        taskq.App("memory://", "sqlite+aiosqlite:///:memory:", namespace=bad)


async def _run_one(app: taskq.App, label: str) -> str:
    async with app.worker(concurrency=1):
        handle = await app.tasks["work"].submit(label)
        await handle.result(timeout=DEADLINE)
    return handle.id


async def _until(condition: Callable[[], bool], what: str) -> None:
    async def check() -> bool:
        return condition()

    await eventually(check, what=what, within=DEADLINE)


async def _queue_exists(amqp_url: str, name: str) -> bool:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        try:
            await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return False
        return True
    finally:
        await connection.close()
