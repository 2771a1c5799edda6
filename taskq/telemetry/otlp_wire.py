"""The span export helper process: OTLP's ExportTraceServiceRequest, written in protobuf's wire
format straight from packed spans, and sent with the OTLP exporter's own HTTP client.

The worker (`export_helper.HelperSpanProcessor`) sends spans packed as `export_helper.pack_span`
lists, and its own `process` spans as `pack_lean_span`'s shorter ones. The SDK's encoder would
need them rebuilt as `ReadableSpan`s and then builds a protobuf object per field: measured in
the helper, 40 to 46 µs a span against 5 for writing the bytes directly, CPU a busy worker on
the same machine would compete with. The output is what the SDK's encoder makes of the same
spans: a test compares the two, message for message.

This module imports nothing of taskq: the worker starts it as a script, `python -P <this
file>` (-P: its folder is not put on sys.path), so the helper never imports the `taskq`
package, whose `__init__` loads the whole client (SQLAlchemy, aio-pika: 30 MB and 0.3 s of
CPU that span export never uses). The standard attributes of a `process` span, which the
worker's `semconv.process_attributes` defines, come in the first frame as a template.
"""

from __future__ import annotations

import logging
import os
import signal
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

import msgpack
from opentelemetry.trace import SpanKind

_FIXED64 = struct.Struct("<Q")
_FIXED32 = struct.Struct("<I")
_DOUBLE = struct.Struct("<d")
_SMALL = [bytes((n,)) for n in range(0x80)]  # one-byte varints
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags: whether the parent (link) is remote
_CONSUMER = SpanKind.CONSUMER.value
TEMPLATES_LIMIT = 1024
TASK_ID_FIELD = 1  # of a lean span's message (queue, task id, task name, priority, attempt)

# Frames between the worker and the helper: a 4-byte length, then a msgpack array whose first
# item says what it is.
LENGTH = struct.Struct(">I")
HELLO, SPANS, FLUSH = "hello", "spans", "flush"
NICENESS = 10  # the helper yields the CPU to the worker: a span exported later costs nothing


