"""The control and event subscriptions of RabbitMQ: each on a channel of its own, which
closing ends (bounded: a stopping process must not wait on an unreachable broker)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractQueue

from taskq.broker.base import EventSubscription, Subscription
from taskq.broker.consumer import CONNECTION_ERRORS, SHUTDOWN_CALL_TIMEOUT


async def close_quietly(channel: AbstractChannel) -> None:
    if not channel.is_closed:
        with contextlib.suppress(*CONNECTION_ERRORS, RuntimeError):
            async with asyncio.timeout(SHUTDOWN_CALL_TIMEOUT):
                await channel.close()


class ControlChannel(Subscription):
    def __init__(self, channel: AbstractChannel) -> None:
        self._channel = channel

    async def cancel(self) -> None:
        await close_quietly(self._channel)


class EventChannel(EventSubscription):
    """Task events on an exclusive queue, bound to the keys watched (`errors`: the broker's
    error translation, a context manager factory)."""

    def __init__(
        self, channel: AbstractChannel, queue: AbstractQueue, errors: Any, exchange: str, *,
        timeout: float,
    ) -> None:  # fmt: skip
        self._channel, self._queue, self._errors = channel, queue, errors
        self._exchange, self._timeout = exchange, timeout

    async def bind(self, key: str) -> None:
        async with self._errors("bind an event key"):
            await self._queue.bind(self._exchange, routing_key=key, timeout=self._timeout)

    async def unbind(self, key: str) -> None:
        async with self._errors("unbind an event key"):
            await self._queue.unbind(self._exchange, routing_key=key, timeout=self._timeout)

    async def close(self) -> None:
        await close_quietly(self._channel)
