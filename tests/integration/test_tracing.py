"""Tracing: a `send <queue>` PRODUCER span per submitted task, a `process <queue>` CONSUMER span
per attempt, joined in one trace through the context the message (and the row) carries.

Spans go to an SDK `TracerProvider` of this module's own (a `SimpleSpanProcessor` into an
`InMemorySpanExporter`, so a span is in the exporter once it has ended). Rather than the
process-wide provider, which OpenTelemetry lets a process set only once, each test swaps
taskq's tracer (`taskq.telemetry.tracing._tracer`) for one from a fresh provider: no state
leaks between tests, whatever else in the session configures OpenTelemetry.

Every test runs twice: with the SDK's spans ("sdk"), and as `taskq worker` makes and exports
them when it exports over OTLP ("helper"): `process` spans are `LeanSpan`s, and every span
reaches the exporter the way it reaches the export helper process, packed with msgpack and
rebuilt (`taskq.telemetry.export_helper`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, Tracer
from sqlalchemy.ext.asyncio import create_async_engine

import taskq
from taskq.telemetry import export_helper, logs, otlp_wire, tracing
from taskq.telemetry.lean_span import LeanSpan, LeanSpans
from tests.conftest import Backend
from tests.otlp_format import unpack_span
from tests.support import eventually

DEADLINE = 10.0

# Every attribute both span kinds carry (the process span adds attempt and state).
MESSAGE_ATTRIBUTES = (
    "messaging.system",
    "messaging.operation.name",
    "messaging.operation.type",
    "messaging.destination.name",
    "messaging.rabbitmq.destination.routing_key",
    "messaging.message.id",
    "taskq.task.name",
    "taskq.task.id",
    "taskq.task.priority",
)


@dataclass
class Traces:
    exporter: InMemorySpanExporter
    tracer: Tracer  # for the test's own spans (the caller's), from the same provider

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name == name]

    async def wait_for(self, name: str, count: int) -> list[ReadableSpan]:
        """The ended spans called `name` once there are `count` of them (polled, with a
        deadline: a process span ends just before its outcome is stored)."""

        async def named() -> list[ReadableSpan]:
            return self.named(name)

        found = await eventually(
            named, lambda spans: len(spans) >= count, what=f"{count} {name!r} spans"
        )
        assert len(found) == count, found
        return found


class ThroughTheHelpersFormat(SpanExporter):
    """Hands `memory` each span as the export helper process would rebuild it."""

    def __init__(self, memory: InMemorySpanExporter, resource: Resource) -> None:
        self.memory, self.resource = memory, resource
        self.lean = 0
        template = msgpack.unpackb(msgpack.packb(export_helper.process_template()))
        self.encoder = otlp_wire.Encoder({}, "", template)  # (as the helper gets it)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.memory.export([self.rebuilt(export_helper.pack_span(span)) for span in spans])

    def lean_ended(self, span: LeanSpan) -> None:
        self.lean += 1
        packed = msgpack.unpackb(msgpack.packb(export_helper.pack_lean_span(span)))
        expanded = self.encoder.expand_lean_span(packed)
        self.memory.export([unpack_span(expanded, self.resource)])

    def rebuilt(self, packed: list[Any]) -> ReadableSpan:
        return unpack_span(msgpack.unpackb(msgpack.packb(packed)), self.resource)


@pytest.fixture(params=["sdk", "helper"])
def traces(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Traces]:
    """taskq's tracer, for this test, from a provider exporting to memory."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer(*tracing.SCOPE))
    if request.param == "sdk":
        provider.add_span_processor(SimpleSpanProcessor(memory))
    else:
        helper_format = ThroughTheHelpersFormat(memory, provider.resource)
        provider.add_span_processor(SimpleSpanProcessor(helper_format))
        lean = LeanSpans(
            provider.sampler, provider.id_generator, helper_format.lean_ended, tracing.SCOPE
        )
        monkeypatch.setattr(tracing, "_lean_spans", lean)
    made = Traces(memory, provider.get_tracer("tests"))
    yield made
    provider.shutdown()
    if request.param == "helper":  # every process span was a lean one
        assert helper_format.lean == len([s for s in made.spans() if s.name.startswith("process")])


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def by_attempt(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return sorted(spans, key=lambda span: int(attrs(span)["taskq.task.attempt"]))


async def test_retried_task_is_one_trace_of_a_send_span_and_a_process_span_per_attempt(
    backend: Backend, traces: Traces
) -> None:
    # Given a task that fails once, then succeeds (one retry, 0.05 s later)
    app = backend.app()
    calls: list[int] = []

    @app.task(name="traced.flaky", max_retries=1, backoff=taskq.Backoff.fixed(0.05))
    async def flaky() -> str:
        calls.append(taskq.context().attempt)
        if len(calls) == 1:
            raise ConnectionError("first try fails")
        return "ok"

    # When it is submitted at priority 3 and a worker runs it to success
    async with app, app.worker():
        handle = await flaky.options(priority=3).submit()
        assert await handle.result(timeout=DEADLINE) == "ok"
        processes = by_attempt(await traces.wait_for("process default", 2))
    (send,) = traces.named("send default")

    # Then one trace holds exactly these three spans: the send span and both attempts
    assert {trace_id(span) for span in traces.spans()} == {trace_id(send)}
    assert len(traces.spans()) == 3, traces.spans()
    assert send.kind is SpanKind.PRODUCER
    assert [span.kind for span in processes] == [SpanKind.CONSUMER] * 2
    # And both process spans are children of the send span
    assert [parent_id(span) for span in processes] == [span_id(send)] * 2

    # And each carries the messaging and task attributes
    common = {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": "default",
        "messaging.rabbitmq.destination.routing_key": "default",
        "messaging.message.id": handle.id,
        "taskq.task.name": "traced.flaky",
        "taskq.task.id": handle.id,
        "taskq.task.priority": 3,
    }
    assert attrs(send) == {
        **common,
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
    }
    first, second = processes
    process_common = {
        **common,
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
    }
    # And the failed attempt is an error: state retried, error.type, an "exception" event
    assert attrs(first) == {
        **process_common,
        "taskq.task.attempt": 1,
        "taskq.task.state": "retried",
        "error.type": "ConnectionError",
    }
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "first try fails"
    (exception,) = [event for event in first.events if event.name == "exception"]
    assert dict(exception.attributes or {})["exception.type"] == "ConnectionError"
    assert dict(exception.attributes or {})["exception.message"] == "first try fails"
    assert "ConnectionError" in str(dict(exception.attributes or {})["exception.stacktrace"])
    # And the second attempt succeeded, without error
    assert attrs(second) == {
        **process_common,
        "taskq.task.attempt": 2,
        "taskq.task.state": "succeeded",
    }
    assert second.status.status_code is StatusCode.UNSET
    assert [event.name for event in second.events] == []
    assert calls == [1, 2]
    # And the spans follow each other in time: send, attempt 1, attempt 2
    assert send.start_time is not None and first.start_time is not None
    assert first.end_time is not None and second.start_time is not None
    assert send.start_time <= first.start_time <= first.end_time <= second.start_time


async def test_span_current_around_submit_is_the_send_spans_parent(
    production: Backend, traces: Traces
) -> None:
    app = production.app()

    @app.task(name="traced.quick")
    async def quick() -> int:
        return 1

    async with app, app.worker():
        # When a task is submitted while the caller's own span is current
        with traces.tracer.start_as_current_span("caller") as caller:
            handle = await quick.submit()
        await handle.result(timeout=DEADLINE)
        (process,) = await traces.wait_for("process default", 1)
    (send,) = traces.named("send default")

    # Then the send span is the caller span's child, and the process span joins that trace
    context = caller.get_span_context()
    assert parent_id(send) == context.span_id
    assert trace_id(send) == trace_id(process) == context.trace_id
    assert parent_id(process) == span_id(send)


async def test_progress_reports_are_events_of_the_process_span(
    production: Backend, traces: Traces
) -> None:
    app = production.app()

    @app.task(name="traced.progressing")
    async def progressing() -> None:
        await taskq.context().progress(0.25, "a quarter")
        await taskq.context().progress(0.75)

    async with app, app.worker():
        await (await progressing.submit()).result(timeout=DEADLINE)
        (process,) = await traces.wait_for("process default", 1)

    # Then each report is a "taskq.progress" event with its fraction (and message, if any)
    assert [(event.name, dict(event.attributes or {})) for event in process.events] == [
        (
            "taskq.progress",
            {"taskq.progress.fraction": 0.25, "taskq.progress.message": "a quarter"},
        ),
        ("taskq.progress", {"taskq.progress.fraction": 0.75}),
    ]


def _every_text(span: ReadableSpan) -> list[str]:
    """Every string a span exports: name, status, attribute and event values (and keys)."""
    texts = [span.name, span.status.description or ""]
    for key, value in attrs(span).items():
        texts += [key, repr(value)]
    for event in span.events:
        texts.append(event.name)
        for key, value in dict(event.attributes or {}).items():
            texts += [key, repr(value)]
    return texts


async def test_arguments_never_appear_on_spans(production: Backend, traces: Traces) -> None:
    secret = "s3cr3t-argument-7f3a9c"
    app = production.app()

    @app.task(name="traced.secretive")
    async def secretive(password: str, options: dict[str, str]) -> int:
        await taskq.context().progress(0.5, "working")
        return len(password) + len(options)

    # When a task gets the secret as a positional and as a keyword argument
    async with app, app.worker():
        handle = await secretive.submit(secret, options={"token": secret})
        assert await handle.result(timeout=DEADLINE) == len(secret) + 1
        await traces.wait_for("process default", 1)

    # Then no span's name, attributes or events mention it
    spans = traces.spans()
    assert sorted(span.name for span in spans) == ["process default", "send default"]
    leaks = [text for span in spans for text in _every_text(span) if secret in text]
    assert leaks == []


async def test_submit_many_makes_a_send_span_per_item(production: Backend, traces: Traces) -> None:
    app = production.app()

    @app.task(name="traced.item")
    async def item(n: int) -> int:
        return n

    async with app, app.worker():
        # When three items are submitted as one batch
        batch = await item.submit_many([(1,), (2,), (3,)])
        assert await asyncio.gather(*(h.result(timeout=DEADLINE) for h in batch)) == [1, 2, 3]
        processes = await traces.wait_for("process default", 3)

    # Then there are three send spans, one per task id, each the parent of that task's run
    sends = traces.named("send default")
    ids = [handle.id for handle in batch]
    assert sorted(attrs(span)["taskq.task.id"] for span in sends) == sorted(ids)
    assert all(span.kind is SpanKind.PRODUCER for span in sends)
    send_of = {attrs(span)["taskq.task.id"]: span for span in sends}
    for process in processes:
        send = send_of[attrs(process)["taskq.task.id"]]
        assert parent_id(process) == span_id(send)
        assert trace_id(process) == trace_id(send)


async def test_delayed_task_keeps_the_trace_of_its_submit(
    production: Backend, traces: Traces
) -> None:
    app = production.app()

    @app.task(name="traced.later")
    async def later() -> str:
        return "done"

    async with app, app.worker():
        # When a task is submitted with a countdown (stored, published later by the leader)
        handle = await later.options(countdown=1.0).submit()
        (send,) = traces.named("send default")
        assert await handle.status() is taskq.TaskStatus.SCHEDULED
        assert await handle.result(timeout=DEADLINE) == "done"
        (process,) = await traces.wait_for("process default", 1)

    # Then its run is in the send span's trace, as its child
    assert trace_id(process) == trace_id(send)
    assert parent_id(process) == span_id(send)


async def test_transactional_submit_is_traced_once_the_transaction_commits(
    production: Backend, traces: Traces
) -> None:
    app = production.app()

    @app.task(name="traced.outboxed")
    async def outboxed() -> str:
        return "ran"

    engine = create_async_engine(production.store_url)
    try:
        async with app, app.worker():
            # When a task is written in the caller's transaction (published by the leader
            # once it commits)
            async with engine.begin() as conn:
                handle = await outboxed.options(transaction=conn).submit()
            assert await handle.result(timeout=DEADLINE) == "ran"
            (process,) = await traces.wait_for("process default", 1)
    finally:
        await engine.dispose()

    # Then its send span carries its id, and its run is that span's child
    (send,) = traces.named("send default")
    assert attrs(send)["taskq.task.id"] == handle.id
    assert parent_id(process) == span_id(send)
    assert trace_id(process) == trace_id(send)


async def test_dead_letter_replay_runs_in_the_trace_of_the_original_submit(
    production: Backend, traces: Traces
) -> None:
    app = production.app()
    calls: list[int] = []

    @app.task(name="traced.fragile")
    async def fragile() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("broken until replayed")
        return "fixed"

    async with app, app.worker():
        # Given a task that failed into the dead-letter queue
        handle = await fragile.submit()
        with pytest.raises(taskq.TaskFailed):
            await handle.result(timeout=DEADLINE)
        dead = app.dlq("default")
        # (RabbitMQ dead-letters just after the row is written.)
        await eventually(dead.list, what="a dead letter")

        # When it is replayed and succeeds
        assert await dead.replay([handle.id]) == 1
        assert await handle.result(timeout=DEADLINE) == "fixed"
        first, second = by_attempt(await traces.wait_for("process default", 2))

    # Then both runs are children of the one send span: the replay joined the first trace
    (send,) = traces.named("send default")
    assert [parent_id(first), parent_id(second)] == [span_id(send)] * 2
    assert {trace_id(first), trace_id(second)} == {trace_id(send)}
    assert [attrs(first)["taskq.task.state"], attrs(second)["taskq.task.state"]] == [
        "failed",
        "succeeded",
    ]
    assert first.status.status_code is StatusCode.ERROR


class Captured(logging.Handler):
    """Keeps the records it handles, after taskq's filter has added the task's fields."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(logs.TaskFields())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_log_records_inside_a_task_carry_its_process_spans_ids(
    production: Backend, traces: Traces
) -> None:
    app = production.app()
    logger = logging.getLogger("tests.traced.task")
    captured = Captured()
    logger.addHandler(captured)
    logger.setLevel(logging.INFO)

    @app.task(name="traced.logging")
    async def logging_task() -> None:
        logger.info("inside")

    try:
        async with app, app.worker():
            handle = await logging_task.submit()
            await handle.result(timeout=DEADLINE)
            (process,) = await traces.wait_for("process default", 1)
    finally:
        logger.removeHandler(captured)

    # Then the task's log record names the task and the span it ran in
    (record,) = captured.records
    assert process.context is not None
    assert vars(record)["trace_id"] == format(process.context.trace_id, "032x")
    assert vars(record)["span_id"] == format(process.context.span_id, "016x")
    assert (vars(record)["task_id"], vars(record)["task_name"]) == (handle.id, "traced.logging")


async def test_repeated_idempotent_submit_traces_no_task_that_does_not_exist(
    production: Backend, traces: Traces
) -> None:
    app = production.app()

    @app.task(name="traced.charge")
    async def charge() -> int:
        return 1

    async with app:
        # When the same idempotency key is submitted twice (one task, both times)
        first = await charge.options(idempotency_key="order-42").submit()
        again = await charge.options(idempotency_key="order-42").submit()
        assert again.id == first.id

    # Then every send span names that task; none names an id no task has
    sends = traces.named("send default")
    assert {attrs(span)["taskq.task.id"] for span in sends} == {first.id}
    assert {attrs(span)["messaging.message.id"] for span in sends} == {first.id}