class Encoder:
    """Writes ExportTraceServiceRequests for one resource. `process_template`: the standard
    attributes of a `process` span as [key, field, value] (field: the index of the lean span's
    message value it takes, or -1 for the constant `value`)."""

    def __init__(
        self,
        resource_attributes: Mapping[str, Any],
        resource_schema_url: str,
        process_template: Sequence[Sequence[Any]],
    ) -> None:
        self._resource = _delimited(b"\x0a", _attributes(b"\x0a", resource_attributes))
        self._resource_schema_url = resource_schema_url
        self._template = [tuple(entry) for entry in process_template]
        self._standard_keys = frozenset(key for key, _, _ in self._template)
        # (queue, task name, priority, attempt) → the standard attributes, encoded but for
        # the task id.
        self._templates: dict[tuple[Any, ...], list[bytes | str]] = {}

    def request(self, spans: Iterable[list[Any]], lean_spans: Iterable[list[Any]] = ()) -> bytes:
        """One ExportTraceServiceRequest: the spans grouped by scope; `spans` as
        `export_helper.pack_span` packs them, `lean_spans` as `pack_lean_span`."""
        by_scope: dict[tuple[Any, ...] | None, list[bytes]] = {}
        for packed in spans:
            scope = packed[11]
            by_scope.setdefault(None if scope is None else tuple(scope), []).append(_span(packed))
        for packed in lean_spans:
            scope = packed[13]
            key = None if scope is None else tuple(scope)
            by_scope.setdefault(key, []).append(self._lean_span(packed))
        scope_spans = []
        for scope, encoded in by_scope.items():
            scope_body = b""
            schema_url = ""
            if scope is not None:
                name, version, schema_url = scope
                scope_body = _string(b"\x0a", name) + _string(b"\x12", version)
            scope_spans.append(
                _delimited(
                    b"\x12",
                    _delimited(b"\x0a", scope_body)
                    + b"".join([_delimited(b"\x12", span) for span in encoded])
                    + _string(b"\x1a", schema_url),
                )
            )
        body = self._resource + b"".join(scope_spans) + _string(b"\x1a", self._resource_schema_url)
        return _delimited(b"\x0a", body)

    def expand_lean_span(self, packed: list[Any]) -> list[Any]:
        """`pack_lean_span`'s values as `pack_span`'s (what the SDK's span would have held)."""
        (name, trace_id, span_id, parent_id, parent_remote, start, end, message, attributes,
         events, status_code, description, trace_state, scope) = packed  # fmt: skip
        sampled = 1  # (a lean span is a sampled one)
        return [
            name,
            [trace_id, span_id, sampled, False, trace_state],
            None if parent_id is None else [trace_id, parent_id, sampled, parent_remote, None],
            _CONSUMER,
            start,
            end,
            {**self._standard(message), **attributes},
            events,
            [],
            status_code,
            description,
            scope,
        ]

    def _standard(self, message: Sequence[Any]) -> dict[str, Any]:
        return {k: value if field < 0 else message[field] for k, field, value in self._template}

    def _lean_span(self, packed: list[Any]) -> bytes:
        """A `process` span from `pack_lean_span`'s values: its standard attributes (most of
        the span) are encoded once for each queue, task name, priority and attempt."""
        (name, trace_id, span_id, parent_id, remote, start, end, message, attributes, events,
         status_code, description, state, _) = packed  # fmt: skip
        if not self._standard_keys.isdisjoint(attributes):  # (one set again: as the SDK, once)
            return _span(self.expand_lean_span(packed))
        head = _span_head(trace_id, span_id, state, parent_id, name, _CONSUMER, start, end)
        encoded = self._process_attributes(message) + _attributes(b"\x4a", attributes)
        return _span_rest(head, encoded, events, (), status_code, description, remote)

    def _process_attributes(self, message: list[Any]) -> bytes:
        queue, task_id, task_name, priority, attempt = message  # (TASK_ID_FIELD: the 2nd)
        key = (queue, task_name, priority, attempt)
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) >= TEMPLATES_LIMIT:
                self._templates.clear()
            template = self._templates[key] = [
                name
                if field == TASK_ID_FIELD
                else _delimited(b"\x4a", _key_value(name, value if field < 0 else message[field]))
                for name, field, value in self._template
            ]
        return b"".join(
            [
                part if isinstance(part, bytes) else _delimited(b"\x4a", _key_value(part, task_id))
                for part in template
            ]
        )


def _span(packed: list[Any]) -> bytes:
    (name, context, parent, kind, start, end, attributes, events, links, status_code,
     description, _) = packed  # fmt: skip
    trace_id, span_id, _, _, state = context
    parent_id, remote = (None, False) if parent is None else (parent[1], parent[3])
    head = _span_head(trace_id, span_id, state, parent_id, name, kind, start, end)
    return _span_rest(head, _attributes(b"\x4a", attributes), events, links, status_code,
                      description, remote)  # fmt: skip


def _span_head(
    trace_id: bytes,
    span_id: int,
    state: list[list[str]] | None,
    parent_id: int | None,
    name: str,
    kind: int,
    start: int,
    end: int,
) -> list[bytes]:
    parts = [
        _delimited(b"\x0a", trace_id),
        _delimited(b"\x12", span_id.to_bytes(8, "big")),
        _trace_state(b"\x1a", state),
    ]
    if parent_id is not None:
        parts.append(_delimited(b"\x22", parent_id.to_bytes(8, "big")))
    parts += [
        _string(b"\x2a", name),
        b"\x30" + _SMALL[kind + 1],  # the API's SpanKind counts from 0, OTLP's from 1
        b"\x39" + _FIXED64.pack(start) if start else b"",
        b"\x41" + _FIXED64.pack(end) if end else b"",
    ]
    return parts


