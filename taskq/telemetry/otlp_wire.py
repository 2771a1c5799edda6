"""OTLP's ExportTraceServiceRequest, written in protobuf's wire format straight from packed spans.

The export helper process gets spans packed as `export_helper.pack_span` lists, and the
worker's own `process` spans as `pack_lean_span`'s shorter ones. The SDK's
encoder would need them rebuilt as `ReadableSpan`s (20 µs each) and then builds a protobuf
object per field (50 µs a span); writing the bytes directly takes about a fifth of that.
On a worker machine that is CPU a busy worker no longer competes with. The output is what
the SDK's encoder makes of the same spans: a test compares the two, message for message.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.trace import SpanKind

from taskq.telemetry.semconv import process_attributes

_FIXED64 = struct.Struct("<Q")
_FIXED32 = struct.Struct("<I")
_DOUBLE = struct.Struct("<d")
_SMALL = [bytes((n,)) for n in range(0x80)]  # one-byte varints
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags: whether the parent (link) is remote


def encode_request(
    spans: Iterable[list[Any]],
    resource_attributes: Mapping[str, Any],
    resource_schema_url: str,
    lean_spans: Iterable[list[Any]] = (),
) -> bytes:
    """One ExportTraceServiceRequest: the spans under one resource, grouped by scope;
    `spans` as `export_helper.pack_span` packs them, `lean_spans` as `pack_lean_span`."""
    by_scope: dict[tuple[Any, ...] | None, list[bytes]] = {}
    for packed in spans:
        scope = packed[11]
        by_scope.setdefault(None if scope is None else tuple(scope), []).append(_span(packed))
    for packed in lean_spans:
        scope = packed[13]
        by_scope.setdefault(None if scope is None else tuple(scope), []).append(_lean_span(packed))
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
    resource = _delimited(b"\x0a", _attributes(b"\x0a", resource_attributes))
    body = resource + b"".join(scope_spans) + _string(b"\x1a", resource_schema_url)
    return _delimited(b"\x0a", body)


def _span(packed: list[Any]) -> bytes:
    (name, context, parent, kind, start, end, attributes, events, links, status_code,
     description, _) = packed  # fmt: skip
    trace_id, span_id, _, _, state = context
    parent_id, remote = (None, False) if parent is None else (parent[1], parent[3])
    head = _span_head(trace_id, span_id, state, parent_id, name, kind, start, end)
    return _span_rest(head, _attributes(b"\x4a", attributes), events, links, status_code,
                      description, remote)  # fmt: skip


def _lean_span(packed: list[Any]) -> bytes:
    """A `process` span from `pack_lean_span`'s values: its standard attributes (most of
    the span) are encoded once for each queue, task name, priority and attempt."""
    (name, trace_id, span_id, parent_id, remote, start, end, message, attributes, events,
     status_code, description, state, _) = packed  # fmt: skip
    if not _STANDARD_KEYS.isdisjoint(attributes):  # (one set again: as the SDK, once)
        return _span(expand_lean_span(packed))
    head = _span_head(trace_id, span_id, state, parent_id, name, _CONSUMER, start, end)
    encoded = _process_attributes(message) + _attributes(b"\x4a", attributes)
    return _span_rest(head, encoded, events, (), status_code, description, remote)


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


# A stand-in task id: where it lands in the standard attributes, the span's own goes.
_ID = "\x00task id\x00"
_STANDARD_KEYS = frozenset(process_attributes(("q", _ID, "t", 0, 1)))
_CONSUMER = SpanKind.CONSUMER.value
# (queue, task name, priority, attempt) → the standard attributes, encoded but for the ids.
_templates: dict[tuple[str, str, int, int], list[bytes | str]] = {}
TEMPLATES_LIMIT = 1024


def _process_attributes(message: list[Any]) -> bytes:
    queue, task_id, task_name, priority, attempt = message
    key = (queue, task_name, priority, attempt)
    template = _templates.get(key)
    if template is None:
        if len(_templates) >= TEMPLATES_LIMIT:
            _templates.clear()
        standard = process_attributes((queue, _ID, task_name, priority, attempt))
        template = _templates[key] = [
            name if value is _ID else _delimited(b"\x4a", _key_value(name, value))
            for name, value in standard.items()
        ]
    return b"".join(
        [
            part if isinstance(part, bytes) else _delimited(b"\x4a", _key_value(part, task_id))
            for part in template
        ]
    )


def expand_lean_span(packed: list[Any]) -> list[Any]:
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
        {**process_attributes(message), **attributes},
        events,
        [],
        status_code,
        description,
        scope,
    ]


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
