"""An in-process broker with RabbitMQ's semantics: priorities, prefetch, acks, dead letters.

For the embedded default and users' tests. Messages live in this process only.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence

from taskq.broker import topology
from taskq.broker.base import (
    Broker,
    Delivery,
    DeliveryCallback,
    EventCallback,
    EventSubscription,
    Subscription,
)
from taskq.exceptions import BrokerError, PublishError

# (-priority, sequence, body, redelivered, message id): the heap pops the highest priority,
# then FIFO.
_Item = tuple[int, int, bytes, bool, str]


class MemoryBroker(Broker):
    def __init__(self, *, max_priority: int = topology.DEFAULT_MAX_PRIORITY) -> None:
        self._max_priority = max_priority
        self._queues: dict[str, list[_Item]] = {}
        self._consumers: list[_MemorySubscription] = []
        self._event_subscriptions: list[_MemoryEvents] = []
        self._sequence = itertools.count()
        self._open = False

    async def connect(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False
        for subscription in list(self._consumers):
            await subscription.cancel()

    async def declare(self, queue: str) -> None:
        topology.validate_queue_name(queue)
        self._queues.setdefault(queue, [])
        self._queues.setdefault(topology.dlq_name(queue), [])

    async def publish(self, queue: str, body: bytes, *, priority: int, message_id: str) -> None:
        if not self._open:
            raise PublishError("the memory broker is closed")
        if queue not in self._queues:
            raise PublishError(f"queue {queue!r} is not declared; the message was not routed")
        self._push(queue, body, priority, redelivered=False, message_id=f"{message_id}:1")

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
            if key in subscription.keys:
                subscription.on_event(body)

    async def subscribe_events(
        self, on_event: EventCallback, on_reconnect: Callable[[], None]
    ) -> EventSubscription:
        subscription = _MemoryEvents(self, on_event)
        self._event_subscriptions.append(subscription)
        return subscription

    def messages(self, queue: str) -> list[bytes]:
        """Bodies waiting in `queue`, in delivery order (for tests and inspection)."""
        return [item[2] for item in sorted(self._queues.get(queue, []))]

    def _push(
        self, queue: str, body: bytes, priority: int, *, redelivered: bool, message_id: str
    ) -> None:
        level = max(0, min(priority, self._max_priority))
        item = (-level, next(self._sequence), body, redelivered, message_id)
        heapq.heappush(self._queues[queue], item)
        self._dispatch()

    def _requeue(self, queue: str, item: _Item) -> None:
        # Back to its old place, as RabbitMQ does where it can.
        heapq.heappush(self._queues[queue], (item[0], item[1], item[2], True, item[4]))
        self._dispatch()

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
                item = heapq.heappop(self._queues[queue])
                subscription.deliver(_MemoryDelivery(self, subscription, queue, item))
                progress = True

    def _best_queue(self, queues: Sequence[str]) -> str | None:
        ready = [(self._queues[q][0], q) for q in queues if self._queues.get(q)]
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
        item: _Item,
    ) -> None:
        self.body = item[2]
        self.queue = queue
        self.redelivered = item[3]
        self.message_id = item[4]
        self._broker = broker
        self._subscription = subscription
        self._item = item
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
            self._broker._requeue(self.queue, self._item)
        else:
            dlq = topology.dlq_name(self.queue)
            self._broker._push(dlq, self.body, 0, redelivered=False, message_id=self.message_id)
        self._subscription.settled(self)


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