def _span_rest(
    parts: list[bytes],
    attributes: bytes,
    events: Iterable[list[Any]],
    links: Iterable[list[Any]],
    status_code: int,
    description: str | None,
    remote: bool,
) -> bytes:
    parts.append(attributes)
    for event_name, timestamp, event_attributes in events:
        event = (
            (b"\x09" + _FIXED64.pack(timestamp) if timestamp else b"")
            + _string(b"\x12", event_name)
            + _attributes(b"\x1a", event_attributes)
        )
        parts.append(_delimited(b"\x5a", event))
    for link_context, link_attributes in links:
        link_trace, link_span, _, link_remote, _ = link_context
        link = (
            _delimited(b"\x0a", link_trace)
            + _delimited(b"\x12", link_span.to_bytes(8, "big"))
            + _attributes(b"\x22", link_attributes)
            + b"\x35"
            + _FIXED32.pack(_HAS_IS_REMOTE | (_IS_REMOTE if link_remote else 0))
        )
        parts.append(_delimited(b"\x6a", link))
    status = _string(b"\x12", description or "") + (
        b"\x18" + _SMALL[status_code] if status_code else b""
    )
    parts.append(_delimited(b"\x7a", status))
    parts.append(b"\x85\x01" + _FIXED32.pack(_HAS_IS_REMOTE | (_IS_REMOTE if remote else 0)))
    return b"".join(parts)


def _attributes(tag: bytes, attributes: Mapping[str, Any]) -> bytes:
    return b"".join([_delimited(tag, _key_value(key, value)) for key, value in attributes.items()])


def _key_value(key: str, value: Any) -> bytes:
    return _delimited(b"\x0a", key.encode()) + _delimited(b"\x12", _any_value(value))


def _any_value(value: Any) -> bytes:
    # A oneof: the chosen field is written even when it holds its type's default.
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _delimited(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFF_FFFF_FFFF_FFFF)  # int64: two's complement
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return _delimited(b"\x3a", value)
    if isinstance(value, Sequence):
        array = b"".join([_delimited(b"\x0a", _any_value(item)) for item in value])
        return _delimited(b"\x2a", array)
    if isinstance(value, Mapping):
        pairs = b"".join([_delimited(b"\x0a", _key_value(str(k), v)) for k, v in value.items()])
        return _delimited(b"\x32", pairs)
    raise TypeError(f"cannot encode {type(value).__name__} as an OTLP attribute value")


def _trace_state(tag: bytes, state: list[list[str]] | None) -> bytes:
    return _string(tag, ",".join(f"{key}={value}" for key, value in state)) if state else b""


def _string(tag: bytes, text: str | None) -> bytes:
    """A string field; proto3 leaves out an empty one."""
    return _delimited(tag, text.encode()) if text else b""


def _delimited(tag: bytes, payload: bytes) -> bytes:
    size = len(payload)
    return tag + (_SMALL[size] if size < 0x80 else _varint(size)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_frame(stream: IO[bytes]) -> list[Any] | None:
    header = stream.read(LENGTH.size)
    if len(header) < LENGTH.size:
        return None  # end of input
    (length,) = LENGTH.unpack(header)
    message: list[Any] = msgpack.unpackb(stream.read(length))
    return message


def main() -> None:
    """The helper: export each batch as it comes, until the worker closes the pipe. It ignores
    SIGINT and SIGTERM, which its worker handles (and then closes the pipe, after its last
    spans); it exits at end of input, also when the worker was killed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.nice(NICENESS)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # The exporter resolves the OTEL_EXPORTER_OTLP_* settings (endpoint, headers, compression,
    # timeout, TLS) into its HTTP client, which also retries; the requests are encoded here.
    # (tests/unit/test_pinned_contracts.py checks that the client takes bytes.)
    exporter = OTLPSpanExporter()
    client = exporter._client
    source, replies = sys.stdin.buffer, sys.stdout.buffer
    encoder = Encoder({}, "", [])
    try:
        while (message := read_frame(source)) is not None:
            kind = message[0]
            if kind == SPANS:
                client.export(encoder.request(message[1], message[2]))
            elif kind == FLUSH:
                replies.write(b"\x01")
                replies.flush()
            elif kind == HELLO:
                encoder = Encoder(message[1], message[2], message[3])
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("TASKQ_LOG_LEVEL", "WARNING").upper())
    main()
