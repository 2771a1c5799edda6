"""The broker contract: one suite that the memory broker and RabbitMQ both pass.

Waits are on deliveries and events, each with a deadline. Where a test must show that
something did *not* happen, it asks the broker how many messages are still ready (a
ready message is not on its way to any consumer), or publishes a sentinel that travels
behind it on the same channel.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import pytest

import taskq
import taskq.broker
from taskq.broker import Broker, Delivery
from taskq.broker.memory import MemoryBroker
from tests.support import eventually

DEADLINE = 10.0

ReadyCount = Callable[[str], Awaitable[int]]


@pytest.fixture(params=["memory", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """The suite's parameter. Sync, because the vhost fixture runs its own event loop."""
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("amqp_url")
    return url


@pytest.fixture
async def broker(broker_url: str) -> AsyncIterator[Broker]:
    """A connected broker: in-process, or RabbitMQ on a fresh vhost."""
    connected = taskq.broker.from_url(broker_url, max_priority=10, publish_timeout=5)
    await connected.connect()
    try:
        yield connected
    finally:
        await connected.close()


@pytest.fixture
async def ready_count(
    broker: Broker, broker_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[ReadyCount]:
    """How many messages wait in a queue, not handed to any consumer (asked out of band)."""
    if isinstance(broker, MemoryBroker):
        memory = broker

        async def in_memory(queue: str) -> int:
            return len(memory.messages(queue))

        yield in_memory
        return
    connection = await aio_pika.connect(
        broker_url, client_properties={"connection_name": f"{request.node.nodeid} ready_count"}
    )
    try:
        channel = await connection.channel()

        async def on_rabbitmq(queue: str) -> int:
            declared = await channel.declare_queue(queue, passive=True)
            count = declared.declaration_result.message_count
            assert count is not None
            return count

        yield on_rabbitmq
    finally:
        await connection.close()


class Inbox:
    """Collects deliveries from a consume callback; the test takes them with a deadline."""

    def __init__(self) -> None:
        self.received: list[Delivery] = []
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()

    def __call__(self, delivery: Delivery) -> None:
        self.received.append(delivery)
        self._queue.put_nowait(delivery)

    async def next(self) -> Delivery:
        async with asyncio.timeout(DEADLINE):
            return await self._queue.get()

    async def take(self, count: int) -> list[Delivery]:
        return [await self.next() for _ in range(count)]


def queue_name() -> str:
    return f"contract-{uuid.uuid4().hex[:8]}"


async def publish(broker: Broker, queue: str, body: bytes, priority: int = 0) -> None:
    await broker.publish(queue, body, priority=priority, message_id=str(uuid.uuid4()))


async def test_declare_is_idempotent(broker: Broker, ready_count: ReadyCount) -> None:
    # Given a declared queue holding a message
    queue = queue_name()
    await broker.declare(queue)
    await publish(broker, queue, b"kept")
    # When it is declared again
    await broker.declare(queue)
    await broker.declare(queue)
    # Then nothing is lost or duplicated, and it still works
    assert await ready_count(queue) == 1
    assert await ready_count(queue + ".dlq") == 0
    inbox = Inbox()
    await broker.consume([queue], prefetch=5, on_delivery=inbox)
    delivery = await inbox.next()
    assert delivery.body == b"kept"
    await delivery.ack()


async def test_publish_then_consume_delivers_the_body(broker: Broker) -> None:
    # Given a declared queue with a published message
    queue = queue_name()
    await broker.declare(queue)
    body = bytes(range(256)) * 4
    await publish(broker, queue, body)
    # When a consumer subscribes
    inbox = Inbox()
    await broker.consume([queue], prefetch=1, on_delivery=inbox)
    # Then it gets the exact body, from that queue, as a first delivery
    delivery = await inbox.next()
    assert delivery.body == body
    assert delivery.queue == queue
    assert delivery.redelivered is False
    await delivery.ack()


async def test_message_published_while_consuming_is_delivered(broker: Broker) -> None:
    queue = queue_name()
    await broker.declare(queue)
    inbox = Inbox()
    await broker.consume([queue], prefetch=1, on_delivery=inbox)
    await publish(broker, queue, b"live")
    delivery = await inbox.next()
    assert delivery.body == b"live"
    await delivery.ack()


async def test_acked_message_is_gone(broker: Broker, ready_count: ReadyCount) -> None:
    queue = queue_name()
    await broker.declare(queue)
    await publish(broker, queue, b"once")
    inbox = Inbox()
    subscription = await broker.consume([queue], prefetch=1, on_delivery=inbox)
    await (await inbox.next()).ack()
    await subscription.cancel()
    assert await ready_count(queue) == 0


async def test_prefetch_bounds_unsettled_deliveries_across_queues(
    broker: Broker, ready_count: ReadyCount
) -> None:
    # Given two queues holding five messages each
    first, second = queue_name(), queue_name()
    for queue in (first, second):
        await broker.declare(queue)
        for index in range(5):
            await publish(broker, queue, f"{queue}:{index}".encode())
    # When both are consumed together with prefetch 2
    inbox = Inbox()
    await broker.consume([first, second], prefetch=2, on_delivery=inbox)
    # Then exactly two are handed over, and the other eight stay ready in the broker
    delivered = await inbox.take(2)
    assert await ready_count(first) + await ready_count(second) == 8
    assert len(inbox.received) == 2
    # When one is acked
    await delivered[0].ack()
    # Then exactly one more arrives
    third = await inbox.next()
    assert await ready_count(first) + await ready_count(second) == 7
    assert len(inbox.received) == 3
    assert len({d.body for d in inbox.received}) == 3
    for delivery in (delivered[1], third):
        await delivery.ack()


async def test_higher_priority_is_delivered_first(broker: Broker) -> None:
    # Given priorities 0..9 published before anyone consumes
    queue = queue_name()
    await broker.declare(queue)
    for priority in range(10):
        await publish(broker, queue, str(priority).encode(), priority=priority)
    # When they are consumed one at a time
    inbox = Inbox()
    await broker.consume([queue], prefetch=1, on_delivery=inbox)
    order = []
    for _ in range(10):
        delivery = await inbox.next()
        order.append(int(delivery.body))
        await delivery.ack()
    # Then the highest priority comes first
    assert order == list(range(9, -1, -1))


async def test_equal_priorities_are_first_in_first_out(broker: Broker) -> None:
    queue = queue_name()
    await broker.declare(queue)
    for index in range(5):
        await publish(broker, queue, str(index).encode(), priority=3)
    inbox = Inbox()
    await broker.consume([queue], prefetch=1, on_delivery=inbox)
    order = []
    for _ in range(5):
        delivery = await inbox.next()
        order.append(int(delivery.body))
        await delivery.ack()
    assert order == [0, 1, 2, 3, 4]


async def test_reject_without_requeue_dead_letters(broker: Broker, ready_count: ReadyCount) -> None:
    # Given a delivered message
    queue = queue_name()
    await broker.declare(queue)
    await publish(broker, queue, b"poison")
    inbox = Inbox()
    subscription = await broker.consume([queue], prefetch=1, on_delivery=inbox)
    # When it is rejected without requeue
    await (await inbox.next()).reject(requeue=False)
    await subscription.cancel()
    # Then it is out of its queue and waiting in <queue>.dlq (RabbitMQ moves it there
    # asynchronously, hence the poll)
    assert await ready_count(queue) == 0
    # (RabbitMQ dead-letters on its own time and tells no client when: poll.)
    await eventually(
        lambda: ready_count(queue + ".dlq"), lambda n: n == 1, what="one dead letter ready"
    )
    # And a consumer of the DLQ receives it
    dead = Inbox()
    await broker.consume([queue + ".dlq"], prefetch=1, on_delivery=dead)
    delivery = await dead.next()
    assert delivery.body == b"poison"
    assert delivery.queue == queue + ".dlq"
    await delivery.ack()


async def test_reject_with_requeue_redelivers(broker: Broker) -> None:
    # Given a delivered message
    queue = queue_name()
    await broker.declare(queue)
    await publish(broker, queue, b"again")
    inbox = Inbox()
    await broker.consume([queue], prefetch=1, on_delivery=inbox)
    first = await inbox.next()
    assert first.redelivered is False
    # When it is rejected with requeue
    await first.reject(requeue=True)
    # Then it comes back, marked as redelivered
    second = await inbox.next()
    assert second.body == b"again"
    assert second.redelivered is True
    await second.ack()


async def test_publish_to_an_undeclared_queue_is_a_publish_error(broker: Broker) -> None:
    with pytest.raises(taskq.PublishError) as caught:
        await publish(broker, queue_name(), b"lost")
    assert isinstance(caught.value, taskq.BrokerError)


async def test_cancel_stops_new_deliveries(broker: Broker) -> None:
    # Given a consumer holding one unsettled delivery
    queue = queue_name()
    await broker.declare(queue)
    await publish(broker, queue, b"before")
    old = Inbox()
    subscription = await broker.consume([queue], prefetch=10, on_delivery=old)
    held = await old.next()
    # When it is cancelled and another message is published
    await subscription.cancel()
    await publish(broker, queue, b"after")
    # Then the delivery it holds can still be settled
    await held.ack()
    # And the new message waits for another consumer, rather than reaching the old one
    new = Inbox()
    await broker.consume([queue], prefetch=10, on_delivery=new)
    delivery = await new.next()
    assert delivery.body == b"after"
    await delivery.ack()
    assert [d.body for d in old.received] == [b"before"]


class Events:
    """Collects event bodies; `wait_for` returns once a given body has arrived."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self._changed = asyncio.Event()

    def __call__(self, body: bytes) -> None:
        self.received.append(body)
        self._changed.set()

    async def wait_for(self, body: bytes) -> None:
        async with asyncio.timeout(DEADLINE):
            while body not in self.received:
                self._changed.clear()
                await self._changed.wait()


def no_reconnect() -> None:
    raise AssertionError("the connection was not expected to drop")


async def test_bound_event_reaches_the_callback(broker: Broker) -> None:
    # Given a subscription bound to a key
    events = Events()
    subscription = await broker.subscribe_events(events, no_reconnect)
    await subscription.bind("task.a")
    # When an event is published with that key
    await broker.publish_event("task.a", b"a:running")
    # Then the callback gets its body
    await events.wait_for(b"a:running")
    assert events.received == [b"a:running"]
    await subscription.close()


async def test_unbound_event_does_not_reach_the_callback(broker: Broker) -> None:
    # Given a subscription bound to two keys, which then unbinds one
    events = Events()
    subscription = await broker.subscribe_events(events, no_reconnect)
    await subscription.bind("task.gone")
    await subscription.bind("task.sentinel")
    await broker.publish_event("task.gone", b"before unbind")
    await events.wait_for(b"before unbind")
    await subscription.unbind("task.gone")
    # When an event for the unbound key is published, then one for the bound key
    await broker.publish_event("task.gone", b"after unbind")
    await broker.publish_event("task.sentinel", b"sentinel")
    # Then only the sentinel arrives (it travels behind the other on the same channel)
    await events.wait_for(b"sentinel")
    assert events.received == [b"before unbind", b"sentinel"]
    await subscription.close()


async def test_event_with_a_key_never_bound_is_not_delivered(broker: Broker) -> None:
    events = Events()
    subscription = await broker.subscribe_events(events, no_reconnect)
    await subscription.bind("task.mine")
    await broker.publish_event("task.other", b"other")
    await broker.publish_event("task.mine", b"mine")
    await events.wait_for(b"mine")
    assert events.received == [b"mine"]
    await subscription.close()


async def test_rabbitmq_priority_conflict_is_a_topology_conflict(amqp_url: str) -> None:
    # Given a queue declared with x-max-priority 10
    queue = queue_name()
    ten = taskq.broker.from_url(amqp_url, max_priority=10, publish_timeout=5)
    five = taskq.broker.from_url(amqp_url, max_priority=5, publish_timeout=5)
    await ten.connect()
    try:
        await ten.declare(queue)
        await five.connect()
        # When a broker configured for 5 priorities declares the same queue
        with pytest.raises(taskq.TopologyConflict) as caught:
            await five.declare(queue)
    finally:
        await five.close()
        await ten.close()
    # Then the error names the argument and says how to fix it
    message = str(caught.value)
    assert "x-max-priority" in message
    assert "max_priority=" in message
    assert "rabbitmqctl delete_queue" in message
    assert isinstance(caught.value, taskq.BrokerError)
