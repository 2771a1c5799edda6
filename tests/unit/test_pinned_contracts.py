"""What taskq relies on in its pinned dependencies, checked by inspection (not by version
number): run this before raising an upper bound in pyproject.toml. Each test names the
taskq module that depends on what it checks."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

import aio_pika
import aiormq
import sqlalchemy.util
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, StatusCode
from pamqp.commands import Basic


def parameters(function: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(function).parameters)


def accepts(function: Callable[..., Any], *names: str, keyword_only: tuple[str, ...] = ()) -> None:
    found = parameters(function)
    missing = [name for name in (*names, *keyword_only) if name not in found]
    assert missing == [], f"{function.__qualname__} lost {missing}: {list(found)}"
    positional = [n for n in names if found[n].kind is inspect.Parameter.KEYWORD_ONLY]
    assert positional == [], f"{function.__qualname__}: {positional} became keyword-only"


def test_aiormq_channel_methods_the_broker_calls() -> None:
    """broker/consumer.py and broker/rabbitmq.py call these on aiormq's channel."""
    channel = aiormq.Channel
    accepts(
        channel.basic_consume,
        "queue",
        "consumer_callback",
        keyword_only=("no_ack", "consumer_tag", "timeout"),
    )
    accepts(channel.basic_cancel, "consumer_tag", keyword_only=("timeout",))
    # `wait=False`: queue the frame without holding the channel's lock until it is written.
    accepts(channel.basic_ack, "delivery_tag", "multiple", keyword_only=("wait",))
    accepts(channel.basic_reject, "delivery_tag", keyword_only=("requeue",))
    accepts(
        channel.basic_publish,
        "body",
        keyword_only=("exchange", "routing_key", "properties", "mandatory", "timeout", "wait"),
    )
    for method in ("basic_consume", "basic_cancel", "basic_ack", "basic_reject", "basic_publish"):
        assert inspect.iscoroutinefunction(getattr(channel, method)), method
    # Where RawConsumer hears that the broker cancelled a consumer (a set of callables).
    assert "on_consumer_cancel_callbacks" in aiormq.abc.AbstractChannel.__annotations__


def test_what_a_delivery_carries() -> None:
    """broker/consumer.py's `Delivered` reads these of aiormq's message and pamqp's frames."""
    assert {f.name for f in dataclasses.fields(DeliveredMessage)} >= {
        "delivery",
        "header",
        "body",
        "channel",
    }
    deliver = Basic.Deliver(consumer_tag="c", delivery_tag=3, redelivered=True, routing_key="q")
    assert (deliver.consumer_tag, deliver.delivery_tag, deliver.redelivered) == ("c", 3, True)
    assert Basic.Properties(message_id="m").message_id == "m"
    assert Basic.Cancel(consumer_tag="c").consumer_tag == "c"


def test_robust_channel_and_connection_hooks() -> None:
    """RawConsumer consumes again from `reopen_callbacks`, which a reopened robust channel
    calls after it restored its QoS and queues; the event waiter re-binds from the robust
    connection's `reconnect_callbacks`."""
    assert "reopen_callbacks" in AbstractRobustChannel.__annotations__
    assert "reconnect_callbacks" in AbstractRobustConnection.__annotations__
    reopen = inspect.getsource(aio_pika.RobustChannel.reopen)
    assert reopen.index("super().reopen()") < reopen.index("self.reopen_callbacks()")
    on_open = inspect.getsource(aio_pika.RobustChannel._on_open)
    assert "basic_qos" in on_open and "queue.restore()" in on_open
    assert inspect.iscoroutinefunction(aio_pika.RobustChannel.get_underlay_channel)
    accepts(aio_pika.RobustChannel.set_qos, "prefetch_count", "global_", "timeout")
    # Its `add` and `discard` take a callable of the channel (RawConsumer's `_on_reopen`).
    assert callable(getattr(aio_pika.tools.CallbackCollection, "discard", None))


def test_sqlalchemy_greenlet_spawn() -> None:
    """store/async_core.py runs the sync engine's calls through it."""
    spawn = sqlalchemy.util.greenlet_spawn
    assert inspect.iscoroutinefunction(spawn)
    found = parameters(spawn)
    assert list(found)[:2] == ["fn", "args"]
    assert found["args"].kind is inspect.Parameter.VAR_POSITIONAL


def test_the_otlp_exporter_sends_encoded_bytes() -> None:
    """The export helper (telemetry/otlp_wire.py) encodes requests itself and sends them with
    the exporter's HTTP client, which applies the OTEL_EXPORTER_OTLP_* settings."""
    exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces", timeout=0.1)
    try:
        client = exporter._client
        accepts(client.export, "data")
        result = typing.get_type_hints(type(client).export)["return"]
        assert "success" in {f.name for f in dataclasses.fields(result)}
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]


def test_what_lean_spans_and_the_wire_encoder_take_from_the_sdk() -> None:
    """telemetry/lean_span.py samples and makes ids as the SDK's tracer; otlp_wire.py writes
    the API's span kinds and status codes as numbers."""
    provider = TracerProvider()
    assert callable(provider.sampler.should_sample)
    assert callable(provider.id_generator.generate_span_id)
    assert (SpanKind.CONSUMER.value, StatusCode.ERROR.value) == (4, 2)


def test_aio_pika_resets_transport_before_each_connection_attempt() -> None:
    """broker/nodes.py's FailoverConnection picks the next node when aio-pika sets
    `transport` to None, which it does at the start of every (re)connection attempt."""
    attempt = aio_pika.RobustConnection._RobustConnection__connect_transport  # type: ignore[attr-defined]
    assert "self.transport = None" in inspect.getsource(attempt)
