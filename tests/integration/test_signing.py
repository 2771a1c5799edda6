"""Hostile publishers on RabbitMQ + PostgreSQL (issue 17, defect 10 and message signing):
anyone who may publish on the vhost can send events and task messages. Forged events never
become results (events are signed, by default with the database's key); with
TASKQ_SIGNING_KEY, forged task messages never run."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator
from typing import cast

import aio_pika
import msgpack
import pytest

import taskq
from taskq import protocol
from taskq.broker import topology
from taskq.signing import Signer
from tests.conftest import Backend
from tests.support import eventually

DEADLINE = 15.0
KEY, OLD_KEY, GONE_KEY = "k" * 32, "o" * 32, "g" * 32


async def publish_event(amqp_url: str, body: bytes) -> None:
    """As any credential of the vhost could: straight to the events exchange."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(topology.EVENTS_EXCHANGE)
        await exchange.publish(aio_pika.Message(body), routing_key=topology.EVENTS_KEY)
    finally:
        await connection.close()


def forged_success(task_id: str, key: str | None = None) -> bytes:
    event = protocol.Event(
        task_id=task_id, state="succeeded", attempt=1, result=["forged"], at=time.time()
    )
    body = protocol.encode_events([event])
    return body if key is None else Signer([key.encode()]).sign(body)


@pytest.mark.parametrize(
    ("signed", "forger_key"), [(False, None), (False, GONE_KEY), (True, None), (True, OLD_KEY)]
)
async def test_a_forged_succeeded_event_never_becomes_the_result(
    production: Backend, signed: bool, forger_key: str | None
) -> None:
    # Given a task that runs until let go, and a client waiting for its result
    app = production.app(signing_key=KEY if signed else None)
    let_go = asyncio.Event()

    @app.task(name="victim")
    async def victim() -> str:
        await let_go.wait()
        return "real"

    @app.task(name="probe")
    async def probe() -> str:
        return "probe"

    async with app, app.worker():
        # (a result awaited first leaves this client's events binding in place, so the
        # forged event below reaches the waiter rather than racing its binding)
        assert await (await probe.submit()).result(timeout=DEADLINE) == "probe"
        handle = await victim.submit()
        await eventually(handle.status, lambda s: s is taskq.TaskStatus.RUNNING, what="running")
        waiting = asyncio.create_task(handle.result(timeout=DEADLINE))
        # When someone publishes a `succeeded` event carrying a forged result (unsigned, or
        # signed with a key that is not the app's nor the database's)
        await publish_event(production.broker_url, forged_success(handle.id, forger_key))
        # Then the waiter does not return it (it reads the store, which says running)
        done, _ = await asyncio.wait({waiting}, timeout=1.0)
        assert not done, f"result() returned {waiting.result()!r} from a forged event"
        # And once the task really ends, the real result comes
        let_go.set()
        assert await waiting == "real"


def task_message(task_id: str, args: list[int]) -> bytes:
    return msgpack.packb(
        {"v": 1, "id": task_id, "task": "signed.add", "queue": "default",
         "args": args, "kwargs": {}}
    )  # fmt: skip


async def test_with_a_signing_key_only_messages_signed_by_an_accepted_key_run(
    production: Backend,
) -> None:
    # Given a worker whose app accepts KEY and OLD_KEY (KEY signs)
    app = production.app(signing_key=f"{KEY},{OLD_KEY}")
    ran: list[list[int]] = []

    @app.task(name="signed.add")
    async def add(a: int, b: int) -> int:
        ran.append([a, b])
        return a + b

    async with app:
        # And a task submitted by this app, waiting
        victim = await add.submit(1, 2)
        old, gone = str(uuid.uuid4()), str(uuid.uuid4())
        publish = app.broker.publish
        # When messages arrive: one signed with the old key, one unsigned reusing the
        # victim's id, and one signed with a key no longer accepted
        await publish("default", Signer([OLD_KEY.encode()]).sign(task_message(old, [10, 1])),
                      priority=0, message_id=old)  # fmt: skip
        await publish("default", task_message(victim.id, [666, 1]), priority=0,
                      message_id=victim.id)  # fmt: skip
        await publish("default", Signer([GONE_KEY.encode()]).sign(task_message(gone, [7, 7])),
                      priority=0, message_id=gone)  # fmt: skip
        async with app.worker():
            assert await victim.result(timeout=DEADLINE) == 3
            # (its row is made by the worker that takes it: a message published by other means)
            stored = await eventually(lambda: app.store.get_task(old), what="the old key's task")
            assert stored is not None
            assert await (await app.get(old)).result(timeout=DEADLINE) == 11
            letters = await eventually(
                app.dlq("default").list, lambda found: len(found) == 2, what="2 dead letters"
            )
        record = await victim.info()
        with pytest.raises(taskq.TaskNotFound):
            await app.get(gone)  # (a forged message makes no row)
    # Then the old key's message ran, the forged and the removed key's never did
    assert sorted(ran) == [[1, 2], [10, 1]]
    assert [letter.reason for letter in letters] == ["bad_signature", "bad_signature"]
    # And the forged one left the victim's row alone (it ran once, as submitted)
    assert (record.state, record.args, record.attempts) == (taskq.TaskStatus.SUCCEEDED, [1, 2], 1)


async def test_a_forged_final_event_does_not_end_an_unsigned_event_stream(
    production: Backend,
) -> None:
    # Given a task that runs until let go, and a client following its events
    app = production.app()
    let_go = asyncio.Event()

    @app.task(name="followed")
    async def followed() -> str:
        await let_go.wait()
        return "real"

    async with app, app.worker():
        handle = await followed.submit()
        states: list[taskq.TaskStatus | None] = []
        stream = cast(AsyncGenerator[taskq.TaskEvent, None], handle.events())
        async for event in stream:
            states.append(event.state)
            if event.state is taskq.TaskStatus.RUNNING:
                break
        # When a forged `succeeded` event comes, then the task really ends
        await publish_event(production.broker_url, forged_success(handle.id))
        ending = asyncio.create_task(_next(stream))
        done, _ = await asyncio.wait({ending}, timeout=1.0)
        assert not done, "the event stream ended on a forged event"
        let_go.set()
        final = await asyncio.wait_for(ending, DEADLINE)
        # Then the stream's end is the task's real one, read from the store
        assert final.state is taskq.TaskStatus.SUCCEEDED
        assert (await handle.info()).state is taskq.TaskStatus.SUCCEEDED
        await stream.aclose()


async def _next(stream: AsyncGenerator[taskq.TaskEvent, None]) -> taskq.TaskEvent:
    return await anext(stream)


async def test_a_forged_cancel_does_not_stop_a_running_task(
    production: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a task running on a worker until let go
    app = production.app()
    let_go = asyncio.Event()

    @app.task(name="kept")
    async def kept() -> str:
        await let_go.wait()
        return "done"

    async with app, app.worker():
        handle = await kept.submit()
        await eventually(handle.status, lambda s: s is taskq.TaskStatus.RUNNING, what="running")
        # When someone on the vhost sends its worker a cancel that no client asked for
        await app.broker.publish_control(protocol.encode_control("cancel", handle.id))

        async def refused() -> bool:
            return any(f"ignored a cancel of {handle.id}" in r.message for r in caplog.records)

        await eventually(refused, what="the forged cancel refused")
        # Then the task runs on to its end
        let_go.set()
        assert await handle.result(timeout=DEADLINE) == "done"
