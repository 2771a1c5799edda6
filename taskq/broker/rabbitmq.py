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
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiormq.abc import DeliveredMessage

from taskq.broker import topology
from taskq.broker.base import (
    Broker,
    Browsed,
    ControlCallback,
    Delivery,
    DeliveryCallback,
    EventCallback,
    EventSubscription,
    QueueStats,
    Subscription,
)
from taskq.broker.lean_consumer import Delivered, LeanQueue
from taskq.config import redact_url, url_host
from taskq.exceptions import BrokerConnectionError, BrokerError, PublishError, TopologyConflict

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
RECONNECT_INTERVAL = 1.0
SHUTDOWN_CALL_TIMEOUT = 5.0  # the longest one broker call may hold up stopping
_CONNECTION_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, OSError, TimeoutError)


class RabbitMQBroker(Broker):
    def __init__(self, url: str, *, max_priority: int, publish_timeout: float) -> None:
        self._url = url
        self._host = url_host(url)
        self._max_priority = max_priority
        self._publish_timeout = publish_timeout
        self._publisher: AbstractRobustConnection | None = None
        self._consumer: AbstractRobustConnection | None = None
        self._confirming: AbstractChannel | None = None
        self._control_exchange: AbstractExchange | None = None
        self._event_exchange: AbstractExchange | None = None

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
                    topology.TASK_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
                )
                await self._confirming.declare_exchange(
                    topology.DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
                )
                self._control_exchange = await self._confirming.declare_exchange(
                    topology.CONTROL_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
                )
                self._event_exchange = await events.declare_exchange(
                    topology.EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
                )
        except BaseException:
            await self.close()
            raise

    @property
    def connected(self) -> bool:
        connections = (self._publisher, self._consumer)
        return all(c is not None and c.connected.is_set() for c in connections)

    async def _connect(self, role: str) -> AbstractRobustConnection:
        try:
            return await aio_pika.connect_robust(
                self._url,
                timeout=CONNECT_TIMEOUT,
                reconnect_interval=RECONNECT_INTERVAL,
                client_properties={"connection_name": f"taskq {role} pid {os.getpid()}"},
            )
        except aiormq.exceptions.ProbableAuthenticationError:
            raise BrokerConnectionError(
                f"RabbitMQ at {self._host} refused the login of {redact_url(self._url)}: "
                "check the user and password in TASKQ_BROKER_URL"
            ) from None
        except (*_CONNECTION_ERRORS, ValueError) as exc:
            raise BrokerConnectionError(
                f"cannot connect to RabbitMQ at {self._host} ({type(exc).__name__}: {exc}); "
                "check that it runs and that TASKQ_BROKER_URL is right"
            ) from None

    async def close(self) -> None:
        for connection in (self._consumer, self._publisher):
            if connection is not None:
                with contextlib.suppress(*_CONNECTION_ERRORS, RuntimeError):
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
        except (*_CONNECTION_ERRORS, RuntimeError, ValueError) as exc:
            raise BrokerError(
                f"RabbitMQ at {self._host}: could not {doing}: {type(exc).__name__}: {exc}"
            ) from None

    async def declare(self, queue: str) -> None:
        topology.validate_queue_name(queue)
        if self._publisher is None:
            raise BrokerError("the broker is not connected")
        # A throwaway channel: a conflicting declaration closes the channel it was sent on.
        async with self._errors(f"declare queue {queue!r}"):
            channel = await self._publisher.channel()
            try:
                main = await channel.declare_queue(
                    queue,
                    durable=True,
                    arguments=topology.queue_arguments(queue, self._max_priority),
                )
                await main.bind(topology.TASK_EXCHANGE, routing_key=queue)
                dlq = await channel.declare_queue(
                    topology.dlq_name(queue), durable=True, arguments=topology.dlq_arguments()
                )
                await dlq.bind(topology.DEAD_LETTER_EXCHANGE, routing_key=topology.dlq_name(queue))
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
            topology.TASK_EXCHANGE,
            queue,
            body,
            priority=priority,
            message_id=message_id,
            expiration=expiration,
        )

    async def publish_dead(self, queue: str, body: bytes, *, message_id: str) -> None:
        dlq = topology.dlq_name(queue)
        await self._publish_confirmed(
            topology.DEAD_LETTER_EXCHANGE, dlq, body, message_id=message_id
        )

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
            raise PublishError("the broker is not connected")
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
                channel = await confirming.get_underlay_channel()  # (the one since a reconnect)
                await channel.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=queue,
                    properties=properties,
                    mandatory=True,
                    timeout=max(remaining, 0.1),
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
            except (*_CONNECTION_ERRORS, RuntimeError) as exc:
                # Outcome unknown: retry on the reconnected channel; consumers dedupe.
                if time.monotonic() >= deadline:
                    raise PublishError(
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
                source = await channel.declare_queue(queue, passive=True)
                found: list[Browsed] = []
                while len(found) < limit:
                    message = await source.get(no_ack=False, fail=False, timeout=10)
                    if message is None:
                        break
                    found.append(_RabbitBrowsed(message))
            yield found
        finally:
            # Closing the channel puts every message not removed back, in its place.
            with contextlib.suppress(*_CONNECTION_ERRORS, RuntimeError):
                await channel.close()

    async def stats(self, queue: str) -> QueueStats | None:
        if self._publisher is None:
            raise BrokerError("the broker is not connected")
        async with self._errors(f"inspect queue {queue!r}"):
            channel = await self._publisher.channel()
            try:
                found = await channel.declare_queue(queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return None
            finally:
                with contextlib.suppress(*_CONNECTION_ERRORS, RuntimeError):
                    await channel.close()
            declared = found.declaration_result
            return QueueStats(
                ready=int(declared.message_count or 0),
                consumers=int(declared.consumer_count or 0),
            )

    async def purge(self, queue: str) -> int:
        if self._publisher is None:
            raise BrokerError("the broker is not connected")
        async with self._errors(f"purge queue {queue!r}"):
            channel = await self._publisher.channel()
            try:
                target = await channel.declare_queue(queue, passive=True)
                done = await target.purge()
                return int(done.message_count or 0)
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
            await queue.bind(topology.CONTROL_EXCHANGE)

            async def deliver(message: AbstractIncomingMessage) -> None:
                on_message(message.body)

            await queue.consume(deliver, no_ack=True)
        return _RabbitControl(channel)

    async def consume(
        self, queues: Sequence[str], *, prefetch: int, on_delivery: DeliveryCallback
    ) -> Subscription:
        if self._consumer is None:
            raise BrokerError("the broker is not connected")
        async with self._errors(f"consume {list(queues)}"):
            channel = await self._consumer.channel()
            channel.QUEUE_CLASS = LeanQueue  # (its consumers get deliveries unwrapped)
            # global_: one limit for the channel, shared by every queue consumed on it.
            await channel.set_qos(prefetch_count=prefetch, global_=True)
            subscription = _RabbitSubscription(channel, on_delivery)
            for name in queues:
                queue = await channel.declare_queue(
                    name,
                    durable=True,
                    arguments=topology.arguments_for(name, self._max_priority),
                )
                await subscription.start(queue)
            return subscription

    async def publish_event(self, key: str, body: bytes) -> None:
        if self._event_exchange is None:
            return
        async with self._errors("publish an event"):
            await self._event_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT),
                routing_key=key,
                mandatory=False,
                timeout=self._publish_timeout,
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
        return _RabbitEvents(channel, queue, self._errors, timeout=2.0)


class _RabbitSubscription(Subscription):
    def __init__(self, channel: AbstractChannel, on_delivery: DeliveryCallback) -> None:
        self._channel = channel
        self._on_delivery = on_delivery
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self._unsettled = 0
        self._cancelled = False
        # Acks wait here for the end of the loop's turn, then go out together (see `_acks`).
        self._open: dict[Any, dict[int, Delivered]] = {}  # channel → tag → msg
        self._acking: list[tuple[Delivered, asyncio.Future[None]]] = []
        self._ack_flush: asyncio.Task[None] | None = None

    async def set_prefetch(self, prefetch: int) -> None:
        if self._cancelled or self._channel.is_closed:
            return  # nothing more will be delivered on this channel anyway
        with contextlib.suppress(*_CONNECTION_ERRORS, RuntimeError):
            await self._channel.set_qos(prefetch_count=prefetch, global_=True, timeout=5)

    async def start(self, queue: AbstractQueue) -> None:
        assert isinstance(queue, LeanQueue)

        async def deliver(raw: DeliveredMessage) -> None:
            message = Delivered(raw)
            self._unsettled += 1
            self._open.setdefault(message.channel, {})[message.delivery_tag] = message
            self._on_delivery(_RabbitDelivery(message, queue.name, self))

        # (RobustQueue's signature names aio-pika's message type; LeanQueue passes aiormq's.)
        tag = await queue.consume(deliver, no_ack=False)  # type: ignore[arg-type]
        self._consumers.append((queue, tag))

    async def cancel(self) -> None:
        self._cancelled = True
        for queue, tag in self._consumers:
            # Bounded: while the broker is unreachable a robust channel would wait for ever,
            # and a stopping worker must not.
            with contextlib.suppress(*_CONNECTION_ERRORS, RuntimeError):
                async with asyncio.timeout(SHUTDOWN_CALL_TIMEOUT):
                    await queue.cancel(tag)
        await self._close_if_done()

    async def ack(self, message: Delivered) -> None:
        """Ack with the others of this turn of the loop: one `multiple` ack for the run of
        tags that nothing older is still open below, single acks for the rest."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acking.append((message, done))
        if self._ack_flush is None or self._ack_flush.done():
            self._ack_flush = asyncio.create_task(self._acks(), name="taskq-acks")
        await done

    def forget(self, message: Delivered) -> None:
        """A delivery settled otherwise (rejected): no longer open."""
        self._open.get(message.channel, {}).pop(message.delivery_tag, None)

    async def _acks(self) -> None:
        await asyncio.sleep(0)  # the rest of this turn's acks join
        while self._acking:
            batch, self._acking = self._acking, []
            try:
                await self._send_acks(batch)
            except BaseException as exc:
                # Never leave an executor waiting: whatever went wrong, its ack failed (the
                # broker redelivers the message, which a duplicate check makes harmless).
                failed = RuntimeError(f"ack failed: {type(exc).__name__}")
                for _, done in batch:
                    if not done.done():
                        done.set_exception(failed)
                if not isinstance(exc, Exception):
                    raise

    async def _send_acks(self, batch: list[tuple[Delivered, asyncio.Future[None]]]) -> None:
        by_channel: dict[Any, list[tuple[Delivered, asyncio.Future[None]]]] = {}
        for message, done in batch:
            by_channel.setdefault(message.channel, []).append((message, done))
            self.forget(message)
        for channel, acks in by_channel.items():
            still_open = self._open.get(channel, {})
            oldest_open = min(still_open, default=None)
            below = [m for m, _ in acks if oldest_open is None or m.delivery_tag < oldest_open]
            error = await _ack_run(below)
            for message, _ in acks:
                if message not in below and error is None:
                    error = await _ack_one(message)
            for _, done in acks:
                if done.done():
                    continue  # its waiter was cancelled
                if error is not None:
                    done.set_exception(error)
                else:
                    done.set_result(None)
            if not still_open:
                self._open.pop(channel, None)

    async def settled(self) -> None:
        self._unsettled -= 1
        await self._close_if_done()

    async def _close_if_done(self) -> None:
        # Closing the channel earlier would requeue deliveries still running.
        if self._cancelled and self._unsettled <= 0 and not self._channel.is_closed:
            with contextlib.suppress(*_CONNECTION_ERRORS, RuntimeError):
                async with asyncio.timeout(SHUTDOWN_CALL_TIMEOUT):
                    await self._channel.close()


class _RabbitDelivery(Delivery):
    def __init__(self, message: Delivered, queue: str, subscription: _RabbitSubscription) -> None:
        self.body = message.body
        self.queue = queue
        self.redelivered = message.redelivered
        self.message_id = message.message_id
        self._message = message
        self._subscription = subscription

    async def ack(self) -> None:
        await self._settle(self._subscription.ack(self._message))

    async def reject(self, *, requeue: bool) -> None:
        self._subscription.forget(self._message)
        await self._settle(self._message.reject(requeue=requeue))

    async def _settle(self, settling: Any) -> None:
        try:
            await settling
        except (*_CONNECTION_ERRORS, RuntimeError) as exc:
            # The delivery's channel is gone; RabbitMQ has requeued the message already.
            raise BrokerError(f"could not settle a delivery: {type(exc).__name__}") from None
        finally:
            await self._subscription.settled()


async def _ack_run(messages: list[Delivered]) -> BaseException | None:
    """One ack, `multiple`, for all of `messages` (nothing older is open on their channel)."""
    if not messages:
        return None
    newest = max(messages, key=lambda message: message.delivery_tag)
    return await _ack_one(newest, multiple=True)


async def _ack_one(message: Delivered, *, multiple: bool = False) -> Exception | None:
    """→ None, or why the ack failed (bounded: a channel in limbo must not hold a worker)."""
    try:
        async with asyncio.timeout(SHUTDOWN_CALL_TIMEOUT):
            await message.ack(multiple=multiple)
    except (*_CONNECTION_ERRORS, RuntimeError) as exc:
        return exc
    except Exception as exc:  # e.g. aio-pika's "message already processed"
        return RuntimeError(f"ack failed: {exc}")
    return None


class _RabbitBrowsed(Browsed):
    def __init__(self, message: AbstractIncomingMessage) -> None:
        self.body = message.body
        self.message_id = message.message_id or ""
        self.reason = _death_reason(message)
        self._message = message

    async def remove(self) -> None:
        await self._message.ack()


def _death_reason(message: AbstractIncomingMessage) -> str:
    deaths = (message.headers or {}).get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        reason = deaths[0].get("reason", "")
        return reason.decode() if isinstance(reason, bytes) else str(reason)
    return ""


class _RabbitControl(Subscription):
    def __init__(self, channel: AbstractChannel) -> None:
        self._channel = channel

    async def cancel(self) -> None:
        if not self._channel.is_closed:
            with contextlib.suppress(*_CONNECTION_ERRORS, RuntimeError):
                async with asyncio.timeout(SHUTDOWN_CALL_TIMEOUT):
                    await self._channel.close()


class _RabbitEvents(EventSubscription):
    def __init__(
        self, channel: AbstractChannel, queue: AbstractQueue, errors: Any, *, timeout: float
    ) -> None:
        self._channel = channel
        self._queue = queue
        self._errors = errors
        self._timeout = timeout

    async def bind(self, key: str) -> None:
        async with self._errors("bind an event key"):
            await self._queue.bind(topology.EVENTS_EXCHANGE, routing_key=key, timeout=self._timeout)

    async def unbind(self, key: str) -> None:
        async with self._errors("unbind an event key"):
            await self._queue.unbind(
                topology.EVENTS_EXCHANGE, routing_key=key, timeout=self._timeout
            )

    async def close(self) -> None:
        if not self._channel.is_closed:
            with contextlib.suppress(*_CONNECTION_ERRORS, RuntimeError):
                async with asyncio.timeout(SHUTDOWN_CALL_TIMEOUT):
                    await self._channel.close()


def _conflict(exc: aiormq.exceptions.ChannelPreconditionFailed) -> TopologyConflict:
    # RabbitMQ's text names the argument: "inequivalent arg 'x-max-priority' for queue ..."
    return TopologyConflict(
        f"RabbitMQ refused a declaration: {exc}. An existing queue has other arguments than "
        "taskq declares (most often x-max-priority: set App(max_priority=...) to the queue's "
        "value, or drain and delete the queue with `rabbitmqctl delete_queue NAME` so taskq "
        "can declare it afresh)"
    )
