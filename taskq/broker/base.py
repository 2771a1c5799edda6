"""What taskq needs from a message broker, and nothing more.

Two implementations pass one contract suite: `rabbitmq` (production) and `memory` (the
embedded default and users' tests).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from collections.abc import Callable, Sequence


class Delivery(abc.ABC):
    """One message handed to a consumer; settle it exactly once."""

    body: bytes
    queue: str
    redelivered: bool
    message_id: str  # "<task id>:<publish try>", readable even when the body is not
    lane: int = 0  # the priority lane it came from (quorum queues: docs/deploying.md)

    @abc.abstractmethod
    async def ack(self) -> None:
        """The message is done with; the broker forgets it. RabbitMQ's acks go out with the
        others of the same turn of the loop, unawaited: one that fails (a closed channel)
        leaves the message to be redelivered."""

    @abc.abstractmethod
    async def reject(self, *, requeue: bool) -> None:
        """Give the message back (`requeue=True`) or dead-letter it to `<queue>.dlq`."""


class Subscription(abc.ABC):
    @abc.abstractmethod
    async def cancel(self) -> None:
        """Stop new deliveries; those already handed over must still be settled."""

    async def set_prefetch(self, prefetch: int) -> None:
        """Change how many unsettled deliveries the consumer may hold (control channels
        have no limit to change, so the default does nothing)."""
        return None


class EventSubscription(abc.ABC):
    """A stream of task events filtered by routing key (a task id)."""

    @abc.abstractmethod
    async def bind(self, key: str) -> None:
        """Start receiving events for `key`; returns once no later event can be missed."""

    @abc.abstractmethod
    async def unbind(self, key: str) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


class Browsed(abc.ABC):
    """A message read from a queue without consuming it (dead-letter inspection, replay)."""

    body: bytes
    message_id: str
    reason: str  # why it was dead-lettered: "rejected", "expired", ... ("" if not)

    @abc.abstractmethod
    async def remove(self) -> None:
        """Take it out of the queue for good (the others go back when browsing ends)."""


DeliveryCallback = Callable[[Delivery], None]
EventCallback = Callable[[bytes], None]
ControlCallback = Callable[[bytes], None]


@dataclasses.dataclass(frozen=True, slots=True)
class QueueStats:
    """A queue as the broker sees it. `unacked` is None where the protocol does not tell
    (AMQP reports only ready messages and consumers)."""

    ready: int
    consumers: int
    unacked: int | None = None


class Broker(abc.ABC):
    """Durable priority queues with confirms, acks and dead letters, plus task events."""

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """Whether the broker is reachable right now (False while reconnecting)."""

    @abc.abstractmethod
    async def declare(self, queue: str) -> None:
        """Create `queue` and its dead-letter queue if missing (idempotent)."""

    @abc.abstractmethod
    async def publish(
        self,
        queue: str,
        body: bytes,
        *,
        priority: int,
        message_id: str,
        expiration: float | None = None,
    ) -> None:
        """Return once the broker has the message durably, or raise `PublishError`.

        `expiration` (seconds): the broker dead-letters the message as expired if it has
        not been delivered by then.
        """

    @abc.abstractmethod
    async def publish_dead(self, queue: str, body: bytes, *, message_id: str) -> None:
        """Put a message straight into `<queue>.dlq` (its delivery was acked already)."""

    @abc.abstractmethod
    def browse(
        self, queue: str, *, limit: int
    ) -> contextlib.AbstractAsyncContextManager[list[Browsed]]:
        """Up to `limit` messages of `queue`, in order; those not removed stay, in order."""

    @abc.abstractmethod
    async def stats(self, queue: str) -> QueueStats | None:
        """How many messages wait in `queue` and who consumes it; None if it does not exist."""

    @abc.abstractmethod
    async def purge(self, queue: str) -> int:
        """Delete every ready message of `queue`; → how many."""

    @abc.abstractmethod
    async def publish_control(self, body: bytes) -> None:
        """Send a command (e.g. cancel a running task) to every worker."""

    @abc.abstractmethod
    async def subscribe_control(self, on_message: ControlCallback) -> Subscription:
        """Receive the commands sent to every worker, from now on."""

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
