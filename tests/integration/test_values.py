"""Task values beyond msgpack's through a real worker, on RabbitMQ + PostgreSQL and on the
embedded default (issue 23, values): arguments and results both ways, the row readable,
unencodable results failing with the path named, bad return annotations refused."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest

import taskq
from tests.conftest import Backend

DEADLINE = 15.0


class Size(enum.Enum):
    SMALL = 1
    LARGE = 2


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    placed: datetime
    total: Decimal
    size: Size
    lines: tuple[str, ...]


class Connection:
    """Something a task cannot return: no encoding for it is registered."""


VALUES: list[Any] = [
    datetime(2026, 12, 5, 10, 30, 1, 5, tzinfo=UTC),
    datetime(2026, 12, 5, 10, 30),
    date(2026, 12, 5),
    time(8, 0, 1),
    timedelta(hours=-3, microseconds=1),
    uuid.UUID(int=42),
    Decimal("0.10"),
    b"\x00raw",
    108.0,  # (a float with an integral value: SQLite's JSON columns would make it an int)
    (1, (2, "three")),
    {1, 2},
    frozenset({"x"}),
    [{"when": date(2027, 1, 1), "ids": {uuid.UUID(int=1)}}],
]


async def test_every_built_in_type_goes_both_ways(backend: Backend) -> None:
    # Given a task that returns what it received, and says what types it got
    app = backend.app()

    @app.task(name="values.echo")
    async def echo(value: Any) -> Any:
        return {"type": type(value).__name__, "value": value}

    async with app, app.worker():
        # When each value is submitted and its result awaited
        handles = [await echo.submit(value) for value in VALUES]
        results = [await handle.result(timeout=DEADLINE) for handle in handles]
        gathered = await app.gather(handles, timeout=DEADLINE)
        row = await handles[0].info()
    # Then each came back equal and of its own type, also nested
    assert [r["value"] for r in results] == VALUES
    assert [r["type"] for r in results] == [type(v).__name__ for v in VALUES]
    assert [type(r["value"]) for r in results] == [type(v) for v in VALUES]
    assert [type(r["value"]) for r in gathered] == [type(v) for v in VALUES]
    # And the row holds readable tagged JSON
    assert row.args == [{"$datetime": "2026-12-05T10:30:01.000005+00:00"}]


async def test_dataclasses_and_enums_are_rebuilt_from_the_annotations(backend: Backend) -> None:
    # Given a task annotated with a dataclass (holding an Enum, a tuple, a Decimal, a UUID)
    app = backend.app()

    @app.task(name="values.ship")
    async def ship(order: Order, sizes: list[Size]) -> Order:
        assert isinstance(order, Order) and all(isinstance(s, Size) for s in sizes)
        return dataclasses.replace(order, size=sizes[-1], lines=(*order.lines, "shipped"))

    order = Order(uuid.uuid4(), datetime.now(UTC), Decimal("12.50"), Size.SMALL, ("a",))
    async with app, app.worker():
        # When it is submitted with them and its result awaited
        result = await (await ship.submit(order, [Size.SMALL, Size.LARGE])).result(timeout=DEADLINE)
    # Then both sides rebuilt them as their types
    assert result == dataclasses.replace(order, size=Size.LARGE, lines=("a", "shipped"))


async def test_a_result_that_cannot_be_encoded_fails_naming_its_path(backend: Backend) -> None:
    # Given a task whose result holds a value taskq cannot carry
    app = backend.app()

    @app.task(name="values.leaky")
    async def leaky() -> Any:
        return {"rows": [1, {"handle": object()}]}

    async with app, app.worker():
        handle = await leaky.submit()
        # When its result is awaited, then it failed with the path of the bad value
        with pytest.raises(taskq.TaskFailed) as caught:
            await handle.result(timeout=DEADLINE)
    assert caught.value.error_type == "taskq.exceptions.SerializationError"
    assert "['rows'][1]['handle']" in str(caught.value)


def test_a_return_annotation_taskq_cannot_carry_is_refused_at_declaration() -> None:
    app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:")

    with pytest.raises(taskq.ConfigurationError) as caught:

        @app.task(name="values.connect")
        async def connect() -> Connection:
            return Connection()

    assert "Connection" in str(caught.value)


async def test_progress_data_comes_to_watchers_as_its_types(backend: Backend) -> None:
    # Given a task that reports progress with a datetime and a Decimal, then waits
    app = backend.app()
    let_go = asyncio.Event()
    when = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)

    @app.task(name="values.reporting")
    async def reporting() -> None:
        await taskq.context().progress(0.5, "half", at=when, cost=Decimal("1.25"))
        await let_go.wait()

    async with app, app.worker():
        handle = await reporting.submit()
        # When a watcher follows its events
        async for event in handle.events():
            if event.kind == "progress":
                break
        let_go.set()
        await handle.result(timeout=DEADLINE)
    # Then the progress data arrived as the types the task reported
    assert event.data == {"at": when, "cost": Decimal("1.25")}
