"""The message envelope and its bytes: msgpack, versioned, strictly decoded.

This is the only module that knows the wire format. Decoding checks the size before
unpacking, refuses ext types and non-string map keys, and turns every malformation into
`ProtocolError`, so a corrupt message can never crash a worker.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

from taskq import values
from taskq.exceptions import PayloadTooLarge, ProtocolError, SerializationError

VERSION = 1
# A message holds at most MAX_CONTAINERS lists and maps, counted while decoding (anyone who
# may publish can send bytes: a megabyte of empty maps would otherwise cost hundreds of MB).
MAX_CONTAINERS = 100_000
MAX_NAME_CHARS = 255
MAX_HEADERS, MAX_HEADER_CHARS = 64, 4096
_MAX_PRIORITY, _MAX_RETRIES, _MAX_SECONDS = 255, 2**31 - 1, 2.0**31


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """One task message. `headers` carries trace context, never user data."""

    id: str
    task: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int = 0
    timeout: float | None = None
    created_at: float = 0.0
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    max_retries: int = 0
    expires_at: float | None = None  # epoch seconds; a worker never starts it after this
    # Flow control it is subject to (`taskq.client.limits.row_limits`); the row's copy is
    # the one enforced, this one only tells the worker to claim it through the limits.
    limits: dict[str, Any] | None = None


def encode(envelope: Envelope, *, max_bytes: int) -> bytes:
    """Envelope → bytes; refuses values msgpack cannot carry and payloads over `max_bytes`."""
    body = {
        "v": VERSION,
        "id": envelope.id,
        "task": envelope.task,
        "queue": envelope.queue,
        "args": envelope.args,
        "kwargs": envelope.kwargs,
        "priority": envelope.priority,
        "timeout": envelope.timeout,
        "created_at": envelope.created_at,
        "headers": envelope.headers,
        "max_retries": envelope.max_retries,
        "expires_at": envelope.expires_at,
    }
    if envelope.limits is not None:
        body["limits"] = envelope.limits
    try:
        data: bytes = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        for index, value in enumerate(envelope.args):
            values.check_value(value, f"argument {index}")
        for name, value in envelope.kwargs.items():
            values.check_value(value, f"argument {name!r}")
        raise SerializationError(
            f"task {envelope.task!r}: arguments cannot be encoded: {exc}"
        ) from exc
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"task {envelope.task!r}: the encoded message is {len(data):,} bytes, over the "
            f"limit of {max_bytes:,} bytes (max_payload_bytes). Pass large data by reference "
            "(a path, URL or row id) or raise the limit."
        )
    return data


def check_size(value: object, *, max_bytes: int, what: str) -> int:
    """Refuse a value (e.g. a task's result) whose encoding is over `max_bytes`; → its size."""
    size = len(msgpack.packb(value, use_bin_type=True))
    if size > max_bytes:
        raise PayloadTooLarge(f"{what} is {size:,} bytes encoded, over the limit of {max_bytes:,}")
    return size


def decode(data: bytes, *, max_bytes: int) -> Envelope:
    """Bytes → Envelope, or `ProtocolError` saying what is wrong (with the task id if known)."""
    if len(data) > max_bytes:
        raise ProtocolError(f"message of {len(data):,} bytes is over the limit of {max_bytes:,}")
    try:
        raw = _unpack(data)
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise ProtocolError(f"message is not valid msgpack: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(f"message is a msgpack {type(raw).__name__}, not a map")
    try:
        return _envelope_from(raw)
    except ProtocolError as exc:
        task_id = raw.get("id")
        known = isinstance(task_id, str) and _is_uuid(task_id)
        raise ProtocolError(str(exc), task_id=task_id if known else None) from None


def _unpack(data: bytes) -> Any:
    """msgpack → Python, stopping as soon as the message holds more than MAX_CONTAINERS
    lists and maps (counted as they are built, before the rest is read)."""
    built = 0

    def counted(container: Any) -> Any:
        nonlocal built
        built += 1
        if built > MAX_CONTAINERS:
            raise ProtocolError(f"message holds more than {MAX_CONTAINERS:,} lists and maps")
        return container

    return msgpack.unpackb(
        data,
        raw=False,
        strict_map_key=True,
        ext_hook=_refuse_ext,
        object_hook=counted,
        list_hook=counted,
    )


def _refuse_ext(code: int, data: bytes) -> object:
    raise ProtocolError(f"message uses msgpack ext type {code}, which taskq never sends")


_FIELDS: Mapping[str, tuple[type | tuple[type, ...], bool]] = {
    # name: (accepted types, required)
    "id": (str, True),
    "task": (str, True),
    "queue": (str, True),
    "args": (list, True),
    "kwargs": (dict, True),
    "priority": (int, False),
    "timeout": ((int, float, type(None)), False),
    "created_at": ((int, float), False),
    "headers": (dict, False),
    "max_retries": (int, False),
    "expires_at": ((int, float, type(None)), False),
    "limits": ((dict, type(None)), False),
}


def _envelope_from(raw: dict[str, Any]) -> Envelope:
    version = raw.get("v")
    if version != VERSION:
        raise ProtocolError(
            f"message version {version!r} is not supported (this taskq speaks {VERSION}); "
            "run producers and workers of compatible taskq versions"
        )
    for name, (types, required) in _FIELDS.items():
        if name not in raw:
            if required:
                raise ProtocolError(f"message has no {name!r} field")
            continue
        integer_field = name in ("priority", "max_retries")
        if not isinstance(raw[name], types) or (integer_field and isinstance(raw[name], bool)):
            raise ProtocolError(f"message field {name!r} has type {type(raw[name]).__name__}")
    headers = raw.get("headers", {})
    _check_fields(raw, headers)
    # msgpack's strict_map_key still lets bytes keys through; taskq never sends them.
    for name in ("args", "kwargs"):
        if (found := values.find_unsupported(raw[name], "")) is not None:
            what = "nests too deep" if found[1] is values.TOO_DEEP else "holds an unsupported value"
            raise ProtocolError(f"message field {name!r}{found[0]} {what}")
    timeout = raw.get("timeout")
    return Envelope(
        id=raw["id"],
        task=raw["task"],
        queue=raw["queue"],
        args=raw["args"],
        kwargs=raw["kwargs"],
        priority=raw.get("priority", 0),
        timeout=None if timeout is None else float(timeout),
        created_at=float(raw.get("created_at", 0.0)),
        headers=headers,
        max_retries=raw.get("max_retries", 0),
        expires_at=None if raw.get("expires_at") is None else float(raw["expires_at"]),
        limits=raw.get("limits"),
    )


def limits_fit(limits: Any) -> bool:
    """Whether `limits` has the shape `taskq.client.limits.row_limits` gives: "rate": [key,
    per second, burst], "slots" and "quota": [key, count], each key a plain name."""
    if not isinstance(limits, dict) or not limits or not set(limits) <= {"rate", "slots", "quota"}:
        return False
    for kind, value in limits.items():
        sizes = 3 if kind == "rate" else 2
        if not (isinstance(value, list) and len(value) == sizes and is_plain_name(value[0])):
            return False
        numbers = value[1:]
        if kind == "rate" and not (
            isinstance(numbers[0], int | float) and math.isfinite(numbers[0]) and numbers[0] > 0
        ):
            return False
        counts = numbers[1:] if kind == "rate" else numbers
        if not all(_is_count(count) for count in counts):
            return False
    return True


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 2**31 - 1


def _check_fields(raw: dict[str, Any], headers: dict[Any, Any]) -> None:
    """Each field within what taskq itself would send: what would fail in the store (a
    priority past smallint, an id that is no UUID) or forge a log line never gets that far."""
    if not _is_uuid(raw["id"]):
        raise ProtocolError(f"message id {raw['id'][:64]!r} is not a UUID")
    for name in ("task", "queue"):
        if not is_plain_name(raw[name]):
            raise ProtocolError(
                f"message {name} {raw[name][:64]!r} is empty, over {MAX_NAME_CHARS} "
                "characters, or holds control characters"
            )
    if not 0 <= raw.get("priority", 0) <= _MAX_PRIORITY:
        raise ProtocolError(f"message priority {raw['priority']} is outside 0..{_MAX_PRIORITY}")
    if not 0 <= raw.get("max_retries", 0) <= _MAX_RETRIES:
        raise ProtocolError(f"message max_retries {raw['max_retries']} is out of range")
    timeout = raw.get("timeout")
    if timeout is not None and not (math.isfinite(timeout) and 0 < timeout <= _MAX_SECONDS):
        raise ProtocolError(f"message timeout {timeout!r} is not a positive number of seconds")
    for name in ("created_at", "expires_at"):
        moment = raw.get(name)
        if moment is not None and not (math.isfinite(moment) and 0 <= moment <= 1e11):
            raise ProtocolError(f"message {name} {moment!r} is not a time")
    if raw.get("limits") is not None and not limits_fit(raw["limits"]):
        raise ProtocolError("message limits are not what taskq sends")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()) or (
        not headers_fit(headers)
    ):
        raise ProtocolError(
            f"message headers must map at most {MAX_HEADERS} plain names to strings of at "
            f"most {MAX_HEADER_CHARS} characters"
        )


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def _is_uuid(text: str) -> bool:
    """In the form taskq writes (lowercase, hyphenated), as `str(uuid.UUID(...))` gives."""
    return _UUID.match(text) is not None


def headers_fit(headers: Mapping[str, str]) -> bool:
    """Within what a worker accepts: at most MAX_HEADERS, each a plain name with a value of
    at most MAX_HEADER_CHARS (the client checks what middleware added with this too)."""
    return len(headers) <= MAX_HEADERS and all(
        is_plain_name(key) and len(value) <= MAX_HEADER_CHARS for key, value in headers.items()
    )


def is_plain_name(text: str) -> bool:
    """Non-empty, at most MAX_NAME_CHARS, and no control characters (log and terminal
    injection: a newline forges a log line, an escape sequence drives a terminal)."""
    return 0 < len(text) <= MAX_NAME_CHARS and text.isprintable()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """A task's state change or progress update, for clients watching it.

    A hint, not a record: the store stays the source of truth. `state` is "" when the
    sender does not know it (watchers re-read the store). `progress` is set only on
    progress updates; `seq` numbers them within the attempt.
    """

    task_id: str
    state: str
    name: str = ""
    queue: str = ""
    attempt: int = 0
    at: float = 0.0
    progress: float | None = None
    message: str | None = None
    data: dict[str, Any] | None = None
    seq: int = 0
    # A succeeded task's value, as a one-item list (the value may be None), when it is
    # small (`result_for_event`): a waiting `result()` then needs no store read.
    result: list[Any] | None = None


_EVENT_FIELDS: Mapping[str, tuple[str, type | tuple[type, ...]]] = {
    # wire key: (attribute, accepted types)
    "id": ("task_id", str),
    "state": ("state", str),
    "task": ("name", str),
    "queue": ("queue", str),
    "attempt": ("attempt", int),
    "at": ("at", (int, float)),
    "progress": ("progress", (int, float, type(None))),
    "message": ("message", (str, type(None))),
    "data": ("data", (dict, type(None))),
    "seq": ("seq", int),
    "result": ("result", (list, type(None))),
}

# The largest value (msgpack bytes) a `succeeded` event carries; larger ones are read from
# the store. Events go to every watcher, so they stay small.
RESULT_IN_EVENT_MAX_BYTES = 512


def result_for_event(value: object, encoded_size: int | None = None) -> list[Any] | None:
    """What a `succeeded` event carries of a (checked) result: `[value]`, or None if it
    is over RESULT_IN_EVENT_MAX_BYTES encoded (`encoded_size`, if `check_size` gave it)."""
    if encoded_size is None:
        encoded_size = len(msgpack.packb(value, use_bin_type=True))
    return [value] if encoded_size <= RESULT_IN_EVENT_MAX_BYTES else None


def encode_event(event: Event) -> bytes:
    data: bytes = msgpack.packb({"v": VERSION, **_event_fields(event)}, use_bin_type=True)
    return data


def encode_events(events: Sequence[Event]) -> bytes:
    """Many events in one message: a worker sends those of one moment together."""
    body = {"v": VERSION, "events": [_event_fields(event) for event in events]}
    data: bytes = msgpack.packb(body, use_bin_type=True)
    return data


def decode_events(data: bytes) -> list[Event]:
    """The events of a message (one, or a batch), checked; or `ProtocolError`."""
    raw = _unpack_event(data)
    if "events" not in raw:
        return [_event_from(raw)]
    if not isinstance(raw["events"], list):
        raise ProtocolError("event batch is not a list")
    return [_event_from(item) for item in raw["events"]]


def decode_event(data: bytes) -> Event:
    """An event's fields, checked; or `ProtocolError`."""
    return _event_from(_unpack_event(data))


def _unpack_event(data: bytes) -> Any:
    try:
        raw = _unpack(data)
    except Exception as exc:
        raise ProtocolError(f"event is not valid msgpack: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError("event is not a map")
    return raw


def _event_fields(event: Event) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key, (attribute, _) in _EVENT_FIELDS.items():
        value = getattr(event, attribute)
        if value is not None:
            body[key] = value
    return body


def _event_from(raw: Any) -> Event:
    if not (isinstance(raw, dict) and isinstance(raw.get("id"), str) and "state" in raw):
        raise ProtocolError("event is not a map with 'id' and 'state'")
    fields: dict[str, Any] = {}
    for key, (attribute, types) in _EVENT_FIELDS.items():
        if key not in raw:
            continue
        value = raw[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise ProtocolError(f"event field {key!r} has type {type(value).__name__}")
        fields[attribute] = value
    for key in ("data", "result"):
        if fields.get(key) is not None and values.find_unsupported(fields[key], "") is not None:
            raise ProtocolError(f"event field {key!r} holds an unsupported value")
    if fields.get("result") is not None and len(fields["result"]) != 1:
        raise ProtocolError("event field 'result' is not a one-item list")
    return Event(**fields)


def encode_control(command: str, task_id: str) -> bytes:
    """A command to every worker (e.g. "cancel" a running task)."""
    return _pack_pair("command", command, "id", task_id)


def decode_control(data: bytes) -> tuple[str, str]:
    """(command, task id) of a control message, or `ProtocolError`."""
    return _unpack_pair(data, "control message", "command", "id")


def _pack_pair(first: str, first_value: str, second: str, second_value: str) -> bytes:
    data: bytes = msgpack.packb({"v": VERSION, first: first_value, second: second_value})
    return data


def _unpack_pair(data: bytes, what: str, first: str, second: str) -> tuple[str, str]:
    """The two string fields of a small message (events, control), or `ProtocolError`."""
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:
        raise ProtocolError(f"{what} is not valid msgpack: {exc}") from None
    if not (
        isinstance(raw, dict)
        and isinstance(raw.get(first), str)
        and isinstance(raw.get(second), str)
    ):
        raise ProtocolError(f"{what} is not a map with {first!r} and {second!r}")
    return raw[first], raw[second]
