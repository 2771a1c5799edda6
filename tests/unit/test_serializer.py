"""taskq.serializer: values beyond msgpack's, to plain trees (as sent and stored) and back."""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgpack
import pydantic
import pytest

from taskq.exceptions import ConfigurationError, InvalidArguments, SerializationError
from taskq.serializer import Serializer, rebuild, rebuild_arguments
from taskq.store import codec


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Point:
    x: int
    at: datetime
    tags: tuple[str, ...] = ()


@dataclasses.dataclass
class Route:
    start: Point
    stops: list[Point]
    color: Color


class Invoice(pydantic.BaseModel):
    number: int
    amount: Decimal
    due: date


class Money:
    def __init__(self, cents: int, currency: str) -> None:
        self.cents, self.currency = cents, currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (self.cents, self.currency) == (
            other.cents,
            other.currency,
        )


BUILT_IN: dict[str, Any] = {
    "aware datetime": datetime(2026, 12, 5, 10, 30, 1, 123456, tzinfo=UTC),
    "other offset": datetime(2026, 12, 5, 10, 30, tzinfo=timezone(timedelta(hours=-5))),
    "naive datetime": datetime(2026, 12, 5, 10, 30),
    "date": date(2026, 12, 5),
    "time": time(23, 59, 58, 1),
    "timedelta": timedelta(days=-2, seconds=5, microseconds=7),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "decimal": Decimal("1.10"),
    "bytes": b"\x00\xff",
    "tuple": (1, "a", (2, 3)),
    "set": {1, 2, 3},
    "frozenset": frozenset({"a"}),
    "a user's $ map": {"$datetime": "not a tag"},
    "nested": [{"when": date(2026, 1, 1), "ids": (uuid.UUID(int=1),)}],
}


def through_the_row(plain: Any) -> Any:
    """As msgpack carries it, then as the store keeps it (strict JSON) and reads it."""
    sent = msgpack.unpackb(msgpack.packb(plain, use_bin_type=True), raw=False)
    return codec.from_json(json.loads(json.dumps(codec.to_json(sent), allow_nan=False)))


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_types_come_back_as_themselves(name: str) -> None:
    serializer = Serializer()
    value = BUILT_IN[name]
    back = serializer.load(through_the_row(serializer.dump(value, "value")))
    assert back == value
    assert type(back) is type(value)
    if isinstance(value, datetime):
        assert back.tzinfo == value.tzinfo  # (aware and naive kept apart)


def test_the_row_shows_tagged_values_readably() -> None:
    plain = Serializer().dump({"at": datetime(2026, 12, 5, tzinfo=UTC), "n": Decimal("2.5")}, "v")
    assert codec.to_json(plain) == {
        "at": {"$datetime": "2026-12-05T00:00:00+00:00"},
        "n": {"$decimal": "2.5"},
    }


def test_plain_values_are_passed_through_without_a_copy() -> None:
    value = {"a": [1, 2.5, "x", None, True, b"y"]}
    assert Serializer().dump(value, "v") is value


def test_dataclasses_models_and_enums_are_rebuilt_by_annotation() -> None:
    serializer = Serializer()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    plain_at = serializer.dump(at, "at")
    route = Route(
        start=Point(1, datetime(2026, 1, 1, tzinfo=UTC), ("a",)),
        stops=[Point(2, datetime(2026, 1, 2, tzinfo=UTC))],
        color=Color.BLUE,
    )
    plain = through_the_row(serializer.dump(route, "route"))
    # Without an annotation: fields as a map, the enum as its value
    assert serializer.load(plain)["color"] == "blue"
    # With one: the whole tree as its types, inside lists and fields too
    assert serializer.load(plain, Route) == route
    invoice = Invoice(number=7, amount=Decimal("9.99"), due=date(2027, 1, 31))
    assert serializer.load(through_the_row(serializer.dump(invoice, "i")), Invoice) == invoice
    assert serializer.load(["red", None], list[Color | None]) == [Color.RED, None]
    assert serializer.load({"k": [1, 2]}, dict[str, tuple[int, int]]) == {"k": (1, 2)}
    assert serializer.load([{"x": 1, "at": plain_at}], Sequence[Point]) == [Point(1, at)]


def test_a_registered_type_is_rebuilt_wherever_it_is() -> None:
    serializer = Serializer()
    serializer.register(Money, lambda m: [m.cents, m.currency], lambda v: Money(*v))
    serializer.register(Color)
    value = {"price": Money(250, "EUR"), "color": Color.RED}
    plain = through_the_row(serializer.dump(value, "v"))
    assert plain == {"price": {"$Money": [250, "EUR"]}, "color": {"$Color": "red"}}
    assert serializer.load(plain) == value


def test_an_unsupported_value_is_refused_naming_its_path() -> None:
    with pytest.raises(SerializationError) as caught:
        Serializer().dump({"rows": [1, {"conn": object()}]}, "result of task 't'")
    message = str(caught.value)
    assert "result of task 't'['rows'][1]['conn']" in message
    assert "builtins.object" in message and "register" in message


def test_registration_refuses_built_in_tags_and_missing_functions() -> None:
    serializer = Serializer()
    with pytest.raises(ConfigurationError):
        serializer.register(Money, str, str, name="datetime")
    with pytest.raises(ConfigurationError):
        serializer.register(Money)


def test_annotations_taskq_cannot_carry_are_refused() -> None:
    serializer = Serializer()
    serializer.check_annotation(list[Route] | None, "return")  # fine
    serializer.check_annotation(dict[str, tuple[int, Decimal]], "return")  # fine
    serializer.check_annotation(Sequence[Mapping[str, int]], "return")  # fine
    with pytest.raises(ConfigurationError) as caught:
        serializer.check_annotation(list[Money], "task 't' return value")
    assert "Money" in str(caught.value)


def test_arguments_that_do_not_fit_their_annotations_are_invalid() -> None:
    with pytest.raises(InvalidArguments):
        rebuild_arguments({"color": Color}, ["color"], ["green"], {})
    assert rebuild("red", Color) is Color.RED
