"""Task values ↔ JSON for the store: exact round trips, strict JSON out."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from taskq.store import codec


def round_trip(value: Any) -> Any:
    """Through the codec and through strict JSON text, as the database sees it."""
    text = json.dumps(codec.to_json(value), allow_nan=False)
    return codec.from_json(json.loads(text))


VALUES = {
    "none": None,
    "bool": True,
    "int": -(2**63),
    "big int": 2**64 - 1,
    "float": 0.1,
    "negative zero": -0.0,
    "str": "é ✓ \x00",
    "empty bytes": b"",
    "bytes": bytes(range(256)),
    "list of bytes": [b"a", b"\xff", [b"\x00"]],
    "empty dict": {},
    "empty list": [],
    "dict of bytes": {"blob": b"\x01\x02", "name": "n"},
    "$-key dict": {"$bytes": "not base64!"},
    "$float dict": {"$float": "nan"},
    "$dict dict": {"$dict": {"x": 1}},
    "nested $-keys": {"$dict": {"$bytes": {"$float": [b"x", {"$y": None}]}}},
    "two $-keys": {"$bytes": "a", "$float": "b"},
    "$-key and bytes": {"$ref": b"\x00"},
    "dollar value": {"k": "$bytes"},
    "nested": {"a": [1, {"b": [b"c", {"d": None, "e": [2.5, "f"]}]}], "g": {"h": {}}},
}


@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_round_trip_is_exact(value: Any) -> None:
    # Given a task value; When it goes to JSON text and back; Then it is unchanged
    result = round_trip(value)
    assert result == value
    assert type(result) is type(value)


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_infinities_round_trip(value: float) -> None:
    assert round_trip(value) == value
    assert round_trip([value]) == [value]


def test_nan_round_trips() -> None:
    result = round_trip({"x": [math.nan]})
    assert math.isnan(result["x"][0])


def test_tuples_become_lists() -> None:
    # JSON has no tuple; msgpack hands tuples to workers as lists too.
    assert round_trip((1, (b"x", 2))) == [1, [b"x", 2]]


def test_bytes_are_tagged_base64() -> None:
    assert codec.to_json(b"\x00\xff") == {"$bytes": "AP8="}


def test_non_finite_floats_are_tagged() -> None:
    assert codec.to_json([math.nan, math.inf, -math.inf]) == [
        {"$float": "nan"},
        {"$float": "inf"},
        {"$float": "-inf"},
    ]


def test_users_one_key_dollar_dict_is_wrapped_not_mistaken_for_a_tag() -> None:
    # Given a user's dict that looks like a tag
    value = {"$bytes": "AP8="}
    # When it is encoded
    encoded = codec.to_json(value)
    # Then it is wrapped, so decoding gives the dict back rather than b"\x00\xff"
    assert encoded == {"$dict": {"$bytes": "AP8="}}
    assert codec.from_json(encoded) == value


@pytest.mark.parametrize("value", [*VALUES.values(), math.nan, [math.inf, {"$x": -math.inf}]])
def test_output_is_strict_json(value: Any) -> None:
    # allow_nan=False refuses NaN/Infinity, which jsonb and other readers reject.
    text = json.dumps(codec.to_json(value), allow_nan=False)
    assert isinstance(text, str)
