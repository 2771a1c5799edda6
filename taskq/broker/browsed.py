"""Dead letters browsed on RabbitMQ: each with the reason RabbitMQ's `x-death` header gives."""

from __future__ import annotations

from aio_pika.abc import AbstractIncomingMessage

from taskq.broker.base import Browsed


class RabbitBrowsed(Browsed):
    """A dead letter as `Broker.browse` shows it; `remove()` acks it away."""

    def __init__(self, message: AbstractIncomingMessage) -> None:
        self.body = message.body
        self.message_id = message.message_id or ""
        self.reason = death_reason(message)
        self._message = message

    async def remove(self) -> None:
        await self._message.ack()


def death_reason(message: AbstractIncomingMessage) -> str:
    deaths = (message.headers or {}).get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        reason = deaths[0].get("reason", "")
        return reason.decode() if isinstance(reason, bytes) else str(reason)
    return ""
