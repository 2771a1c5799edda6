"""The worker's `process` span without the SDK's per-span machinery.

When `taskq worker` exports through its helper process, the span of each attempt is a
`LeanSpan`: a plain record of what the SDK would have recorded (same ids, sampling
decision, attributes, events and status), which the helper turns into an OTLP span. It
keeps the five values its standard attributes come from (`semconv.process_attributes`)
rather than the attributes, and makes its SpanContext only if asked: the SDK spends about
40 µs making, checking and ending each span, as much as a seventh of running a short task;
this costs a few. Spans the task's own code makes are SDK spans as usual, children of it.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    DEFAULT_OFF,
    DEFAULT_ON,
    Decision,
    ParentBasedTraceIdRatio,
    Sampler,
)
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util.types import Attributes, AttributeValue

from taskq.telemetry.semconv import Message, process_attributes

EVENT_LIMIT = 128  # the SDK's default OTEL_SPAN_EVENT_COUNT_LIMIT
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)


class LeanSpans:
    """Starts `process` spans as the SDK's tracer would: its sampler, its id generator;
    `sink` gets each span once it ends; `scope`: the instrumentation scope's name, version
    and schema URL."""

    def __init__(
        self,
        sampler: Sampler,
        ids: IdGenerator,
        sink: Callable[[LeanSpan], None],
        scope: tuple[str, str, str],
    ) -> None:
        self._sampler, self._ids, self._sink, self._scope = sampler, ids, sink, scope
        # The SDK's parent-based samplers with their default delegates keep a remote
        # parent's choice whatever the span: no need to ask them for a child of one.
        self.keeps_remote_choice = (
            sampler is DEFAULT_ON
            or sampler is DEFAULT_OFF
            or type(sampler) is ParentBasedTraceIdRatio
        )

    def start_remote_child(
        self, name: str, trace_id: int, parent_id: int, sampled: bool, message: Message
    ) -> trace.Span:
        """The span of an attempt whose parent is a remote span known by its ids and sampling
        flag alone, the sampler keeping the parent's choice (`keeps_remote_choice`). This is
        the path of every attempt of a traced task: no Context, no sampler call."""
        span_id = self._ids.generate_span_id()
        if not sampled:
            return trace.NonRecordingSpan(SpanContext(trace_id, span_id, False, _NOT_SAMPLED))
        return LeanSpan(name, trace_id, span_id, parent_id, True, message, self._sink, self._scope)

    def start_span(self, name: str, parent: Context | None, message: Message) -> trace.Span:
        """The span of an attempt under `parent` (None: a root), as the sampler decides."""
        parent_span = trace.get_current_span(parent).get_span_context()
        trace_id = parent_span.trace_id if parent_span.is_valid else self._ids.generate_trace_id()
        kind, attributes = SpanKind.CONSUMER, process_attributes(message)
        sampled = self._sampler.should_sample(parent, trace_id, name, kind, attributes)
        span_id = self._ids.generate_span_id()
        if sampled.decision is not Decision.RECORD_AND_SAMPLE:
            context = SpanContext(trace_id, span_id, False, _NOT_SAMPLED, sampled.trace_state)
            return trace.NonRecordingSpan(context)  # unsampled spans are never exported
        parent_id, remote = (
            (parent_span.span_id, parent_span.is_remote) if parent_span.is_valid else (None, False)
        )
        span = LeanSpan(
            name, trace_id, span_id, parent_id, remote, message, self._sink, self._scope
        )
        span.trace_state = sampled.trace_state
        if sampled.attributes:  # (the SDK's samplers return the attributes they were given)
            span.attributes.update(
                (key, value)
                for key, value in sampled.attributes.items()
                if key not in attributes or attributes[key] != value
            )
        return span


class LeanSpan(trace.Span):
    """A recording `process` span that keeps what it is told, for the helper to export:
    `message` gives its standard attributes, `attributes` holds any set besides."""

    __slots__ = (
        "_context",
        "_sink",
        "attributes",
        "end_time",
        "events",
        "message",
        "name",
        "parent_id",
        "parent_remote",
        "scope",
        "span_id",
        "start_time",
        "status",
        "trace_id",
        "trace_state",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        parent_id: int | None,
        parent_remote: bool,
        message: Message,
        sink: Callable[[LeanSpan], None],
        scope: tuple[str, str, str],
    ) -> None:
        self.name, self.trace_id, self.span_id = name, trace_id, span_id
        self.parent_id, self.parent_remote = parent_id, parent_remote
        self.message, self.scope = message, scope
        self.attributes: dict[str, Any] = {}
        self.events: list[tuple[str, int, dict[str, Any]]] | None = None  # (most have none)
        self.status = _UNSET
        self.trace_state: TraceState | None = None
        self.start_time = time.time_ns()
        self.end_time: int | None = None
        self._sink = sink
        self._context: SpanContext | None = None

    def get_span_context(self) -> SpanContext:
        if self._context is None:  # made on demand: most spans are never asked
            self._context = SpanContext(
                self.trace_id, self.span_id, False, _SAMPLED, self.trace_state
            )
        return self._context

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self.end_time is None:
            self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        if self.end_time is None:
            self.attributes.update(attributes)

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self.end_time is not None:
            return
        if self.events is None:
            self.events = []
        if len(self.events) < EVENT_LIMIT:
            self.events.append((name, timestamp or time.time_ns(), dict(attributes or {})))

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_time is not None or self.status.status_code is StatusCode.OK:
            return  # OK is final, as in the SDK
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self.status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        event = {
            "exception.type": type(exception).__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
            **(attributes or {}),
        }
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is None:
            self.end_time = end_time or time.time_ns()
            self._sink(self)
