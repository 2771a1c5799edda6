"""What taskq needs from a message broker, and nothing more.

Two implementations pass one contract suite: `rabbitmq` (production) and `memory` (the
embedded default and users' tests).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence


class Delivery(abc.ABC):
    """One message handed to a consumer; settle it exactly once."""

    body: bytes
    queue: str
    redelivered: bool
    message_id: str  # "<task id>:<publish try>", readable even when the body is not

    @abc.abstractmethod
    async def ack(self) -> None:
        """The message is done with; the broker forgets it."""

    @abc.abstractmethod
    async def reject(self, *, requeue: bool) -> None:
        """Give the message back (`requeue=True`) or dead-letter it to `<queue>.dlq`."""


class Subscription(abc.ABC):
    @abc.abstractmethod
    async def cancel(self) -> None:
        """Stop new deliveries; those already handed over must still be settled."""


class EventSubscription(abc.ABC):
    """A stream of task events filtered by routing key (a task id)."""

    @abc.abstractmethod
    async def bind(self, key: str) -> None:
        """Start receiving events for `key`; returns once no later event can be missed."""

    @abc.abstractmethod
    async def unbind(self, key: str) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


DeliveryCallback = Callable[[Delivery], None]
EventCallback = Callable[[bytes], None]


class Broker(abc.ABC):
    """Durable priority queues with confirms, acks and dead letters, plus task events."""

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def declare(self, queue: str) -> None:
        """Create `queue` and its dead-letter queue if missing (idempotent)."""

    @abc.abstractmethod
    async def publish(self, queue: str, body: bytes, *, priority: int, message_id: str) -> None:
        """Return once the broker has the message durably, or raise `PublishError`."""

    @abc.abstractmethod
    async def consume(
        self, queues: Sequence[str], *, prefetch: int, on_delivery: DeliveryCallback
    ) -> Subscription:
        """Deliver from `queues`, never more than `prefetch` unsettled at once in total."""

    @abc.abstractmethod
    async def publish_event(self, key: str, body: bytes) -> None:
        """Best-effort notification; waiters treat it as a hint and read the store."""

    @abc.abstractmethod
    async def subscribe_events(
        self, on_event: EventCallback, on_reconnect: Callable[[], None]
    ) -> EventSubscription:
        """`on_reconnect` runs after a connection loss, when events may have been missed."""
