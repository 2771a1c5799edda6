"""Lean `process` spans follow the SDK's sampling: the provider's sampler decides, a parent's
decision is kept, and a span that is not sampled is never handed on for export."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import SpanContext, TraceFlags

from taskq.telemetry import semconv, tracing
from taskq.telemetry.lean_span import LeanSpan, LeanSpans

MESSAGE = ("q", "task-1", "t.name", 3, 1)


def parent(sampled: bool) -> Context:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    context = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=flags)
    return trace.set_span_in_context(trace.NonRecordingSpan(context))


def lean(provider: TracerProvider, ended: list[LeanSpan]) -> LeanSpans:
    return LeanSpans(provider.sampler, provider.id_generator, ended.append, tracing.SCOPE)


def test_a_sampled_parent_gives_a_recording_child_in_its_trace() -> None:
    ended: list[LeanSpan] = []
    span = lean(TracerProvider(), ended).start_span("process q", parent(True), MESSAGE)
    assert isinstance(span, LeanSpan) and span.is_recording()
    context = span.get_span_context()
    assert context.trace_id == 0xABC and context.trace_flags.sampled and not context.is_remote
    assert span.parent_id == 0xDEF and span.parent_remote
    assert span.message == MESSAGE and span.attributes == {}
    span.end()
    span.end()  # a second end changes nothing
    assert ended == [span]


def test_an_unsampled_parent_gives_a_span_that_is_never_exported() -> None:
    ended: list[LeanSpan] = []
    span = lean(TracerProvider(), ended).start_span("process q", parent(False), MESSAGE)
    assert not span.is_recording()
    assert span.get_span_context().trace_id == 0xABC  # still in the trace, for its children
    assert not span.get_span_context().trace_flags.sampled
    span.end()
    assert ended == []


def test_the_providers_sampler_decides_for_a_root_span() -> None:
    ended: list[LeanSpan] = []
    provider = TracerProvider(sampler=ALWAYS_OFF)
    span = lean(provider, ended).start_span("process q", None, MESSAGE)
    assert not span.is_recording()
    span.end()
    assert ended == []


def test_a_child_of_a_remote_parent_keeps_its_choice_without_asking_the_default_sampler() -> None:
    ended: list[LeanSpan] = []
    spans = lean(TracerProvider(), ended)  # the SDK's default: ParentBased(ALWAYS_ON)
    assert spans.keeps_remote_choice
    span = spans.start_remote_child("process q", 0xABC, 0xDEF, True, MESSAGE)
    assert isinstance(span, LeanSpan) and span.is_recording()
    context = span.get_span_context()
    assert context.trace_id == 0xABC and context.trace_flags.sampled
    assert not context.is_remote and context.span_id not in (0, 0xDEF)
    assert span.parent_id == 0xDEF and span.parent_remote and span.message == MESSAGE
    span.set_attribute("k", "v")
    span.end()
    span.set_attribute("late", 1)  # an ended span changes no more
    assert ended == [span] and span.attributes == {"k": "v"}
    unsampled = spans.start_remote_child("process q", 0xABC, 0xDEF, False, MESSAGE)
    assert not unsampled.is_recording()
    assert unsampled.get_span_context().trace_id == 0xABC
    unsampled.end()
    assert ended == [span]


def test_any_other_sampler_is_asked_and_sees_the_standard_attributes() -> None:
    class Counting(Sampler):
        def __init__(self) -> None:
            self.seen: list[Any] = []

        def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
            self.seen.append(kwargs["attributes"])  # (ParentBased passes them by name)
            return ALWAYS_OFF.should_sample(*args, **kwargs)

        def get_description(self) -> str:
            return "Counting"

    sampler = Counting()
    spans = lean(TracerProvider(sampler=ParentBased(sampler, remote_parent_sampled=sampler)), [])
    assert not spans.keeps_remote_choice
    span = spans.start_span("process q", parent(True), MESSAGE)
    assert not span.is_recording()
    assert sampler.seen == [semconv.process_attributes(MESSAGE)]
    assert sampler.seen[0]["taskq.task.attempt"] == 1
