"""Task messages consumed with aiormq's own `basic_consume`, on a robust channel.

aio-pika hands each delivery to a consumer as an `IncomingMessage` (a dozen properties
decoded and checked), from a task of its own. For a worker draining short tasks that was a
tenth of its CPU. So the worker's consumer calls `basic_consume` on the robust channel's
current aiormq channel itself, and gets aiormq's `DeliveredMessage` as it comes. aio-pika
knows nothing of these consumers, so `RawConsumer` restores them itself, through the public
hooks: the channel's `reopen_callbacks` (after a reconnect or a channel error, once the
channel has re-declared its queues and restored its QoS) and aiormq's
`on_consumer_cancel_callbacks` (the broker cancelled a consumer: its queue was deleted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import aiormq
from aio_pika.abc import AbstractQueue, AbstractRobustChannel
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic

from taskq.broker.base import Delivery, DeliveryCallback, Subscription
from taskq.exceptions import BrokerError

logger = logging.getLogger(__name__)

RawCallback = Callable[[DeliveredMessage], Coroutine[Any, Any, None]]

CONNECTION_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, OSError, TimeoutError)
SHUTDOWN_CALL_TIMEOUT = 5.0  # the longest one broker call may hold up stopping
CONSUME_TIMEOUT = 5.0  # one Basic.Consume or queue declaration while restoring
RETRY_INTERVAL = 1.0  # between tries to restore a consumer the broker cancelled


class RawConsumer:
    """Consumers on one robust channel whose callbacks get aiormq's `DeliveredMessage`,
    consumed again whenever the channel reopens or the broker cancels them.

    Each consumer keeps its tag for life (taskq-<uuid>) and the aiormq channel it was last
    consumed on, so restoring one twice on the same aiormq channel is seen and skipped.
    """

    def __init__(self, channel: AbstractRobustChannel) -> None:
        self._channel = channel
        self._queues: dict[str, tuple[AbstractQueue, RawCallback]] = {}  # by consumer tag
        self._consuming_on: dict[str, AbstractChannel] = {}  # tag → where it consumes now
        self._cancelled = False
        self._lock = asyncio.Lock()  # one restore at a time: a reopen and a cancel may race
        self._recovery: asyncio.Task[None] | None = None
        channel.reopen_callbacks.add(self._on_reopen)
        channel.close_callbacks.add(_explain_close)

    async def consume(self, queue: AbstractQueue, callback: RawCallback) -> str:
        """Consume `queue` (declared on this channel, robust: re-declared on reopen)."""
        tag = f"taskq-{uuid.uuid4().hex}"
        self._queues[tag] = (queue, callback)
        async with self._lock:
            await self._consume_missing(await self._channel.get_underlay_channel())
        return tag

    async def cancel(self) -> None:
        """Stop every consumer; nothing restores them after this. Bounded: while the broker
        is unreachable a robust channel would wait for ever, and a stopping worker must not."""
        self._cancelled = True
        self._channel.reopen_callbacks.discard(self._on_reopen)
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        if self._channel.is_closed:
            return  # its consumers went with it
        with contextlib.suppress(*CONNECTION_ERRORS, RuntimeError):
            async with asyncio.timeout(SHUTDOWN_CALL_TIMEOUT):
                channel = await self._channel.get_underlay_channel()
                for tag, on in self._consuming_on.items():
                    if on is channel:
                        await channel.basic_cancel(tag)

    async def _consume_missing(self, channel: AbstractChannel, *, declare: bool = False) -> None:
        """Basic.Consume each queue that has no consumer of ours on `channel` (the lock held)."""
        # A set: adding the same bound method again (each reopen) keeps one.
        channel.on_consumer_cancel_callbacks.add(self._on_broker_cancel)
        for tag, (queue, callback) in self._queues.items():
            if self._cancelled or self._consuming_on.get(tag) is channel:
                continue
            if declare:  # the broker cancelled it because the queue was deleted
                await queue.declare(timeout=CONSUME_TIMEOUT)
            await channel.basic_consume(
                queue.name, callback, consumer_tag=tag, timeout=CONSUME_TIMEOUT
            )
            self._consuming_on[tag] = channel

    async def _on_reopen(self, reopened: AbstractRobustChannel | None) -> None:
        # Called by aio-pika after the reopened channel re-declared its queues and its QoS,
        # so deliveries resume under the same prefetch. aio-pika gathers this callback and
        # drops its errors, hence the retry below.
        try:
            async with self._lock:
                await self._consume_missing(await self._channel.get_underlay_channel())
        except (*CONNECTION_ERRORS, RuntimeError) as exc:
            logger.warning(
                "could not consume again after a reopen (%s: %s); retrying",
                type(exc).__name__,
                exc,
                extra={"action": "consume_restore_failed"},
            )
            self._recover()

    def _on_broker_cancel(self, frame: Basic.Cancel) -> None:
        if frame.consumer_tag in self._queues and not self._cancelled:
            self._consuming_on.pop(frame.consumer_tag, None)
            self._recover()

    def _recover(self) -> None:
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.create_task(self._restore(), name="taskq-consume-restore")

    async def _restore(self) -> None:
        """Declare the queues again and consume them, until that works or `cancel`."""
        while not self._cancelled:
            try:
                # Bounded: the lock must never wait on a broker that does not answer.
                async with self._lock, asyncio.timeout(2 * CONSUME_TIMEOUT):
                    channel = await self._channel.get_underlay_channel()
                    await self._consume_missing(channel, declare=True)
                logger.info("consuming again", extra={"action": "consume_restored"})
                return
            except (*CONNECTION_ERRORS, RuntimeError) as exc:
                # A closed channel reopens by itself and calls `_on_reopen`; this retry
                # covers a channel that stays open (the queue could not be declared yet).
                logger.warning(
                    "could not consume again (%s: %s); retrying in %s s",
                    type(exc).__name__,
                    exc,
                    RETRY_INTERVAL,
                    extra={"action": "consume_restore_failed"},
                )
            await asyncio.sleep(RETRY_INTERVAL)


class Delivered:
    """A delivered task message: what the worker reads of it, and its ack or reject."""

    __slots__ = ("_settled", "body", "channel", "delivery_tag", "message_id", "redelivered")

    def __init__(self, message: DeliveredMessage) -> None:
        delivery = message.delivery
        assert isinstance(delivery, Basic.Deliver)  # (what a consumer is given)
        self.body: bytes = message.body
        self.channel: AbstractChannel = message.channel
        self.delivery_tag: int = delivery.delivery_tag or 0
        self.redelivered = bool(delivery.redelivered)
        self.message_id: str = message.header.properties.message_id or ""
        self._settled = False

    async def ack(self, *, multiple: bool = False) -> None:
        """Ack this delivery (and with `multiple`, every earlier one on its channel)."""
        self._settle()
        await self.channel.basic_ack(self.delivery_tag, multiple=multiple, wait=False)

    async def reject(self, *, requeue: bool) -> None:
        self._settle()
        await self.channel.basic_reject(self.delivery_tag, requeue=requeue)

    def _settle(self) -> None:
        if self._settled:
            raise RuntimeError(f"delivery {self.delivery_tag} was settled already")
        self._settled = True


class Consumption(Subscription):
    """The worker's consumption of its queues on one channel: deliveries, batched acks,
    and a channel closed only once every delivery is settled."""

    def __init__(
        self,
        channel: AbstractRobustChannel,
        on_delivery: DeliveryCallback,
        *,
        shared_prefetch: bool = True,
    ) -> None:
        self._channel = channel
        self._shared_prefetch = shared_prefetch  # (else per consumer: quorum queues)
        self._on_delivery = on_delivery
        self._consumer = RawConsumer(channel)
        self._unsettled = 0
        self._cancelled = False
        # Acks wait here for the end of the loop's turn, then go out together (see `_acks`).
        self._open: dict[Any, dict[int, Delivered]] = {}  # channel → tag → msg
        self._acking: list[Delivered] = []
        self._ack_flush: asyncio.Task[None] | None = None

    async def set_prefetch(self, prefetch: int) -> None:
        if self._cancelled or self._channel.is_closed:
            return  # nothing more will be delivered on this channel anyway
        with contextlib.suppress(*CONNECTION_ERRORS, RuntimeError):
            await self._channel.set_qos(
                prefetch_count=prefetch, global_=self._shared_prefetch, timeout=5
            )

    async def start(self, queue: AbstractQueue, name: str, lane: int = 0) -> None:
        """Consume `queue`, whose deliveries say they came from taskq queue `name` (the
        broker's name of it has the namespace in front, and the lane's mark behind)."""

        async def deliver(raw: DeliveredMessage) -> None:
            message = Delivered(raw)
            self._unsettled += 1
            self._open.setdefault(message.channel, {})[message.delivery_tag] = message
            self._on_delivery(RabbitDelivery(message, name, self, lane))

        await self._consumer.consume(queue, deliver)

    async def cancel(self) -> None:
        self._cancelled = True
        await self._consumer.cancel()
        await self._close_if_done()

    def ack(self, message: Delivered) -> None:
        """Queue an ack; it goes out with the others of this turn of the loop: one `multiple`
        ack for the run of tags that nothing older is still open below, single acks for the
        rest. Nobody waits for it: an ack that fails leaves the message to be redelivered,
        and its claim finds the row final (an awaited ack could only have logged that)."""
        self._acking.append(message)
        if self._ack_flush is None or self._ack_flush.done():
            self._ack_flush = asyncio.create_task(self._acks(), name="taskq-acks")

    def forget(self, message: Delivered) -> None:
        """A delivery settled otherwise (rejected): no longer open."""
        self._open.get(message.channel, {}).pop(message.delivery_tag, None)

    async def _acks(self) -> None:
        await asyncio.sleep(0)  # the rest of this turn's acks join
        while self._acking:
            batch, self._acking = self._acking, []
            error = await self._send_acks(batch)
            if error is not None:
                logger.info(
                    "could not ack %d deliveries (%s); the broker will redeliver them",
                    len(batch),
                    error,
                    extra={"action": "ack_failed"},
                )

    async def _send_acks(self, batch: list[Delivered]) -> BaseException | None:
        """→ None, or why an ack of the batch failed."""
        by_channel: dict[Any, list[Delivered]] = {}
        for message in batch:
            by_channel.setdefault(message.channel, []).append(message)
            self.forget(message)
        error: BaseException | None = None
        for channel, acks in by_channel.items():
            still_open = self._open.get(channel, {})
            oldest_open = min(still_open, default=None)
            below: list[Delivered] = []
            above: list[Delivered] = []
            for message in acks:
                under = oldest_open is None or message.delivery_tag < oldest_open
                (below if under else above).append(message)
            error = await _ack_run(below) or error
            for message in above:
                error = await _ack_one(message) or error
            if not still_open:
                self._open.pop(channel, None)
        return error

    async def settled(self) -> None:
        self._unsettled -= 1
        await self._close_if_done()

    async def _close_if_done(self) -> None:
        # Closing the channel earlier would requeue deliveries still running.
        if self._cancelled and self._unsettled <= 0 and not self._channel.is_closed:
            if self._ack_flush is not None:  # (its acks go out first)
                await asyncio.shield(self._ack_flush)
            with contextlib.suppress(*CONNECTION_ERRORS, RuntimeError):
                async with asyncio.timeout(SHUTDOWN_CALL_TIMEOUT):
                    await self._channel.close()


class RabbitDelivery(Delivery):
    def __init__(
        self, message: Delivered, queue: str, subscription: Consumption, lane: int = 0
    ) -> None:
        self.body = message.body
        self.queue = queue
        self.lane = lane
        self.redelivered = message.redelivered
        self.message_id = message.message_id
        self._message = message
        self._subscription = subscription

    async def ack(self) -> None:
        self._subscription.ack(self._message)
        await self._subscription.settled()

    async def reject(self, *, requeue: bool) -> None:
        self._subscription.forget(self._message)
        await self._settle(self._message.reject(requeue=requeue))

    async def _settle(self, settling: Any) -> None:
        try:
            await settling
        except (*CONNECTION_ERRORS, RuntimeError) as exc:
            # The delivery's channel is gone; RabbitMQ has requeued the message already.
            raise BrokerError(f"could not settle a delivery: {type(exc).__name__}") from None
        finally:
            await self._subscription.settled()


def _explain_close(channel: object, exc: BaseException | None) -> None:
    """RabbitMQ closes a channel whose delivery went unacknowledged past its
    consumer_timeout (a 406): say so, and what to do, rather than a bare reconnect."""
    text = str(exc)
    if "PRECONDITION_FAILED" in text and "acknowledgement" in text and "timed out" in text:
        logger.error(
            "RabbitMQ closed the consumer channel: a delivery went unacknowledged past its "
            "consumer_timeout (%s). The tasks running keep running, kept by leases, and their "
            "redelivered copies are acked, not run again; to avoid this, raise RabbitMQ's "
            "consumer_timeout above TASKQ_LEASE_AFTER, or lower TASKQ_LEASE_AFTER below it",
            text,
            extra={"action": "consumer_timeout"},
        )


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
    except (*CONNECTION_ERRORS, RuntimeError) as exc:
        return exc
    except Exception as exc:  # e.g. aio-pika's "message already processed"
        return RuntimeError(f"ack failed: {exc}")
    return None
