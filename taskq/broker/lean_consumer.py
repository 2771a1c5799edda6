"""Task messages consumed without aio-pika's per-message wrapper.

aio-pika hands each delivery to a consumer as an `IncomingMessage` (a dozen properties
decoded and checked), from a task of its own. For a worker draining short tasks that was a
tenth of its CPU. A `LeanQueue` is aio-pika's robust queue, re-declared and consumed again
after a reconnect as before, whose consumers get aiormq's delivered message as it comes;
`Delivered` keeps what the worker reads of it and settles it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from aio_pika.queue import Queue
from aio_pika.robust_queue import RobustQueue
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic

RawCallback = Callable[[DeliveredMessage], Coroutine[Any, Any, None]]


class _RawConsume(Queue):
    __slots__ = ()

    async def consume(  # type: ignore[override]
        self,
        callback: RawCallback,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
        consumer_tag: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (aio-pika's signature)
    ) -> str:
        """As `Queue.consume`, but `callback` gets aiormq's message itself."""
        channel = await self.channel.get_underlay_channel()
        consuming = await channel.basic_consume(
            queue=self.name,
            consumer_callback=callback,
            exclusive=exclusive,
            no_ack=no_ack,
            arguments=arguments,
            consumer_tag=consumer_tag,
            timeout=timeout,
        )
        if consuming.consumer_tag is None:
            raise RuntimeError(f"RabbitMQ gave no consumer tag for queue {self.name!r}")
        return consuming.consumer_tag


class LeanQueue(RobustQueue, _RawConsume):  # type: ignore[misc]  # (its callbacks' type differs)
    """A robust queue (`RobustQueue.consume` remembers each consumer, to consume again after
    a reconnect, through `_RawConsume.consume`) whose consumers are called with aiormq's
    `DeliveredMessage`."""

    __slots__ = ()


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
        await self.channel.basic_ack(self.delivery_tag, multiple=multiple)

    async def reject(self, *, requeue: bool) -> None:
        self._settle()
        await self.channel.basic_reject(self.delivery_tag, requeue=requeue)

    def _settle(self) -> None:
        if self._settled:
            raise RuntimeError(f"delivery {self.delivery_tag} was settled already")
        self._settled = True
