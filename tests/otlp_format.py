"""Packed spans (`taskq.telemetry.export_helper.pack_span`'s format) back as SDK spans, for tests
that compare them with what the SDK makes or exports."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode


def unpack_span(packed: list[Any], resource: Resource) -> ReadableSpan:
    (name, context, parent, kind, start, end, attributes, events, links, status_code,
     description, scope) = packed  # fmt: skip
    return ReadableSpan(
        name=name,
        context=unpack_context(context),
        parent=None if parent is None else unpack_context(parent),
        resource=resource,
        attributes=attributes,
        events=[Event(name, attrs, timestamp) for name, timestamp, attrs in events],
        links=[Link(unpack_context(context), attrs) for context, attrs in links],
        kind=SpanKind(kind),
        status=Status(StatusCode(status_code), description),
        start_time=start,
        end_time=end,
        instrumentation_scope=None if scope is None else InstrumentationScope(*scope),
    )


def unpack_context(packed: list[Any]) -> SpanContext:
    trace_id, span_id, flags, is_remote, state = packed
    return SpanContext(
        int.from_bytes(trace_id, "big"),
        span_id,
        is_remote,
        TraceFlags(flags),
        TraceState(state) if state else None,
    )
