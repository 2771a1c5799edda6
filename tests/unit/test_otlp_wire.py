"""`otlp_wire` writes the ExportTraceServiceRequest the SDK's own encoder makes of the same spans:
both outputs are parsed and compared, message for message, over spans of every shape a worker
exports (SDK spans and lean ones, remote and local parents, links, events, statuses, every
attribute type)."""

from __future__ import annotations

from typing import Any

import msgpack
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from taskq.telemetry import export_helper, otlp_wire, semconv, tracing
from taskq.telemetry.lean_span import LeanSpan, LeanSpans
from tests.otlp_format import unpack_span

REMOTE_PARENT = SpanContext(
    0x0AF7651916CD43DD8448EB211C80319C,
    0xB7AD6B7169203331,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "x1"), ("other", "y")]),
)
EVERY_TYPE: dict[str, Any] = {
    "text": "héllo",
    "empty": "",
    "yes": True,
    "no": False,
    "zero": 0,
    "negative": -42,
    "big": 2**62,
    "ratio": 0.25,
    "texts": ("a", "b"),
    "numbers": [1, -2, 3],
    "floats": (0.5, 1.5),
    "flags": [True, False],
    "long": "x" * 300,  # a length over one varint byte
}


def sdk_spans(provider: TracerProvider, memory: InMemorySpanExporter) -> list[ReadableSpan]:
    tracer = provider.get_tracer(
        "taskq", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.1"
    )
    other = provider.get_tracer("users.code")
    remote = trace.set_span_in_context(trace.NonRecordingSpan(REMOTE_PARENT))
    with tracer.start_as_current_span("send q", kind=SpanKind.PRODUCER, attributes=EVERY_TYPE):
        with other.start_as_current_span("inner") as inner:
            inner.add_event("progress", {"fraction": 0.5, "message": "half"})
            inner.add_event("bare")
            inner.set_status(Status(StatusCode.ERROR, "it broke"))
    linked = SpanContext(0x1, 0x2, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with tracer.start_as_current_span(
        "process q",
        context=remote,
        kind=SpanKind.CONSUMER,
        links=[Link(REMOTE_PARENT, {"why": "replay"}), Link(linked)],
    ) as span:
        span.set_status(Status(StatusCode.OK))
    return list(memory.get_finished_spans())


def lean_spans(provider: TracerProvider) -> list[LeanSpan]:
    ended: list[LeanSpan] = []
    lean = LeanSpans(provider.sampler, provider.id_generator, ended.append, tracing.SCOPE)
    remote = trace.set_span_in_context(trace.NonRecordingSpan(REMOTE_PARENT))
    cases = [  # (the second reuses the first's encoded attributes; the third resets one)
        (remote, ("q", "id-1", "t.name", 2, 1), dict(EVERY_TYPE)),
        (None, ("q", "id-2", "t.name", 2, 1), dict(EVERY_TYPE)),
        (remote, ("q", "id-3", "t.name", 0, 2), {"taskq.task.id": "set again"}),
    ]
    for parent, message, attributes in cases:
        span = lean.start_span("process q", parent, message)
        assert isinstance(span, LeanSpan)
        span.set_attributes(attributes)
        span.add_event("taskq.progress", {"taskq.progress.fraction": 1.0})
        span.set_status(Status(StatusCode.ERROR, "failed"))
        span.record_exception(ValueError("bad input"))
        span.end()
    return ended


def test_the_wire_encoding_is_the_sdk_encoders() -> None:
    resource = Resource.create({"service.name": "wire-test", "deployment.environment": "ci"})
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    packed: list[Any] = [export_helper.pack_span(span) for span in sdk_spans(provider, memory)]
    lean = [export_helper.pack_lean_span(span) for span in lean_spans(provider)]
    received = msgpack.unpackb(msgpack.packb(packed))  # as the helper process gets them
    received_lean = msgpack.unpackb(msgpack.packb(lean))

    template = msgpack.unpackb(msgpack.packb(export_helper.process_template()))
    encoder = otlp_wire.Encoder(resource.attributes, resource.schema_url, template)

    ours = ExportTraceServiceRequest.FromString(encoder.request(received, received_lean))
    as_sdk_spans = received + [encoder.expand_lean_span(span) for span in received_lean]
    theirs = encode_spans([unpack_span(span, resource) for span in as_sdk_spans])

    assert len(ours.resource_spans[0].scope_spans) == 3  # the test covers grouping by scope
    assert sum(len(s.spans) for s in ours.resource_spans[0].scope_spans) == 6
    assert ours == theirs


def test_the_template_gives_the_standard_process_attributes() -> None:
    """The helper knows a `process` span's standard attributes only from the worker's template."""
    message = ("q", "id-1", "t.name", 3, 2)
    template = msgpack.unpackb(msgpack.packb(export_helper.process_template()))
    lean = ["process q", b"\x01" * 16, 2, None, False, 1, 2, list(message), {}, [], 0, None, None,
            None]  # fmt: skip

    expanded = otlp_wire.Encoder({}, "", template).expand_lean_span(lean)

    assert expanded[6] == semconv.process_attributes(message)
