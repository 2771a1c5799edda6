"""Lean `process` spans follow the SDK's sampling: the provider's sampler decides, a parent's
decision is kept, and a span that is not sampled is never handed on for export."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from taskq.telemetry import tracing
from taskq.telemetry.lean_span import LeanSpan, LeanSpans


def parent(sampled: bool) -> Context:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    context = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=flags)
    return trace.set_span_in_context(trace.NonRecordingSpan(context))


def lean(provider: TracerProvider, ended: list[LeanSpan]) -> LeanSpans:
    return LeanSpans(provider.sampler, provider.id_generator, ended.append, tracing.SCOPE)


def test_a_sampled_parent_gives_a_recording_child_in_its_trace() -> None:
    ended: list[LeanSpan] = []
    span = lean(TracerProvider(), ended).start_span(
        "process q", parent(True), SpanKind.CONSUMER, {}
    )
    assert isinstance(span, LeanSpan) and span.is_recording()
    assert span.context.trace_id == 0xABC and span.context.trace_flags.sampled
    assert span.parent is not None and span.parent.span_id == 0xDEF and span.parent.is_remote
    span.end()
    span.end()  # a second end changes nothing
    assert ended == [span]


def test_an_unsampled_parent_gives_a_span_that_is_never_exported() -> None:
    ended: list[LeanSpan] = []
    span = lean(TracerProvider(), ended).start_span(
        "process q", parent(False), SpanKind.CONSUMER, {}
    )
    assert not span.is_recording()
    assert span.get_span_context().trace_id == 0xABC  # still in the trace, for its children
    assert not span.get_span_context().trace_flags.sampled
    span.end()
    assert ended == []


def test_the_providers_sampler_decides_for_a_root_span() -> None:
    ended: list[LeanSpan] = []
    provider = TracerProvider(sampler=ALWAYS_OFF)
    span = lean(provider, ended).start_span("process q", None, SpanKind.CONSUMER, {})
    assert not span.is_recording()
    span.end()
    assert ended == []


def test_a_child_of_a_remote_parent_keeps_its_choice_without_asking_the_default_sampler() -> None:
    ended: list[LeanSpan] = []
    spans = lean(TracerProvider(), ended)  # the SDK's default: ParentBased(ALWAYS_ON)
    span = spans.start_remote_child("process q", 0xABC, 0xDEF, True, {"k": "v"})
    assert isinstance(span, LeanSpan) and span.is_recording()
    assert span.context.trace_id == 0xABC and span.context.trace_flags.sampled
    assert not span.context.is_remote and span.context.span_id not in (0, 0xDEF)
    assert span.parent == SpanContext(0xABC, 0xDEF, True, TraceFlags(TraceFlags.SAMPLED))
    assert span.kind is SpanKind.CONSUMER and span.attributes == {"k": "v"}
    span.end()
    assert ended == [span]
    unsampled = spans.start_remote_child("process q", 0xABC, 0xDEF, False, {})
    assert unsampled is not None and not unsampled.is_recording()
    assert unsampled.get_span_context().trace_id == 0xABC
    unsampled.end()
    assert ended == [span]


def test_any_other_sampler_is_asked() -> None:
    class Counting(Sampler):
        def __init__(self) -> None:
            self.asked = 0

        def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
            self.asked += 1
            return ALWAYS_OFF.should_sample(*args, **kwargs)

        def get_description(self) -> str:
            return "Counting"

    sampler = Counting()
    spans = lean(TracerProvider(sampler=ParentBased(sampler, remote_parent_sampled=sampler)), [])
    assert spans.start_remote_child("process q", 0xABC, 0xDEF, True, {}) is None
    span = spans.start_span("process q", parent(True), SpanKind.CONSUMER, {})
    assert sampler.asked == 1 and not span.is_recording()
