"""The worker's `process` span without the SDK's per-span machinery.

When `taskq worker` exports through its helper process, the span of each attempt is a
`LeanSpan`: a plain record of what the SDK would have recorded (same ids, sampling
decision, attributes, events and status), which the helper turns into an SDK span and
exports like any other. The SDK spends about 40 µs making, checking and ending each span,
as much as a seventh of running a short task; this costs a few. Spans the task's own code
makes are SDK spans as usual, children of this one.
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
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util.types import Attributes, AttributeValue

EVENT_LIMIT = 128  # the SDK's default OTEL_SPAN_EVENT_COUNT_LIMIT
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)


class LeanSpans:
    """Starts `LeanSpan`s as the SDK's tracer would: its sampler, its id generator; `sink`
    gets each span once it ends; `scope`: the instrumentation scope's name, version and
    schema URL."""

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
        self._keeps_remote_choice = (
            sampler is DEFAULT_ON
            or sampler is DEFAULT_OFF
            or type(sampler) is ParentBasedTraceIdRatio
        )

    def start_remote_child(
        self, name: str, trace_id: int, parent_id: int, sampled: bool, attributes: dict[str, Any]
    ) -> trace.Span | None:
        """A CONSUMER span whose parent is a remote span known by its ids (and sampling flag)
        alone, or None if the sampler must decide (`start_span`). This is the path of every
        attempt of a traced task, so it makes no Context and asks no sampler it need not."""
        if not self._keeps_remote_choice:
            return None
        span_id = self._ids.generate_span_id()
        if not sampled:
            return trace.NonRecordingSpan(SpanContext(trace_id, span_id, False, _NOT_SAMPLED))
        context = SpanContext(trace_id, span_id, False, _SAMPLED)
        parent = SpanContext(trace_id, parent_id, True, _SAMPLED)
        span = LeanSpan(name, context, parent, SpanKind.CONSUMER, attributes, self._sink)
        span.scope = self._scope
        return span

    def start_span(
        self, name: str, parent: Context | None, kind: SpanKind, attributes: dict[str, Any]
    ) -> trace.Span:
        parent_span = trace.get_current_span(parent).get_span_context()
        trace_id = parent_span.trace_id if parent_span.is_valid else self._ids.generate_trace_id()
        sampled = self._sampler.should_sample(parent, trace_id, name, kind, attributes)
        context = SpanContext(
            trace_id,
            self._ids.generate_span_id(),
            is_remote=False,
            trace_flags=_SAMPLED
            if sampled.decision is Decision.RECORD_AND_SAMPLE
            else _NOT_SAMPLED,
            trace_state=sampled.trace_state,
        )
        if sampled.decision is not Decision.RECORD_AND_SAMPLE:
            return trace.NonRecordingSpan(context)  # unsampled spans are never exported
        if sampled.attributes:
            attributes.update(sampled.attributes)
        parent_context = parent_span if parent_span.is_valid else None
        span = LeanSpan(name, context, parent_context, kind, attributes, self._sink)
        span.scope = self._scope
        return span


class LeanSpan(trace.Span):
    """A recording span that keeps what it is told, for the helper to export."""

    __slots__ = (
        "_sink",
        "attributes",
        "context",
        "end_time",
        "events",
        "kind",
        "name",
        "parent",
        "scope",
        "start_time",
        "status",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        sink: Callable[[LeanSpan], None],
    ) -> None:
        self.name, self.context, self.parent, self.kind = name, context, parent, kind
        self.attributes = attributes
        self.events: list[tuple[str, int, dict[str, Any]]] = []
        self.status = _UNSET
        self.start_time = time.time_ns()
        self.end_time: int | None = None
        self.scope: tuple[str, str, str] | None = None
        self._sink = sink

    def get_span_context(self) -> SpanContext:
        return self.context

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
        if self.end_time is None and len(self.events) < EVENT_LIMIT:
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
