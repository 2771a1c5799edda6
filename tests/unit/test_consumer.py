"""`Delivered`: what a worker reads of a delivered task message, settled exactly once."""

from __future__ import annotations

from typing import Any

import aiormq
import pytest
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from taskq.broker import consumer
from taskq.broker.consumer import Delivered


class Channel:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        self.calls.append(("ack", delivery_tag, multiple))

    async def basic_reject(self, delivery_tag: int, requeue: bool = True) -> None:
        self.calls.append(("reject", delivery_tag, requeue))


def delivered(channel: Channel, tag: int = 7) -> Delivered:
    header = ContentHeader(properties=Basic.Properties(message_id="task-1:2"))
    deliver = Basic.Deliver(consumer_tag="c", delivery_tag=tag, redelivered=True, routing_key="q")
    return Delivered(DeliveredMessage(deliver, header, b"body", channel))  # type: ignore[arg-type]


async def test_it_keeps_what_the_worker_reads() -> None:
    message = delivered(Channel())
    assert (message.body, message.delivery_tag, message.redelivered) == (b"body", 7, True)
    assert message.message_id == "task-1:2"


async def test_it_is_acked_or_rejected_once() -> None:
    channel = Channel()
    acked, rejected = delivered(channel, 7), delivered(channel, 8)
    await acked.ack(multiple=True)
    await rejected.reject(requeue=False)
    assert channel.calls == [("ack", 7, True), ("reject", 8, False)]
    with pytest.raises(RuntimeError, match="settled already"):
        await acked.reject(requeue=True)
    with pytest.raises(RuntimeError, match="settled already"):
        await rejected.ack()
    assert len(channel.calls) == 2


def test_a_consumer_timeout_close_is_explained_with_what_to_do(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given the close RabbitMQ sends when a delivery outlives its consumer_timeout
    closed = aiormq.exceptions.ChannelPreconditionFailed(
        "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value "
        "used: 5000 ms. This timeout value can be configured, see consumers doc guide to learn more"
    )
    # When the consumer's channel reports it, and then an ordinary close
    consumer._explain_close(None, closed)
    consumer._explain_close(None, ConnectionResetError("reset by peer"))
    # Then one error names consumer_timeout and both settings that avoid it
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "consumer_timeout" in errors[0] and "TASKQ_LEASE_AFTER" in errors[0]
