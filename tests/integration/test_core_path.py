"""The core path, on both the embedded default and RabbitMQ + PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import uuid

import msgpack
import pytest
from typer.testing import CliRunner

import taskq
from taskq import protocol
from taskq.cli import app as cli
from taskq.client.rows import new_task_row
from tests.conftest import Backend
from tests.support import eventually


async def test_async_task_result(backend: Backend) -> None:
    # Given an async task
    app = backend.app()

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    # When it is submitted and a worker runs it
    async with app, app.worker(concurrency=2):
        handle = await add.submit(2, 3)
        result = await handle.result(timeout=10)
        # Then its value comes back and its row says succeeded
        assert result == 5
        assert await handle.status() is taskq.TaskStatus.SUCCEEDED
        info = await handle.info()
        assert info.attempts == 1
        assert info.started_at is not None and info.finished_at is not None


async def test_sync_task_runs_in_a_thread(backend: Backend) -> None:
    app = backend.app()
    loop_thread = threading.get_ident()

    @app.task(name="threaded")
    def where(values: list[int]) -> dict[str, object]:
        return {"total": sum(values), "in_loop_thread": threading.get_ident() == loop_thread}

    async with app, app.worker(concurrency=2):
        handle = await where.submit([1, 2, 3])
        assert await handle.result(timeout=10) == {"total": 6, "in_loop_thread": False}


async def test_values_round_trip_exactly(backend: Backend) -> None:
    app = backend.app()

    @app.task
    async def echo(value: object) -> object:
        return value

    # Values JSON or PostgreSQL's jsonb would change: bytes, inf, NUL, 1e16 (numeric → int), -0.0
    value = {
        "bytes": b"\x00\xff",
        "inf": float("inf"),
        "$tag": 1,
        "nested": [1, "two", None],
        "nul": "a\x00b",
        "big": 1e16,
        "negative_zero": -0.0,
    }
    async with app, app.worker():
        back = await (await echo.submit(value)).result(timeout=10)
    assert back == value
    assert isinstance(back["big"], float)
    assert str(back["negative_zero"]) == "-0.0"


async def test_failure_comes_back_with_type_message_and_traceback(backend: Backend) -> None:
    app = backend.app()

    @app.task
    async def explode(code: int) -> None:
        raise ValueError(f"bad code {code}")

    async with app, app.worker():
        handle = await explode.submit(7)
        with pytest.raises(taskq.TaskFailed) as caught:
            await handle.result(timeout=10)
        assert await handle.status() is taskq.TaskStatus.FAILED

    assert caught.value.error_type == "ValueError"
    assert caught.value.error_message == "bad code 7"
    assert "in explode" in caught.value.traceback
    assert 'raise ValueError(f"bad code {code}")' in caught.value.traceback

    # And `taskq status` shows the same error
    runner = CliRunner()
    shown = await asyncio.to_thread(
        runner.invoke, cli, ["status", handle.id, "--store-url", backend.store_url]
    )
    assert shown.exit_code == 0, shown.output
    assert "failed" in shown.output
    assert "ValueError: bad code 7" in shown.output
    assert "in explode" in shown.output


async def test_concurrency_is_a_hard_bound(backend: Backend) -> None:
    # Given concurrency N and 3N slow tasks
    n = 3
    app = backend.app()
    running = 0
    most = 0
    gate = asyncio.Event()

    @app.task
    async def slow() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        if most == n:
            gate.set()
        await asyncio.wait_for(gate.wait(), 10)
        running -= 1

    async with app:
        handles = [await slow.submit() for _ in range(3 * n)]
        async with app.worker(concurrency=n):
            await asyncio.gather(*(h.result(timeout=30) for h in handles))
    # Then never more than N ran at once, and N did run together
    assert most == n


async def test_result_timeout_raises_builtin_timeout_error(backend: Backend) -> None:
    app = backend.app()

    @app.task
    async def never_run() -> None:
        pass

    async with app:  # no worker
        handle = await never_run.submit()
        with pytest.raises(TimeoutError):
            await handle.result(timeout=0.3)
        assert await handle.status() is taskq.TaskStatus.QUEUED


async def test_context_inside_a_task(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="whoami")
    async def whoami() -> list[object]:
        ctx = taskq.context()
        return [ctx.id, ctx.name, ctx.attempt, ctx.queue]

    async with app, app.worker():
        handle = await whoami.submit()
        assert await handle.result(timeout=10) == [handle.id, "whoami", 1, "default"]
        assert (await app.get(handle.id)).id == handle.id


async def test_unknown_task_is_recorded_and_worker_survives(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="known")
    async def known() -> str:
        return "still alive"

    async with app, app.worker():
        # Given a task submitted by a producer whose code the worker lacks (e.g. an old deploy)
        envelope = protocol.Envelope(
            id=str(uuid.uuid4()), task="only.in.producer", queue="default", args=[], kwargs={}
        )
        body = protocol.encode(envelope, max_bytes=1024)
        await app.store.insert_task(new_task_row(envelope))
        await app.broker.publish("default", body, priority=0, message_id=envelope.id)
        # Then its row records why, the caller sees it, and the worker keeps going
        unknown = taskq.TaskHandle[None](app.runtime, envelope.id)
        with pytest.raises(taskq.TaskFailed) as caught:
            await unknown.result(timeout=10)
        assert caught.value.error_type == "UnknownTask"
        assert "only.in.producer" in caught.value.error_message
        assert await (await known.submit()).result(timeout=10) == "still alive"


async def test_corrupt_message_is_reported_and_worker_survives(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    app = backend.app()

    @app.task
    async def ping() -> str:
        return "pong"

    async with app, app.worker():
        # Given garbage bytes, and a well-formed map with a bad field but a known id
        task_id = str(uuid.uuid4())
        bad_field = msgpack.packb({"v": 1, "id": task_id, "task": 5, "queue": "default"})
        await app.broker.publish("default", b"\xc1garbage", priority=0, message_id="x1")
        await app.broker.publish("default", bad_field, priority=0, message_id="x2")
        # Then the worker still runs tasks
        assert await (await ping.submit()).result(timeout=10) == "pong"
    # And each corrupt message was reported, by task id where it had one
    reports = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(reports) == 2, reports
    assert any(task_id in report for report in reports)


def hostile(**changes: object) -> bytes:
    body = {"v": 1, "id": str(uuid.uuid4()), "task": "hostile.ping", "queue": "default"}
    body.update({"args": [], "kwargs": {}, **changes})
    return msgpack.packb(body)


def nested(depth: int) -> object:
    value: object = []
    for _ in range(depth):
        value = [value]
    return value


async def test_hostile_messages_are_dead_lettered_once_and_hold_no_slot(backend: Backend) -> None:
    """Before the boundary checks, a message nested 990 deep raised RecursionError past the
    executor (never settled: a prefetch slot lost for good), and an out-of-range priority or
    a non-UUID id failed in PostgreSQL and was requeued every second without end."""
    app = backend.app()

    @app.task(name="hostile.ping")
    async def ping() -> str:
        return "pong"

    bodies = [
        hostile(args=[nested(990)]),
        hostile(priority=2**15),
        hostile(max_retries=2**31),
        hostile(id="not-a-uuid"),
        hostile(queue="q" * 300),
        hostile(args=[{} for _ in range(200_000)]),
    ]
    # Given a worker with as many slots as there are hostile messages
    async with app, app.worker(concurrency=len(bodies)):
        # When each is published straight to the queue
        for index, body in enumerate(bodies):
            await app.broker.publish("default", body, priority=0, message_id=f"h{index}")
        # Then every one ends in the dead-letter queue, and the worker still runs tasks
        letters = await eventually(
            app.dlq("default").list, lambda found: len(found) == len(bodies), what="dead letters"
        )
        assert {letter.reason for letter in letters} == {"malformed"}
        assert await (await ping.submit()).result(timeout=10) == "pong"


async def test_unserialisable_argument_is_refused_at_submit(backend: Backend) -> None:
    app = backend.app()

    @app.task
    async def schedule(when: object, tags: object = None) -> None:
        pass

    async with app:
        with pytest.raises(taskq.SerializationError) as caught:
            await schedule.submit(asyncio.Lock())
        assert "argument 0" in str(caught.value)
        assert "asyncio.locks.Lock" in str(caught.value)

        with pytest.raises(taskq.SerializationError) as caught:
            await schedule.submit(None, tags={"a": [1, object()]})
        assert "argument 'tags'['a'][1]" in str(caught.value)
        assert "builtins.object" in str(caught.value)


async def test_oversize_payload_is_refused_at_submit(backend: Backend) -> None:
    app = backend.app(max_payload_bytes=64 * 1024)

    @app.task
    async def upload(data: bytes) -> None:
        pass

    async with app:
        with pytest.raises(taskq.PayloadTooLarge) as caught:
            await upload.submit(b"x" * (100 * 1024))
        assert "65,536 bytes" in str(caught.value)
        assert "max_payload_bytes" in str(caught.value)


async def test_arguments_are_checked_against_the_signature(backend: Backend) -> None:
    app = backend.app()

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    async with app:
        with pytest.raises(taskq.InvalidArguments, match="missing a required argument: 'b'"):
            await add.submit(1)  # type: ignore[call-arg]


async def test_a_message_whose_arguments_do_not_fit_fails_cleanly_once(
    production: Backend,
) -> None:
    # Given a producer on an older version of a task (one argument) and a worker on a newer
    # one (two), retried on any error (two processes' apps: RabbitMQ and PostgreSQL)
    producer, consumer = production.app(), production.app()

    @producer.task(name="versioned")
    async def old(a: int) -> int:
        return a

    @consumer.task(name="versioned", max_retries=3)
    async def new(a: int, b: int) -> int:
        return a + b

    async with producer, consumer:
        handle = await old.submit(1)
        # When the worker takes the message
        async with consumer.worker(concurrency=1):
            with pytest.raises(taskq.TaskFailed) as caught:
                await handle.result(timeout=10)
        info = await handle.info()
    # Then it fails once, as the task's own error saying what does not fit (not retried,
    # not an internal error of the worker)
    assert caught.value.error_type == "taskq.exceptions.InvalidArguments"
    assert "missing a required argument: 'b'" in str(caught.value)
    assert (info.state, info.attempts) == (taskq.TaskStatus.FAILED, 1)


def test_duplicate_task_names_are_an_error() -> None:
    app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:")

    @app.task(name="same")
    async def first() -> None:
        pass

    with pytest.raises(taskq.DuplicateTaskName, match="'same'"):

        @app.task(name="same")
        async def second() -> None:
            pass


async def test_priority_order_on_one_slot(backend: Backend) -> None:
    app = backend.app()
    order: list[str] = []

    @app.task
    async def job(label: str) -> None:
        order.append(label)

    async with app:
        handles = [await job.submit(f"low{i}") for i in range(3)]
        handles += [await job.options(priority=9).submit(f"high{i}") for i in range(3)]
        async with app.worker(concurrency=1):
            await asyncio.gather(*(h.result(timeout=10) for h in handles))
    assert order == ["high0", "high1", "high2", "low0", "low1", "low2"]


def test_protocol_refuses_unknown_version() -> None:
    data = msgpack.packb({"v": 99, "id": "x", "task": "t", "queue": "q", "args": [], "kwargs": {}})
    with pytest.raises(taskq.ProtocolError, match="version 99"):
        protocol.decode(data, max_bytes=1024)


async def test_a_message_reusing_another_tasks_id_is_refused_and_that_task_still_runs(
    backend: Backend,
) -> None:
    """Before the claim was fenced by name and queue too, the forged `add(666, 1)` ran as the
    victim (its row ended `succeeded` with 667), and the victim's own message was later
    acked as a duplicate: the real task never ran."""
    app = backend.app()

    @app.task(name="hijack.add")
    async def add(a: int, b: int) -> int:
        return a + b

    async with app:
        # Given a task waiting on a queue no worker consumes yet
        victim = await add.options(queue="victims").submit(1, 2)
        # And a message on another queue that reuses its id
        forged = msgpack.packb(
            {"v": 1, "id": victim.id, "task": "hijack.add", "queue": "default",
             "args": [666, 1], "kwargs": {}}
        )  # fmt: skip
        await app.declare("default")
        await app.broker.publish("default", forged, priority=0, message_id=victim.id)
        # When a worker consumes that other queue
        async with app.worker(queues=["default"]):
            letters = await eventually(app.dlq("default").list, what="the forged dead letter")
        # Then the forged message is dead-lettered and the victim's row is untouched
        assert [letter.task_id for letter in letters] == [victim.id]
        record = await victim.info()
        assert (record.state, record.args, record.attempts) == (taskq.TaskStatus.QUEUED, [1, 2], 0)
        # And the victim runs as submitted once its own queue is consumed
        async with app.worker(queues=["victims"]):
            assert await victim.result(timeout=10) == 3


async def test_a_message_naming_another_queue_than_its_own_is_refused(backend: Backend) -> None:
    """Before, a message published to `default` naming queue `elsewhere` was stored and run
    under that queue, whose name (any string a producer chose) then labelled the metrics."""
    app = backend.app()

    @app.task(name="routed.ping")
    async def ping() -> str:
        return "pong"

    async with app, app.worker():
        # Given a message on `default` whose envelope names another queue
        task_id = str(uuid.uuid4())
        body = msgpack.packb(
            {"v": 1, "id": task_id, "task": "routed.ping", "queue": "elsewhere",
             "args": [], "kwargs": {}}
        )  # fmt: skip
        await app.broker.publish("default", body, priority=0, message_id=task_id)
        # Then it is dead-lettered as malformed, no row is made for it, and tasks still run
        letters = await eventually(app.dlq("default").list, what="the misrouted dead letter")
        assert [letter.reason for letter in letters] == ["malformed"]
        assert await app.store.get_task(task_id) is None
        assert await (await ping.submit()).result(timeout=10) == "pong"
