"""RabbitMQ through aio-pika: robust connections, confirms, priorities and native DLX.

Publishing and consuming use separate connections, so a publisher blocked by a resource
alarm can never stall the acks of running tasks. No aio-pika or aiormq exception leaves
this module: each becomes a `BrokerError` that names the host, never the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import cast

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)

from taskq.broker import nodes, topology
from taskq.broker.base import (
    Broker,
    Browsed,
    ControlCallback,
    DeliveryCallback,
    EventCallback,
    EventSubscription,
    QueueStats,
    Subscription,
)
from taskq.broker.browsed import RabbitBrowsed
from taskq.broker.consumer import CONNECTION_ERRORS, SHUTDOWN_CALL_TIMEOUT, Consumption
from taskq.broker.subscriptions import ControlChannel, EventChannel
from taskq.config import redact_url
from taskq.exceptions import (
    BrokerConnectionError,
    BrokerError,
    PublishError,
    PublishUnconfirmed,
    TopologyConflict,
)

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
RECONNECT_INTERVAL = 1.0
# Events are hints (the store has the facts): not persisted, and no confirm waited for.
_TRANSIENT = aio_pika.DeliveryMode.NOT_PERSISTENT.value


class RabbitMQBroker(Broker):
    def __init__(
        self,
        url: str,
        *,
        max_priority: int,
        publish_timeout: float,
        namespace: str = "",
        queue_type: str = "classic",
        lanes: tuple[int, ...] = (0,),
    ) -> None:
        self._url = url
        self._nodes = nodes.node_urls(url)  # (one, or a cluster's: docs/deploying.md)
        self._names = topology.Names(namespace, queue_type, lanes)
        self._host = nodes.hosts_of(url)
        self._max_priority = max_priority
        self._publish_timeout = publish_timeout
        self._publisher: AbstractRobustConnection | None = None
        self._consumer: AbstractRobustConnection | None = None
        self._confirming: AbstractChannel | None = None
        self._control_exchange: AbstractExchange | None = None
        self._events: AbstractChannel | None = None  # (its exchange: `self._names.events`)

    def __repr__(self) -> str:
        return f"RabbitMQBroker({redact_url(self._url)!r})"

    async def connect(self) -> None:
        self._publisher = await self._connect("publisher")
        try:
            self._consumer = await self._connect("consumer")
            async with self._errors("open channels"):
                self._confirming = await self._publisher.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                events = await self._publisher.channel(publisher_confirms=False)
                await self._confirming.declare_exchange(
                    self._names.tasks, aio_pika.ExchangeType.DIRECT, durable=True
                )
                await self._confirming.declare_exchange(
                    self._names.dead_letters, aio_pika.ExchangeType.DIRECT, durable=True
                )
                self._control_exchange = await self._confirming.declare_exchange(
                    self._names.control, aio_pika.ExchangeType.FANOUT, durable=True
                )
                await events.declare_exchange(
                    self._names.events, aio_pika.ExchangeType.TOPIC, durable=True
                )
                self._events = events
        except BaseException:
            await self.close()
            raise

    @property
    def connected(self) -> bool:
        connections = (self._publisher, self._consumer)
        return all(c is not None and c.connected.is_set() for c in connections)

    async def _connect(self, role: str) -> AbstractRobustConnection:
        try:
            return await nodes.connect(
                self._nodes,
                timeout=CONNECT_TIMEOUT,
                reconnect_interval=RECONNECT_INTERVAL,
                client_properties={"connection_name": f"taskq {role} pid {os.getpid()}"},
            )
        except aiormq.exceptions.ProbableAuthenticationError:
            raise BrokerConnectionError(
                f"RabbitMQ at {self._host} refused the login of {redact_url(self._url)}: "
                "check the user and password in TASKQ_BROKER_URL"
            ) from None
        except (*CONNECTION_ERRORS, ValueError) as exc:
            raise BrokerConnectionError(
                f"cannot connect to RabbitMQ at {self._host} ({type(exc).__name__}: {exc}); "
                "check that it runs and that TASKQ_BROKER_URL is right"
            ) from None

    async def close(self) -> None:
        for connection in (self._consumer, self._publisher):
            if connection is not None:
                with contextlib.suppress(*CONNECTION_ERRORS, RuntimeError):
                    async with asyncio.timeout(SHUTDOWN_CALL_TIMEOUT):
                        await connection.close()
        self._consumer = self._publisher = None

    @contextlib.asynccontextmanager
    async def _errors(self, doing: str) -> AsyncIterator[None]:
        try:
            yield
        except BrokerError:
            raise
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise _conflict(exc) from None
        except (*CONNECTION_ERRORS, RuntimeError, ValueError) as exc:
            raise BrokerError(
                f"RabbitMQ at {self._host}: could not {doing}: {type(exc).__name__}: {exc}"
            ) from None

    async def declare(self, queue: str) -> None:
        topology.validate_routed_queue(queue)
        if self._publisher is None:
            raise BrokerError("the broker is not connected")
        # A throwaway channel: a conflicting declaration closes the channel it was sent on.
        async with self._errors(f"declare queue {queue!r}"):
            channel = await self._publisher.channel()
            try:
                for routed in self._names.lanes_of(queue):  # (one, but with priority lanes)
                    main = await channel.declare_queue(
                        self._names.queue(routed),
                        durable=True,
                        arguments=self._names.arguments(queue, self._max_priority),
                    )
                    await main.bind(self._names.tasks, routing_key=routed)
                dlq = await channel.declare_queue(
                    self._names.queue(topology.dlq_name(queue)),
                    durable=True,
                    arguments=self._names.arguments(topology.dlq_name(queue), self._max_priority),
                )
                await dlq.bind(self._names.dead_letters, routing_key=topology.dlq_name(queue))
            finally:
                if not channel.is_closed:
                    await channel.close()

    async def publish(
        self,
        queue: str,
        body: bytes,
        *,
        priority: int,
        message_id: str,
        expiration: float | None = None,
    ) -> None:
        await self._publish_confirmed(
            self._names.tasks,
            self._names.lane(queue, self._names.lane_of(priority)),
            body,
            priority=priority,
            message_id=message_id,
            expiration=expiration,
        )

    async def publish_dead(self, queue: str, body: bytes, *, message_id: str) -> None:
        dlq = topology.dlq_name(queue)
        await self._publish_confirmed(self._names.dead_letters, dlq, body, message_id=message_id)

    async def _publish_confirmed(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        priority: int = 0,
        expiration: float | None = None,
    ) -> None:
        queue, confirming = routing_key, self._confirming
        if confirming is None:
            raise PublishUnconfirmed("the broker is not connected")
        deadline = time.monotonic() + self._publish_timeout
        attempt = 0
        while True:
            attempt += 1
            # The properties as aio-pika's Message would make them, without the Message (10
            # of the 12 us it adds to a publish; submit_many sends thousands).
            properties = aiormq.spec.Basic.Properties(
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT.value,
                priority=priority,
                content_type="application/x-msgpack",
                # Unique per try: aiormq matches returns to publishes by message id.
                message_id=f"{message_id}:{attempt}",
                # Per-message TTL in ms: RabbitMQ dead-letters it as expired (at the head).
                expiration=None if expiration is None else str(max(int(expiration * 1000), 1)),
            )
            remaining = deadline - time.monotonic()
            try:
                if confirming.is_closed:
                    raise aiormq.exceptions.ChannelInvalidStateError("the channel is closed")
                channel = await _underlay(confirming)
                await channel.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=queue,
                    properties=properties,
                    mandatory=True,
                    timeout=max(remaining, 0.1),
                    # Not holding the channel's lock until the frame is written (a turn of
                    # the loop per publish, one publish at a time): the confirm says more.
                    wait=False,
                )
                return
            except aiormq.exceptions.PublishError:
                raise PublishError(
                    f"RabbitMQ at {self._host} could not route the message to queue {queue!r} "
                    "(no such queue); declare it first"
                ) from None
            except aiormq.exceptions.DeliveryError as exc:
                raise PublishError(
                    f"RabbitMQ at {self._host} refused the message for queue {queue!r}: {exc}"
                ) from None
            except (*CONNECTION_ERRORS, RuntimeError) as exc:
                # Outcome unknown: retry on the reconnected channel; consumers dedupe.
                if time.monotonic() >= deadline:
                    raise PublishUnconfirmed(
                        f"RabbitMQ at {self._host} did not confirm the message for queue "
                        f"{queue!r} within {self._publish_timeout} s "
                        f"({type(exc).__name__}: {exc})"
                    ) from None
                logger.warning(
                    "publish to %s not confirmed (%s); retrying", queue, type(exc).__name__
                )
                await asyncio.sleep(min(0.2 * attempt, 1.0, max(deadline - time.monotonic(), 0)))

    @contextlib.asynccontextmanager
    async def browse(self, queue: str, *, limit: int) -> AsyncIterator[list[Browsed]]:
        if self._consumer is None:
            raise BrokerError("the broker is not connected")
        async with self._errors(f"read queue {queue!r}"):
            channel = await self._consumer.channel()
        try:
            async with self._errors(f"read queue {queue!r}"):
                source = await channel.declare_queue(self._names.queue(queue), passive=True)
                found: list[Browsed] = []
                while len(found) < limit:
                    message = await source.get(no_ack=False, fail=False, timeout=10)
                    if message is None:
                        break
                    found.append(RabbitBrowsed(message))
            yield found
        finally:
            # Closing the channel puts every message not removed back, in its place.
            with contextlib.suppress(*CONNECTION_ERRORS, RuntimeError):
                await channel.close()

    async def stats(self, queue: str) -> QueueStats | None:
        if self._publisher is None:
            raise BrokerError("the broker is not connected")
        async with self._errors(f"inspect queue {queue!r}"):
            channel = await self._publisher.channel()
            try:
                found = [
                    (
                        await channel.declare_queue(self._names.queue(name), passive=True)
                    ).declaration_result
                    for name in self._names.lanes_of(queue)
                ]
            except aiormq.exceptions.ChannelNotFoundEntity:
                return None
            finally:
                with contextlib.suppress(*CONNECTION_ERRORS, RuntimeError):
                    await channel.close()
            return QueueStats(  # (of every lane: consumers take from each)
                ready=sum(int(declared.message_count or 0) for declared in found),
                consumers=int(found[0].consumer_count or 0),
            )

    async def purge(self, queue: str) -> int:
        if self._publisher is None:
            raise BrokerError("the broker is not connected")
        async with self._errors(f"purge queue {queue!r}"):
            channel = await self._publisher.channel()
            try:
                purged = 0
                for name in self._names.lanes_of(queue):
                    target = await channel.declare_queue(self._names.queue(name), passive=True)
                    purged += int((await target.purge()).message_count or 0)
                return purged
            finally:
                await channel.close()

    async def publish_control(self, body: bytes) -> None:
        if self._control_exchange is None:
            raise PublishError("the broker is not connected")
        async with self._errors("send a control message"):
            await self._control_exchange.publish(
                aio_pika.Message(body),
                routing_key="",
                mandatory=False,
                timeout=self._publish_timeout,
            )

    async def subscribe_control(self, on_message: ControlCallback) -> Subscription:
        if self._consumer is None:
            raise BrokerError("the broker is not connected")
        async with self._errors("subscribe to control messages"):
            channel = await self._consumer.channel()
            queue = await channel.declare_queue(
                f"taskq.control.{uuid.uuid4().hex}", exclusive=True, auto_delete=True
            )
            await queue.bind(self._names.control)

            async def deliver(message: AbstractIncomingMessage) -> None:
                on_message(message.body)

            await queue.consume(deliver, no_ack=True)
        return ControlChannel(channel)

    async def consume(
        self, queues: Sequence[str], *, prefetch: int, on_delivery: DeliveryCallback
    ) -> Subscription:
        if self._consumer is None:
            raise BrokerError("the broker is not connected")
        async with self._errors(f"consume {list(queues)}"):
            channel = await self._consumer.channel()
            # global_: one limit for the channel, shared by every queue consumed on it (the
            # robust channel sets it again when it reopens, before consumers come back).
            # Quorum queues refuse it: each of their consumers gets the limit (so a worker
            # consuming several may hold more than its slots; the extra wait for one).
            shared = self._names.queue_type == "classic"
            # Priority lanes: one more each, so that when a slot frees, the next message of
            # a higher lane is in the worker already, not still on its way.
            lanes = len(self._names.lanes)
            await channel.set_qos(prefetch_count=prefetch + (lanes > 1), global_=shared)
            subscription = Consumption(channel, on_delivery, shared_prefetch=shared)
            for name in queues:
                # (the highest lane first: it is served first)
                for lane, routed in reversed(list(enumerate(self._names.lanes_of(name)))):
                    queue = await channel.declare_queue(
                        self._names.queue(routed),
                        durable=True,
                        arguments=self._names.arguments(name, self._max_priority),
                    )
                    await subscription.start(queue, name, lane)
            return subscription

    async def publish_event(self, key: str, body: bytes) -> None:
        """On the events channel's own aiormq channel, like a task's message: aio-pika's
        `Message` and `Exchange.publish` cost a worker more than the event itself, twice
        a task, and they sit between an outcome stored and its waiter hearing of it."""
        events = self._events
        if events is None:
            return
        async with self._errors("publish an event"):
            if events.is_closed:
                raise aiormq.exceptions.ChannelInvalidStateError("the channel is closed")
            channel = await _underlay(events)
            await channel.basic_publish(
                body,
                exchange=self._names.events,
                routing_key=key,
                # (new each time: aiormq writes a message id into the properties it gets)
                properties=aiormq.spec.Basic.Properties(delivery_mode=_TRANSIENT),
                timeout=self._publish_timeout,
                wait=False,  # (queued for the connection's writer: nothing to wait for)
            )

    async def subscribe_events(
        self, on_event: EventCallback, on_reconnect: Callable[[], None]
    ) -> EventSubscription:
        connection = self._consumer
        if connection is None:
            raise BrokerError("the broker is not connected")
        async with self._errors("subscribe to task events"):
            channel = await connection.channel()
            queue = await channel.declare_queue(
                f"taskq.events.{uuid.uuid4().hex}", exclusive=True, auto_delete=True
            )

            async def deliver(message: AbstractIncomingMessage) -> None:
                on_event(message.body)

            await queue.consume(deliver, no_ack=True)
        connection.reconnect_callbacks.add(lambda *_: on_reconnect())
        # Short: a waiter that cannot bind falls back to re-reading the store.
        return EventChannel(channel, queue, self._errors, self._names.events, timeout=2.0)


async def _underlay(channel: AbstractChannel) -> aiormq.Channel:
    """The robust channel's aiormq channel (the one since a reconnect), whose `basic_publish`
    takes `wait` (its abstract class does not say so: tests/unit/test_pinned_contracts.py)."""
    return cast(aiormq.Channel, await channel.get_underlay_channel())


def _conflict(exc: aiormq.exceptions.ChannelPreconditionFailed) -> TopologyConflict:
    # RabbitMQ's text names the argument: "inequivalent arg 'x-max-priority' for queue ..."
    return TopologyConflict(
        f"RabbitMQ refused a declaration: {exc}. An existing queue has other arguments than "
        "taskq declares (most often x-max-priority: set App(max_priority=...) to the queue's "
        "value; x-queue-type: TASKQ_QUEUE_TYPE must match how the queue was made), or drain "
        "and delete the queue with `rabbitmqctl delete_queue NAME` so taskq can declare it "
        "afresh"
    )
