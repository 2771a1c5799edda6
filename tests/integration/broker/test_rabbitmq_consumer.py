"""RabbitMQ only: the worker's consumer comes back by itself, under the same prefetch, after
its connection is lost or its queue is deleted, and stays gone once cancelled.

Connections are closed with `rabbitmqctl close_connection`, only those of this test's vhost,
so the tests running beside it (and the other users of the broker) see nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import unquote, urlsplit

import aio_pika
import pytest

import taskq.broker
from taskq.broker import Broker
from tests.integration.broker.test_contract import DEADLINE, Inbox, publish, queue_name
from tests.support import eventually


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[Broker]:
    connected = taskq.broker.from_url(amqp_url, max_priority=10, publish_timeout=DEADLINE)
    await connected.connect()
    try:
        yield connected
    finally:
        await connected.close()


async def rabbitmqctl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, f"rabbitmqctl {args} exited {process.returncode}: {err!r}"
    return out.decode()


async def close_connections(amqp_url: str) -> int:
    """Close every connection to the test's vhost, as a broker restart would; → how many."""
    vhost = unquote(urlsplit(amqp_url).path[1:])
    listed = await rabbitmqctl("list_connections", "--no-table-headers", "pid", "vhost")
    pids = [
        line.split("\t")[0]
        for line in listed.splitlines()
        if "\t" in line and line.split("\t")[1] == vhost
    ]
    for pid in pids:
        await rabbitmqctl("close_connection", pid, "taskq test: connection lost")
    return len(pids)


async def ready_and_consumers(amqp_url: str, queue: str) -> tuple[int, int]:
    """Asked out of band, on a connection of its own."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = (await channel.declare_queue(queue, passive=True)).declaration_result
        return declared.message_count or 0, declared.consumer_count or 0
    finally:
        await connection.close()


async def wait_for_consumers(amqp_url: str, queue: str, expected: int) -> None:
    """Poll (no event tells a client that a consumer was registered) until the deadline."""
    await eventually(
        lambda: ready_and_consumers(amqp_url, queue),
        lambda found: found[1] == expected,
        what=f"{expected} consumer(s) on {queue}",
        within=DEADLINE,
    )


async def test_after_a_lost_connection_it_consumes_again_under_the_same_prefetch(
    broker: Broker, amqp_url: str
) -> None:
    # Given a consumer with prefetch 2 holding two of three messages
    queue = queue_name()
    await broker.declare(queue)
    for body in (b"a", b"b", b"c"):
        await publish(broker, queue, body)
    inbox = Inbox()
    subscription = await broker.consume([queue], prefetch=2, on_delivery=inbox)
    held = await inbox.take(2)
    # When the broker drops every connection
    assert await close_connections(amqp_url) >= 2
    # Then the two held come again, redelivered on the new connection, and only those two
    again = await inbox.take(2)
    assert sorted(d.body for d in again) == sorted(d.body for d in held)
    assert all(d.redelivered for d in again)
    assert await ready_and_consumers(amqp_url, queue) == (1, 1)
    # And an old delivery's ack settles nothing (its channel is gone: RabbitMQ requeued it
    # already), nor does it fail its caller (acks are not awaited)
    await held[0].ack()
    assert await ready_and_consumers(amqp_url, queue) == (1, 1)
    # And acking the new ones lets the third through
    for delivery in again:
        await delivery.ack()
    assert (await inbox.next()).body == b"c"
    await subscription.cancel()


async def test_a_deleted_queue_is_declared_and_consumed_again(
    broker: Broker, amqp_url: str
) -> None:
    # Given a consumer of a queue
    queue = queue_name()
    await broker.declare(queue)
    inbox = Inbox()
    subscription = await broker.consume([queue], prefetch=10, on_delivery=inbox)
    # When someone deletes the queue (the broker cancels its consumers)
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(queue)
    finally:
        await connection.close()
    # Then the consumer declares it again and consumes it
    await wait_for_consumers(amqp_url, queue, 1)
    await broker.declare(queue)  # (the binding went with the queue; declare makes it again)
    await publish(broker, queue, b"after")
    assert (await inbox.next()).body == b"after"
    await subscription.cancel()


async def test_a_cancelled_consumer_stays_cancelled_after_a_reconnect(
    broker: Broker, amqp_url: str
) -> None:
    # Given a consumer that was cancelled while it held a delivery
    queue = queue_name()
    await broker.declare(queue)
    await publish(broker, queue, b"held")
    inbox = Inbox()
    subscription = await broker.consume([queue], prefetch=10, on_delivery=inbox)
    await inbox.next()
    await subscription.cancel()
    # (The broker calls this once the consumer connection and all its channels are back.)
    reconnected = asyncio.Event()
    events = await broker.subscribe_events(lambda body: None, reconnected.set)
    # When the connection is lost and comes back
    assert await close_connections(amqp_url) >= 2
    async with asyncio.timeout(DEADLINE):
        await reconnected.wait()
    await publish(broker, queue, b"after")
    # Then nothing consumes the queue: both messages wait in it
    assert await ready_and_consumers(amqp_url, queue) == (2, 0)
    assert [d.body for d in inbox.received] == [b"held"]
    await events.close()
