"""The envelope's bytes: pinned, strictly decoded, and limited in size."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import msgpack
import pytest

import taskq
from taskq import protocol, values

MAX = 1024 * 1024

ENVELOPE = protocol.Envelope(
    id="0b4e2a7c-3f1d-4c55-9a6e-1d2f3a4b5c6d",
    task="billing.charge",
    queue="default",
    args=[1, "two", b"\x03", [4.5, None, True]],
    kwargs={"customer": {"id": 42}},
    priority=7,
    timeout=30.0,
    created_at=1767225600.25,
    headers={"traceparent": "00-abc-def-01"},
)

# Computed once from ENVELOPE. If this changes, the wire format changed. Optional fields may
# be added (older decoders ignore them, newer ones default them: see GOLDEN_BEFORE_LIFECYCLE);
# any other change must bump protocol.VERSION and keep decoding the old version.
GOLDEN = bytes.fromhex(
    "8ca17601a26964d92430623465326137632d336631642d346335352d396136652d31643266336134"
    "6235633664a47461736bae62696c6c696e672e636861726765a57175657565a764656661756c74a4"
    "617267739401a374776fc4010393cb4012000000000000c0c3a66b776172677381a8637573746f6d"
    "657281a269642aa87072696f7269747907a774696d656f7574cb403e000000000000aa6372656174"
    "65645f6174cb41da556e40100000a76865616465727381ab7472616365706172656e74ad30302d61"
    "62632d6465662d3031ab6d61785f7265747269657300aa657870697265735f6174c0"
)

# The same envelope as taskq encoded it before max_retries and expires_at were added.
GOLDEN_BEFORE_LIFECYCLE = bytes.fromhex(
    "8aa17601a26964d92430623465326137632d336631642d346335352d396136652d3164326633613462"
    "35633664a47461736bae62696c6c696e672e636861726765a57175657565a764656661756c74a46172"
    "67739401a374776fc4010393cb4012000000000000c0c3a66b776172677381a8637573746f6d657281"
    "a269642aa87072696f7269747907a774696d656f7574cb403e000000000000aa637265617465645f61"
    "74cb41da556e40100000a76865616465727381ab7472616365706172656e74ad30302d6162632d6465"
    "662d3031"
)


def raw_message(**changes: Any) -> dict[str, Any]:
    """A valid message as a plain map, with `changes` applied (see `without` to drop a key)."""
    body: dict[str, Any] = {
        "v": protocol.VERSION,
        "id": "5f0c8a3e-2b1d-4e6f-8a9b-0c1d2e3f4a5b",
        "task": "t",
        "queue": "default",
        "args": [],
        "kwargs": {},
    }
    body.update(changes)
    return body


def without(key: str) -> dict[str, Any]:
    body = raw_message()
    del body[key]
    return body


def with_key(key: object, value: object) -> dict[Any, Any]:
    body: dict[Any, Any] = raw_message()
    body[key] = value
    return body


def pack(value: object) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


# -- encoding ------------------------------------------------------------------------------


def test_encoding_is_pinned_by_golden_bytes() -> None:
    # Given a fixed envelope
    # When it is encoded
    data = protocol.encode(ENVELOPE, max_bytes=MAX)
    # Then the bytes are exactly the pinned ones (a change here breaks mixed deployments)
    assert data == GOLDEN


def test_golden_bytes_are_a_versioned_map() -> None:
    # The pinned bytes carry the version key a reader must check first.
    raw = msgpack.unpackb(GOLDEN, raw=False)
    assert raw["v"] == protocol.VERSION == 1
    assert raw["args"][2] == b"\x03"  # bytes stay bytes (bin type), not str


def test_golden_bytes_decode_to_the_envelope() -> None:
    assert protocol.decode(GOLDEN, max_bytes=MAX) == ENVELOPE


def test_round_trip_keeps_every_field() -> None:
    # Given an envelope using every field, with values of each supported type
    envelope = protocol.Envelope(
        id="5f0c8a3e-2b1d-4e6f-8a9b-0c1d2e3f4a5b",
        task="pkg.mod.task",
        queue="emails",
        args=[None, True, -(2**63), 2**64 - 1, 1.5, "é", b"\x00\xff", [1, [2]], {"k": {"n": 1}}],
        kwargs={"flag": False, "nested": {"list": [b"x", {"deep": "y"}]}},
        priority=3,
        timeout=None,
        created_at=1.5,
        headers={"a": "b"},
    )
    # When it is encoded and decoded
    decoded = protocol.decode(protocol.encode(envelope, max_bytes=MAX), max_bytes=MAX)
    # Then nothing is lost
    assert decoded == envelope


def test_round_trip_fills_defaults_for_optional_fields() -> None:
    decoded = protocol.decode(pack(raw_message()), max_bytes=MAX)
    assert decoded == protocol.Envelope(
        id="5f0c8a3e-2b1d-4e6f-8a9b-0c1d2e3f4a5b", task="t", queue="default", args=[], kwargs={}
    )


def test_encode_refuses_a_payload_over_the_limit_and_names_it() -> None:
    # Given arguments whose encoding is over 1,024 bytes
    envelope = dataclasses.replace(ENVELOPE, args=["x" * 2000])
    # When it is encoded with a 1,024-byte limit
    with pytest.raises(taskq.PayloadTooLarge) as caught:
        protocol.encode(envelope, max_bytes=1024)
    # Then the error names the limit and the setting, and is also a ValueError
    message = str(caught.value)
    assert "1,024" in message
    assert "max_payload_bytes" in message
    assert isinstance(caught.value, ValueError)


def test_messages_from_before_the_lifecycle_fields_still_decode() -> None:
    decoded = protocol.decode(GOLDEN_BEFORE_LIFECYCLE, max_bytes=MAX)
    assert decoded == ENVELOPE
    assert (decoded.max_retries, decoded.expires_at) == (0, None)


def test_encode_at_exactly_the_limit_is_accepted() -> None:
    assert protocol.encode(ENVELOPE, max_bytes=len(GOLDEN)) == GOLDEN


def test_encode_names_the_argument_msgpack_cannot_carry() -> None:
    envelope = dataclasses.replace(
        ENVELOPE, args=[1], kwargs={"when": {"at": [datetime.date(2026, 1, 1)]}}
    )
    with pytest.raises(taskq.SerializationError) as caught:
        protocol.encode(envelope, max_bytes=MAX)
    assert "argument 'when'['at'][0]" in str(caught.value)
    assert "datetime.date" in str(caught.value)


# -- decoding errors -----------------------------------------------------------------------


BAD_MESSAGES = {
    "garbage bytes": b"\xc1\xff\x00 not msgpack",
    "trailing data": pack(raw_message()) + b"\x00",
    "truncated bytes": GOLDEN[:-7],
    "empty": b"",
    "a msgpack list": pack([1, 2, 3]),
    "a msgpack str": pack("hello"),
    "missing id": without("id"),
    "missing task": without("task"),
    "missing queue": without("queue"),
    "missing args": without("args"),
    "missing kwargs": without("kwargs"),
    "missing version": without("v"),
    "args not a list": raw_message(args="1, 2"),
    "kwargs not a map": raw_message(kwargs=[1]),
    "id not a str": raw_message(id=7),
    "priority a float": raw_message(priority=1.5),
    "priority a bool": raw_message(priority=True),
    "timeout a str": raw_message(timeout="10"),
    "timeout negative": raw_message(timeout=-1.0),
    "timeout not finite": raw_message(timeout=float("inf")),
    "created_at a str": raw_message(created_at="yesterday"),
    "headers not a map": raw_message(headers=["a"]),
    "headers with a non-str value": raw_message(headers={"a": 1}),
    "unknown version": raw_message(v=2),
    "version as a str": raw_message(v="1"),
    "ext type at top level": pack(msgpack.ExtType(5, b"x")),
    "ext type in args": raw_message(args=[msgpack.ExtType(1, b"\x00")]),
    "int map key in args": raw_message(args=[{1: "one"}]),
    "int map key at top level": with_key(7, "seven"),
    "bytes map key in kwargs": raw_message(kwargs={b"name": "value"}),
    "bytes map key in headers": raw_message(headers={b"traceparent": "x"}),
}


@pytest.mark.parametrize("body", BAD_MESSAGES.values(), ids=BAD_MESSAGES.keys())
def test_malformed_message_is_a_protocol_error(body: bytes | dict[Any, Any]) -> None:
    # Given bytes that are not a valid taskq message
    data = body if isinstance(body, bytes) else pack(body)
    # When they are decoded
    # Then the error is ProtocolError, never a msgpack, Type or Key error
    with pytest.raises(taskq.ProtocolError):
        protocol.decode(data, max_bytes=MAX)


def test_unknown_version_says_which_versions_are_spoken() -> None:
    with pytest.raises(taskq.ProtocolError) as caught:
        protocol.decode(pack(raw_message(v=2)), max_bytes=MAX)
    assert "version 2" in str(caught.value)
    assert "speaks 1" in str(caught.value)


def test_oversize_message_is_refused_before_unpacking() -> None:
    # Given a message one byte over the limit
    # When it is decoded (even though its content is valid)
    with pytest.raises(taskq.ProtocolError) as caught:
        protocol.decode(GOLDEN, max_bytes=len(GOLDEN) - 1)
    # Then the error names the size and the limit, and no task id (nothing was parsed)
    assert f"{len(GOLDEN):,} bytes" in str(caught.value)
    assert caught.value.task_id is None


def test_protocol_error_carries_the_task_id_when_the_map_named_one() -> None:
    # Given a map with a UUID id but a missing field
    body = without("task")
    body["id"] = "0b4e2a7c-3f1d-4c55-9a6e-1d2f3a4b5c6d"
    # When it is decoded
    with pytest.raises(taskq.ProtocolError) as caught:
        protocol.decode(pack(body), max_bytes=MAX)
    # Then the error says which field and still names the task, so its row can be failed
    assert "'task'" in str(caught.value)
    assert caught.value.task_id == "0b4e2a7c-3f1d-4c55-9a6e-1d2f3a4b5c6d"


def test_an_id_that_is_no_uuid_is_refused_and_names_no_task() -> None:
    # (An id PostgreSQL cannot store must not reach the store as a row to fail.)
    body = without("task")
    body["id"] = "0b4e2a7c"
    with pytest.raises(taskq.ProtocolError) as caught:
        protocol.decode(pack(body), max_bytes=MAX)
    assert caught.value.task_id is None


@pytest.mark.parametrize(
    "data",
    [
        pack(raw_message(id=7, args="x")),  # id of the wrong type
        pack(without("id")),  # no id at all
        pack(["task-1"]),  # not a map
        b"\xc1",  # not msgpack
    ],
    ids=["int id", "no id", "not a map", "garbage"],
)
def test_protocol_error_has_no_task_id_without_a_str_id(data: bytes) -> None:
    with pytest.raises(taskq.ProtocolError) as caught:
        protocol.decode(data, max_bytes=MAX)
    assert caught.value.task_id is None


# -- check_value ---------------------------------------------------------------------------


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "path", "type_name"),
    [
        (Opaque(), "argument 0", "tests.unit.test_protocol.Opaque"),
        ([1, [2, Opaque()]], "argument 0[1][1]", "tests.unit.test_protocol.Opaque"),
        ({"a": {"b": [{1, 2}]}}, "argument 0['a']['b'][0]", "builtins.set"),
        ((1, datetime.date(2026, 1, 1)), "argument 0[1]", "datetime.date"),
        ({"ok": 1, 2: "two"}, "argument 0 key 2", "builtins.int"),
        ({"a": {b"raw": 1}}, "argument 0['a'] key b'raw'", "builtins.bytes"),
        ([2**64], "argument 0[0]", "builtins.int"),
        ({"n": -(2**63) - 1}, "argument 0['n']", "builtins.int"),
    ],
    ids=[
        "object",
        "nested list",
        "nested dict",
        "tuple",
        "int dict key",
        "bytes dict key",
        "int over 64 bits",
        "int under -2**63",
    ],
)
def test_check_value_names_the_path_and_the_type(value: object, path: str, type_name: str) -> None:
    # When a value holding something msgpack cannot carry is checked
    with pytest.raises(taskq.SerializationError) as caught:
        values.check_value(value, "argument 0")
    # Then the message says where it is and what type it has, and is also a TypeError
    message = str(caught.value)
    assert message.startswith(f"{path} has type {type_name},"), message
    assert isinstance(caught.value, TypeError)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        2**64 - 1,
        -(2**63),
        1.5,
        float("nan"),
        "s",
        b"b",
        [1, (2, 3)],
        {"a": {"b": [None]}},
    ],
)
def test_check_value_accepts_what_msgpack_carries(value: object) -> None:
    values.check_value(value, "argument 0")


def test_check_size_refuses_a_value_over_the_limit() -> None:
    with pytest.raises(taskq.PayloadTooLarge) as caught:
        protocol.check_size("x" * 2000, max_bytes=1024, what="result of task 't'")
    assert "result of task 't'" in str(caught.value)
    assert "1,024" in str(caught.value)


# -- events --------------------------------------------------------------------------------


def test_event_round_trip() -> None:
    event = protocol.Event(task_id="0b4e2a7c", state="succeeded", name="n", queue="q", at=1.5)
    data = protocol.encode_event(event)
    assert protocol.decode_event(data) == event
    assert msgpack.unpackb(data)["v"] == protocol.VERSION


def test_progress_event_round_trips_with_its_data() -> None:
    event = protocol.Event(
        task_id="x",
        state="running",
        attempt=2,
        progress=0.25,
        message="a quarter",
        data={"rows": 10, "blob": b"\x00"},
        seq=3,
    )
    assert protocol.decode_event(protocol.encode_event(event)) == event


def test_a_batch_of_events_round_trips_in_order() -> None:
    events = [
        protocol.Event(task_id=f"t{i}", state="running", attempt=1, progress=i / 10, seq=i)
        for i in range(3)
    ]
    assert protocol.decode_events(protocol.encode_events(events)) == events
    # A single-event message decodes as a batch of one
    assert protocol.decode_events(protocol.encode_event(events[0])) == events[:1]


def test_a_malformed_event_in_a_batch_is_a_protocol_error() -> None:
    with pytest.raises(taskq.ProtocolError):
        protocol.decode_events(pack({"v": 1, "events": [{"id": "x"}]}))
    with pytest.raises(taskq.ProtocolError):
        protocol.decode_events(pack({"v": 1, "events": "x"}))


@pytest.mark.parametrize(
    "value", [None, 0, -1.5, True, "", "text", b"\x00", [1, [2]], {"k": {"n": None}}]
)
def test_a_small_result_rides_in_its_event_and_round_trips(value: object) -> None:
    carried = protocol.result_for_event(value)
    assert carried == [value]
    event = protocol.Event(task_id="x", state="succeeded", result=carried)
    assert protocol.decode_event(protocol.encode_event(event)).result == [value]


def test_a_result_over_the_limit_stays_out_of_its_event() -> None:
    limit = protocol.RESULT_IN_EVENT_MAX_BYTES
    assert protocol.result_for_event("x" * limit) is None  # (its header makes it longer)
    assert protocol.result_for_event(["x" * (limit // 2)] * 2) is None
    assert protocol.result_for_event("é" * (limit // 4)) == ["é" * (limit // 4)]


@pytest.mark.parametrize("result", [[], [1, 2], "x"])
def test_an_event_whose_result_is_not_a_one_item_list_is_a_protocol_error(result: object) -> None:
    with pytest.raises(taskq.ProtocolError):
        protocol.decode_event(pack({"id": "x", "state": "succeeded", "result": result}))


def test_event_with_empty_state_round_trips() -> None:
    # The executor announces a duplicate delivery with an empty state.
    event = protocol.Event(task_id="x", state="")
    assert protocol.decode_event(protocol.encode_event(event)) == event


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",
        pack(["x", "succeeded"]),
        pack({"id": "x"}),
        pack({"id": 1, "state": "succeeded"}),
        pack({"id": "x", "state": None}),
        pack({1: "x"}),
        pack({"id": "x", "state": "running", "progress": "half"}),
        pack({"id": "x", "state": "running", "attempt": True}),
    ],
    ids=["garbage", "list", "no state", "int id", "null state", "int key", "str progress", "bool"],
)
def test_malformed_event_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(taskq.ProtocolError):
        protocol.decode_event(data)


def nested(depth: int) -> object:
    value: object = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"args": [nested(990)]}, "nests too deep"),
        ({"kwargs": {"a": nested(values.MAX_DEPTH)}}, "nests too deep"),
        ({"args": [{} for _ in range(protocol.MAX_CONTAINERS + 1)]}, "more than 100,000"),
        ({"priority": 2**15}, "priority"),
        ({"priority": -1}, "priority"),
        ({"max_retries": 2**31}, "max_retries"),
        ({"id": "not-a-uuid"}, "not a UUID"),
        ({"queue": "q" * 256}, "queue"),
        ({"queue": "default\nCRITICAL forged"}, "control characters"),
        ({"task": "add\x1b]52;c;ZXZpbA==\x07"}, "control characters"),
        ({"task": ""}, "task"),
        ({"timeout": 1e300}, "timeout"),
        ({"created_at": float("nan")}, "created_at"),
        ({"headers": {f"h{i}": "v" for i in range(65)}}, "headers"),
        ({"headers": {"k": "v" * 4097}}, "headers"),
    ],
)
def test_hostile_fields_are_refused_while_decoding(changes: dict[str, Any], message: str) -> None:
    # Given a message whose fields are each as a producer could send them, one out of range
    body = raw_message(**changes)
    # When it is decoded, Then it is refused as malformed, naming what is wrong
    with pytest.raises(taskq.ProtocolError, match=message):
        protocol.decode(pack(body), max_bytes=10 * MAX)


def test_the_deepest_value_a_message_may_carry_still_round_trips() -> None:
    body = raw_message(args=[nested(values.MAX_DEPTH - 2)])
    assert protocol.decode(pack(body), max_bytes=MAX).args == body["args"]


def test_a_client_value_nested_too_deep_is_a_serialization_error() -> None:
    with pytest.raises(taskq.SerializationError, match="deeper than 64 levels"):
        values.check_value([nested(2000)], "argument 0")
