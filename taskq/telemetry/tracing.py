"""Spans: `send <queue>` when a task is submitted, `process <queue>` for each attempt.

The W3C trace context of the send span travels in the message's headers and is stored
with the task's row, so retries, delayed runs and dead-letter replays (published again
from the row) all join the trace that `submit()` started. Without an SDK configured the
OpenTelemetry API makes all of this a no-op.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from contextvars import Token
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from taskq import protocol
from taskq.telemetry import semconv as sc

if TYPE_CHECKING:  # the SDK's, which the library does not need
    from taskq.telemetry.lean_span import LeanSpans

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
SCOPE = ("taskq", version("taskq"), sc.SCHEMA_URL)  # the instrumentation scope
_tracer = trace.get_tracer(SCOPE[0], SCOPE[1], schema_url=SCOPE[2])
_lean_spans: LeanSpans | None = None


def use_lean_spans(spans: LeanSpans | None) -> None:
    """Make `process` spans with `spans` (`taskq worker`, exporting through its helper) rather
    than with the tracer; None: with the tracer again."""
    global _lean_spans
    _lean_spans = spans


def start_send(envelope: protocol.Envelope) -> tuple[Span, protocol.Envelope]:
    """Start the producer span of one message; → it, and the envelope carrying its context.

    The caller ends it (`end`) once the message is confirmed (or stored, if delayed).
    """
    if not _sdk_configured():
        return trace.INVALID_SPAN, envelope
    span = _tracer.start_span(
        f"{sc.SEND} {envelope.queue}",
        kind=SpanKind.PRODUCER,
        attributes=sc.message_attributes(
            sc.SEND, envelope.queue, envelope.id, envelope.task, envelope.priority
        ),
    )
    if not span.is_recording():
        return span, envelope
    headers: dict[str, str] = {}
    propagate.inject(headers, context=trace.set_span_in_context(span))
    return span, dataclasses.replace(envelope, headers={**envelope.headers, **headers})


def end(span: Span, error: BaseException | None = None) -> None:
    if error is not None and span.is_recording():
        span.set_status(Status(StatusCode.ERROR, str(error)))
        span.set_attribute(sc.ERROR_TYPE, type(error).__qualname__)
        span.record_exception(error)
    span.end()


def name_task(span: Span, task_id: str) -> None:
    """The submit turned out to be an earlier task's (its idempotency key): say which."""
    span.set_attribute(sc.TASK_ID, task_id)
    span.set_attribute(sc.MESSAGING_MESSAGE_ID, task_id)


class processing:
    """The consumer span of one attempt, current for the block (the task's own spans nest
    under it), a child of the context the message carries. A class, not a generator: it
    runs once per task, where `contextlib`'s machinery costs more than the span."""

    __slots__ = ("_attempt", "_envelope", "_span", "_token")

    def __init__(self, envelope: protocol.Envelope, attempt: int) -> None:
        self._envelope, self._attempt = envelope, attempt
        self._span: Span = trace.INVALID_SPAN  # what the API's no-op tracer gives
        self._token: Token[context.Context] | None = None

    def __enter__(self) -> Span:
        if not _sdk_configured():
            return self._span  # a no-op span, cheaper than one the API would make
        envelope = self._envelope
        name = f"{sc.PROCESS} {envelope.queue}"
        message = (envelope.queue, envelope.id, envelope.task, envelope.priority, self._attempt)
        parent: context.Context | None = None
        if (
            _lean_spans is not None
            and _lean_spans.keeps_remote_choice
            and (ids := _lone_traceparent(envelope.headers)) is not None
        ):
            span = _lean_spans.start_remote_child(name, *ids, message)
        else:
            parent = _parent_context(envelope.headers)
            if _lean_spans is not None:
                span = _lean_spans.start_span(name, parent, message)
            else:
                attributes = sc.process_attributes(message)
                span = _tracer.start_span(name, parent, SpanKind.CONSUMER, attributes)
        self._span = span
        self._token = context.attach(trace.set_span_in_context(span, parent))
        return span

    def __exit__(self, *exc_info: object) -> None:
        # An exception in the block is the executor's to record (`outcome`), or a stop.
        if self._token is not None:
            context.detach(self._token)
            self._span.end()


def outcome(span: Span, state: str, error: Mapping[str, Any] | None) -> None:
    """Record how the attempt ended; a failure (or a retry) marks the span as an error."""
    if not span.is_recording():
        return
    span.set_attribute(sc.TASK_STATE, state)
    if error:
        error_type = str(error.get("type", "Exception"))
        span.set_status(Status(StatusCode.ERROR, str(error.get("message", ""))))
        span.set_attribute(sc.ERROR_TYPE, error_type)
        span.add_event(
            "exception",
            {
                "exception.type": error_type,
                "exception.message": str(error.get("message", "")),
                "exception.stacktrace": str(error.get("traceback", "")),
            },
        )


def progress(span: Span, fraction: float, message: str | None) -> None:
    if span.is_recording():
        attributes: dict[str, Any] = {sc.PROGRESS_FRACTION: fraction}
        if message is not None:
            attributes[sc.PROGRESS_MESSAGE] = message
        span.add_event(sc.PROGRESS_EVENT, attributes)


def _parent_context(headers: Mapping[str, str]) -> context.Context | None:
    """The context a message carries."""
    if not headers:
        return None
    if (ids := _lone_traceparent(headers)) is not None:
        trace_id, span_id, sampled = ids
        flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if sampled else trace.TraceFlags.DEFAULT)
        remote = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
        return trace.set_span_in_context(trace.NonRecordingSpan(remote))
    return propagate.extract(headers)


def _lone_traceparent(headers: Mapping[str, str]) -> tuple[int, int, bool] | None:
    """Trace id, span id and sampled flag of a valid W3C `traceparent` that is the only
    header (what `start_send` puts in, unless baggage or trace state came along), read with
    one compiled pattern: `propagate.extract` runs several, and builds a Context besides."""
    if len(headers) != 1 or (traceparent := headers.get("traceparent")) is None:
        return None
    if (parsed := _TRACEPARENT.fullmatch(traceparent)) is None:
        return None
    trace_id, span_id = int(parsed[1], 16), int(parsed[2], 16)
    if not (trace_id and span_id):
        return None  # invalid ids: as the propagator, no parent
    return trace_id, span_id, bool(int(parsed[3], 16) & 1)


def _sdk_configured() -> bool:
    """Whether spans can record: until a tracer provider is set (or `_tracer` replaced, as
    tests do) every span is a no-op, which is cheaper skipped than made."""
    return not (
        isinstance(_tracer, trace.ProxyTracer)
        and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    )
