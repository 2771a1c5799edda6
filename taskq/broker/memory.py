"""An in-process broker with RabbitMQ's semantics: priorities, prefetch, acks, dead letters,
per-message expiry. For the embedded default and users' tests; messages live in this process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence

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
from taskq.exceptions import BrokerError, PublishError


@dataclasses.dataclass(eq=False)
class _Message:
    body: bytes
    message_id: str
    priority: int
    sequence: int
    redelivered: bool = False
    expires: float | None = None  # time.monotonic() deadline
    reason: str = ""

    def key(self) -> tuple[int, int]:
        """Heap order: highest priority first, then first in, first out."""
        return (-self.priority, self.sequence)


class MemoryBroker(Broker):
    def __init__(self, *, max_priority: int = topology.DEFAULT_MAX_PRIORITY) -> None:
        self._max_priority = max_priority
        self._queues: dict[str, list[tuple[tuple[int, int], _Message]]] = {}
        self._consumers: list[_MemorySubscription] = []
        self._event_subscriptions: list[_MemoryEvents] = []
        self._control: list[_MemoryControl] = []
        self._sequence = itertools.count()
        self._open = False

    async def connect(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False
        for subscription in list(self._consumers):
            await subscription.cancel()

    @property
    def connected(self) -> bool:
        return self._open

    async def declare(self, queue: str) -> None:
        topology.validate_routed_queue(queue)
        self._queues.setdefault(queue, [])
        self._queues.setdefault(topology.dlq_name(queue), [])

    async def publish(
        self,
        queue: str,
        body: bytes,
        *,
        priority: int,
        message_id: str,
        expiration: float | None = None,
    ) -> None:
        if not self._open:
            raise PublishError("the memory broker is closed")
        if queue not in self._queues:
            raise PublishError(f"queue {queue!r} is not declared; the message was not routed")
        expires = None if expiration is None else time.monotonic() + max(expiration, 0.0)
        self._push(queue, self._message(body, f"{message_id}:1", priority, expires=expires))

    async def publish_dead(self, queue: str, body: bytes, *, message_id: str) -> None:
        message = self._message(body, f"{message_id}:1", 0, reason="rejected")
        self._push(topology.dlq_name(queue), message)

    @contextlib.asynccontextmanager
    async def browse(self, queue: str, *, limit: int) -> AsyncIterator[list[Browsed]]:
        self._expire(queue)
        entries = sorted(self._queues.get(queue, []), key=lambda entry: entry[0])[:limit]
        yield [_MemoryBrowsed(self, queue, message) for _, message in entries]

    async def stats(self, queue: str) -> QueueStats | None:
        if queue not in self._queues:
            return None
        consumers = [s for s in self._consumers if s.active and queue in s.queues]
        unacked = sum(1 for s in consumers for d in s.unsettled if d.queue == queue)
        return QueueStats(ready=len(self._queues[queue]), consumers=len(consumers), unacked=unacked)

    async def purge(self, queue: str) -> int:
        count = len(self._queues.get(queue, []))
        self._queues[queue] = []
        return count

    async def consume(
        self, queues: Sequence[str], *, prefetch: int, on_delivery: DeliveryCallback
    ) -> Subscription:
        missing = [q for q in queues if q not in self._queues]
        if missing:
            raise BrokerError(f"cannot consume undeclared queues {missing}")
        subscription = _MemorySubscription(self, list(queues), prefetch, on_delivery)
        self._consumers.append(subscription)
        self._dispatch()
        return subscription

    async def publish_event(self, key: str, body: bytes) -> None:
        for subscription in list(self._event_subscriptions):
            if any(topology.topic_matches(pattern, key) for pattern in subscription.keys):
                subscription.on_event(body)

    async def subscribe_events(
        self, on_event: EventCallback, on_reconnect: Callable[[], None]
    ) -> EventSubscription:
        subscription = _MemoryEvents(self, on_event)
        self._event_subscriptions.append(subscription)
        return subscription

    async def publish_control(self, body: bytes) -> None:
        for subscription in list(self._control):
            subscription.on_message(body)

    async def subscribe_control(self, on_message: ControlCallback) -> Subscription:
        subscription = _MemoryControl(self, on_message)
        self._control.append(subscription)
        return subscription

    def messages(self, queue: str) -> list[bytes]:
        """Bodies waiting in `queue`, in delivery order (for tests and inspection)."""
        return [message.body for _, message in sorted(self._queues.get(queue, []))]

    def _message(
        self,
        body: bytes,
        message_id: str,
        priority: int,
        *,
        expires: float | None = None,
        reason: str = "",
    ) -> _Message:
        level = max(0, min(priority, self._max_priority))
        return _Message(
            body, message_id, level, next(self._sequence), expires=expires, reason=reason
        )

    def _push(self, queue: str, message: _Message) -> None:
        heapq.heappush(self._queues[queue], (message.key(), message))
        self._dispatch()

    def _requeue(self, queue: str, message: _Message) -> None:
        # Back to its old place (same key), as RabbitMQ does where it can.
        message.redelivered = True
        self._push(queue, message)

    def _dead_letter(self, queue: str, message: _Message, reason: str) -> None:
        dead = self._message(message.body, message.message_id, 0, reason=reason)
        self._push(topology.dlq_name(queue), dead)

    def _expire(self, queue: str) -> None:
        """Dead-letter expired messages at the head, as RabbitMQ does (only at the head)."""
        entries = self._queues.get(queue, [])
        now = time.monotonic()
        while entries and (expires := entries[0][1].expires) is not None and expires <= now:
            _, message = heapq.heappop(entries)
            self._dead_letter(queue, message, "expired")

    def _dispatch(self) -> None:
        """Hand messages to consumers with free prefetch slots, highest priority first."""
        progress = True
        while progress:
            progress = False
            for subscription in self._consumers:
                if subscription.free_slots() <= 0:
                    continue
                queue = self._best_queue(subscription.queues)
                if queue is None:
                    continue
                _, message = heapq.heappop(self._queues[queue])
                subscription.deliver(_MemoryDelivery(self, subscription, queue, message))
                progress = True

    def _best_queue(self, queues: Sequence[str]) -> str | None:
        for queue in queues:
            self._expire(queue)
        ready = [(self._queues[q][0][0], q) for q in queues if self._queues.get(q)]
        return min(ready)[1] if ready else None


class _MemorySubscription(Subscription):
    def __init__(
        self,
        broker: MemoryBroker,
        queues: list[str],
        prefetch: int,
        on_delivery: DeliveryCallback,
    ) -> None:
        self.queues = queues
        self._broker = broker
        self._prefetch = prefetch
        self._on_delivery = on_delivery
        self.unsettled: set[_MemoryDelivery] = set()
        self.active = True

    def free_slots(self) -> int:
        return self._prefetch - len(self.unsettled) if self.active else 0

    async def set_prefetch(self, prefetch: int) -> None:
        self._prefetch = prefetch
        self._broker._dispatch()

    def deliver(self, delivery: _MemoryDelivery) -> None:
        self.unsettled.add(delivery)
        self._on_delivery(delivery)

    def settled(self, delivery: _MemoryDelivery) -> None:
        self.unsettled.discard(delivery)
        if not self.active and not self.unsettled and self in self._broker._consumers:
            self._broker._consumers.remove(self)
        self._broker._dispatch()

    async def cancel(self) -> None:
        self.active = False
        if not self.unsettled and self in self._broker._consumers:
            self._broker._consumers.remove(self)


class _MemoryDelivery(Delivery):
    def __init__(
        self,
        broker: MemoryBroker,
        subscription: _MemorySubscription,
        queue: str,
        message: _Message,
    ) -> None:
        self.body = message.body
        self.queue = queue
        self.redelivered = message.redelivered
        self.message_id = message.message_id
        self._broker = broker
        self._subscription = subscription
        self._message = message
        self._settled = False

    def _settle(self) -> None:
        if self._settled:
            raise BrokerError("delivery already settled (acked or rejected twice)")
        self._settled = True

    async def ack(self) -> None:
        self._settle()
        self._subscription.settled(self)

    async def reject(self, *, requeue: bool) -> None:
        self._settle()
        if requeue:
            self._broker._requeue(self.queue, self._message)
        else:
            self._broker._dead_letter(self.queue, self._message, "rejected")
        self._subscription.settled(self)


class _MemoryBrowsed(Browsed):
    def __init__(self, broker: MemoryBroker, queue: str, message: _Message) -> None:
        self.body = message.body
        self.message_id = message.message_id
        self.reason = message.reason
        self._broker = broker
        self._queue = queue
        self._message = message

    async def remove(self) -> None:
        entries = self._broker._queues.get(self._queue, [])
        kept = [entry for entry in entries if entry[1] is not self._message]
        heapq.heapify(kept)
        self._broker._queues[self._queue] = kept


class _MemoryEvents(EventSubscription):
    def __init__(self, broker: MemoryBroker, on_event: EventCallback) -> None:
        self._broker = broker
        self.on_event = on_event
        self.keys: set[str] = set()

    async def bind(self, key: str) -> None:
        self.keys.add(key)

    async def unbind(self, key: str) -> None:
        self.keys.discard(key)

    async def close(self) -> None:
        if self in self._broker._event_subscriptions:
            self._broker._event_subscriptions.remove(self)


class _MemoryControl(Subscription):
    def __init__(self, broker: MemoryBroker, on_message: ControlCallback) -> None:
        self._broker = broker
        self.on_message = on_message

    async def cancel(self) -> None:
        if self in self._broker._control:
            self._broker._control.remove(self)
