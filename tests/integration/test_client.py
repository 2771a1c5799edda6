"""The client API of issue 7, on both backends: progress, task events, submit_many batches,
gather / as_completed / cancel_many, list_tasks, `taskq tasks` / `taskq status`, and
transactional submit (PostgreSQL only).

Tasks run on an in-process `app.worker()`. Waits are on results, on asyncio events set by
the tasks, or on polls with a deadline (progress reaches the store written behind, at most
every half second).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from typer.testing import CliRunner, Result

import taskq
from taskq import protocol
from taskq.cli import app as cli
from taskq.client import batch as batch_module
from taskq.client import waiter as waiter_module
from taskq.client.submit import new_task_row
from taskq.store import Outcome, Store
from taskq.store import writer as writer_module
from tests.conftest import Backend
from tests.support import eventually

DEADLINE = 10.0
# How long a tail waits for an event it must see.
TAIL_DEADLINE = 5.0
Status = taskq.TaskStatus
T = TypeVar("T")


async def stored_progress(handle: taskq.TaskHandle[Any], n: int) -> taskq.TaskRecord:
    """The task's row once its stored progress is report number `n` (written behind)."""
    return await eventually(
        handle.info, lambda row: (row.progress or {}).get("n") == n, what=f"progress n={n} stored"
    )


async def collect(events: AsyncIterator[taskq.TaskEvent]) -> list[taskq.TaskEvent]:
    """Every event up to the end of the iterator (a task's final state), with a deadline."""
    async with asyncio.timeout(DEADLINE):
        return [event async for event in events]


def shape(events: list[taskq.TaskEvent]) -> list[tuple[Any, ...]]:
    return [(e.kind, e.state, e.progress, e.message, dict(e.data), e.seq) for e in events]


async def final_state(handle: taskq.TaskHandle[Any]) -> taskq.TaskStatus:
    with contextlib.suppress(taskq.TaskFailed, taskq.TaskCancelled, taskq.TaskExpired):
        await handle.result(timeout=DEADLINE)
    return await handle.status()


async def queued_messages(app: taskq.App, queue: str = "default") -> list[str]:
    """Ids of the messages waiting in `queue` (browsed, left in place)."""
    await app.declare(queue)
    async with app.broker.browse(queue, limit=100) as found:
        return [message.message_id for message in found]


async def insert_old_task(app: taskq.App, name: str, *, age: timedelta) -> str:
    """A `queued` row created `age` ago (a task of yesterday, for the `since` filters)."""
    envelope = protocol.Envelope(
        id=str(uuid.uuid4()),
        task=name,
        queue="default",
        args=[],
        kwargs={},
        created_at=time.time() - age.total_seconds(),
    )
    await app.store.insert_task(new_task_row(envelope))
    return envelope.id


async def taskq_cli(*args: str) -> Result:
    # In a thread: the command runs its own event loop.
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env={"COLUMNS": "200"})


def table_rows(output: str) -> dict[str, list[str]]:
    """A rich table's rows by their first cell (a task id)."""
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in output.splitlines()]
    return {row[0]: row[1:] for row in cells if row and _is_uuid(row[0])}


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


# -- progress ---------------------------------------------------------------------------------


async def test_progress_is_visible_while_running_and_kept_after_success(backend: Backend) -> None:
    # Given a task that reports progress three times, then waits to be released
    app = backend.app()
    release = asyncio.Event()

    @app.task(name="crunch")
    async def crunch() -> str:
        ctx = taskq.context()
        await ctx.progress(0.1)
        await ctx.progress(0.5, "half way", rows=50)
        await ctx.progress(1, "all read", rows=100, tags=["a", "b"])
        await asyncio.wait_for(release.wait(), DEADLINE)
        return "done"

    async with app:
        async with app.worker():
            handle = await crunch.submit()

            # Then while it runs, its row shows the latest report
            running = await stored_progress(handle, 3)
            assert running.state is Status.RUNNING
            progress = running.progress
            assert progress is not None
            assert (progress["fraction"], progress["message"], progress["data"]) == (
                1.0,
                "all read",
                {"rows": 100, "tags": ["a", "b"]},
            )
            assert isinstance(progress["at"], float)

            # And after it succeeded, the row keeps that last report
            release.set()
            assert await handle.result(timeout=DEADLINE) == "done"
        # (read once the worker stopped: nothing it held is still to be written)
        finished = await handle.info()
    assert finished.state is Status.SUCCEEDED
    assert finished.progress == progress


async def test_last_progress_is_kept_when_the_task_ends_right_after_reporting(
    backend: Backend,
) -> None:
    # Given a task whose first report is stored, and which ends just after its second
    app = backend.app()
    first_stored = asyncio.Event()

    @app.task(name="sprint")
    async def sprint() -> None:
        await taskq.context().progress(0.5, "half")
        await asyncio.wait_for(first_stored.wait(), DEADLINE)
        await taskq.context().progress(1.0, "finished")

    async with app:
        async with app.worker():
            handle = await sprint.submit()
            await stored_progress(handle, 1)
            first_stored.set()
            await handle.result(timeout=DEADLINE)
        # The worker has stopped: its writer has flushed every report it held
        finished = await handle.info()

    # Then the row keeps the last report
    assert finished.progress is not None
    assert (finished.progress["n"], finished.progress["message"]) == (2, "finished")


async def test_progress_in_a_tight_loop_is_coalesced_and_ends_at_the_last_report(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a task that reports progress 2,000 times in a tight loop, and a count of the
    # progress writes that reach the store
    app = backend.app()
    loop_done = asyncio.Event()
    release = asyncio.Event()
    writes: list[int] = []
    write_progress = Store.write_progress

    async def counted(store: Store, reports: Any) -> None:
        writes.append(len(reports))
        await write_progress(store, reports)

    monkeypatch.setattr(Store, "write_progress", counted)

    @app.task(name="chatty")
    async def chatty(count: int) -> int:
        ctx = taskq.context()
        for i in range(1, count + 1):
            await ctx.progress(i / count, n=i)
        loop_done.set()
        # Held until the row shows the last report, to see it while still running.
        await asyncio.wait_for(release.wait(), DEADLINE)
        return count

    async with app, app.worker():
        handle = await chatty.submit(2000)
        await asyncio.wait_for(loop_done.wait(), DEADLINE)

        # Then the row ends at the last report
        running = await stored_progress(handle, 2000)
        release.set()
        assert await handle.result(timeout=DEADLINE) == 2000
        finished = await handle.info()
    assert running.progress is not None
    assert (running.progress["fraction"], running.progress["data"]) == (1.0, {"n": 2000})
    assert finished.progress == running.progress
    # And the 2,000 reports cost a handful of writes, not one each
    assert 1 <= len(writes) < 100, writes


async def test_invalid_progress_fails_the_task(backend: Backend) -> None:
    # Given a task that reports a bad fraction, or data msgpack cannot carry
    app = backend.app()

    @app.task(name="misreport")
    async def misreport(case: str) -> None:
        ctx = taskq.context()
        if case == "above one":
            await ctx.progress(1.5)
        elif case == "text":
            await ctx.progress("x")  # type: ignore[arg-type]
        elif case == "nan":
            await ctx.progress(math.nan)
        elif case == "set":
            await ctx.progress(0.5, tags={1, 2})

    cases = {
        "above one": "ValueError",
        "text": "TypeError",
        "nan": "ValueError",
        "set": "taskq.exceptions.SerializationError",
    }
    async with app, app.worker():
        handles = {case: await misreport.submit(case) for case in cases}
        # Then each fails, with the error that progress() raised
        errors = {}
        for case, handle in handles.items():
            with pytest.raises(taskq.TaskFailed) as caught:
                await handle.result(timeout=DEADLINE)
            errors[case] = (caught.value.error_type, caught.value.error_message)
    assert {case: error_type for case, (error_type, _) in errors.items()} == cases
    assert "1.5" in errors["above one"][1]
    assert "builtins.set" in errors["set"][1] and "progress data" in errors["set"][1]


async def test_progress_threadsafe_from_a_plain_def_task(backend: Backend) -> None:
    # Given a plain `def` task (run in a thread) that reports progress, then waits
    app = backend.app()
    release = threading.Event()

    @app.task(name="threaded_progress")
    def threaded_progress(rows: int) -> int:
        taskq.context().progress_threadsafe(0.25, "a quarter", rows=rows)
        taskq.context().progress_threadsafe(0.5, "half", rows=rows * 2)
        assert release.wait(DEADLINE), "never released"
        return rows

    async with app, app.worker():
        handle = await threaded_progress.submit(10)
        try:
            # Then its reports reach the row like an async task's
            running = await stored_progress(handle, 2)
        finally:
            release.set()  # (a thread cannot be cancelled: never leave it waiting)
        assert await handle.result(timeout=DEADLINE) == 10
    assert running.progress is not None
    assert (running.progress["fraction"], running.progress["message"]) == (0.5, "half")
    assert running.progress["data"] == {"rows": 20}


async def test_progress_data_with_bytes_reads_back_as_bytes(backend: Backend) -> None:
    # Given a task whose progress data holds bytes (which msgpack, and task arguments, carry)
    app = backend.app()
    release = asyncio.Event()

    @app.task(name="binary_progress")
    async def binary_progress() -> None:
        await taskq.context().progress(0.5, checksum=b"\x00\xff")
        await asyncio.wait_for(release.wait(), DEADLINE)

    async with app, app.worker():
        handle = await binary_progress.submit()
        try:
            running = await stored_progress(handle, 1)
        finally:
            release.set()
        await handle.result(timeout=DEADLINE)
    # Then info() gives the bytes back, as the live progress event did
    assert running.progress is not None
    assert running.progress["data"] == {"checksum": b"\x00\xff"}


async def test_a_progress_of_zero_written_as_minus_zero_is_shown_by_the_cli(
    backend: Backend,
) -> None:
    # Given a running task whose fraction is -0.0 (within 0..1, so accepted)
    app = backend.app()
    release = asyncio.Event()

    @app.task(name="starting")
    async def starting() -> None:
        await taskq.context().progress(-0.0, "starting")
        await asyncio.wait_for(release.wait(), DEADLINE)

    async with app, app.worker():
        handle = await starting.submit()
        try:
            running = await stored_progress(handle, 1)
            shown = await taskq_cli("status", handle.id, "--store-url", backend.store_url)
        finally:
            release.set()
        await handle.result(timeout=DEADLINE)
    # Then the row holds a float, and `taskq status` shows it
    assert running.progress is not None
    assert running.progress["fraction"] == 0.0
    assert shown.exit_code == 0, repr(shown.exception)
    assert "0% starting" in shown.stdout


# -- handle.events() --------------------------------------------------------------------------


async def test_handle_events_see_running_each_progress_in_order_and_the_final_state(
    backend: Backend,
) -> None:
    # Given a task that reports three steps
    app = backend.app()

    @app.task(name="steps")
    async def steps() -> str:
        for step in (1, 2, 3):
            await taskq.context().progress(step / 4, f"step {step}", step=step)
        return "done"

    async with app:
        handle = await steps.submit()
        events = handle.events()
        # The first event (the stored state) comes once the watch is bound: no worker yet
        first = await asyncio.wait_for(anext(events), DEADLINE)
        async with app.worker():
            rest = await collect(events)

    # Then the watcher saw queued, running, each report in order, and the final state
    assert (first.kind, first.state, first.attempt) == ("state", Status.QUEUED, 0)
    assert shape(rest) == [
        ("state", Status.RUNNING, None, None, {}, 0),
        ("progress", Status.RUNNING, 0.25, "step 1", {"step": 1}, 1),
        ("progress", Status.RUNNING, 0.5, "step 2", {"step": 2}, 2),
        ("progress", Status.RUNNING, 0.75, "step 3", {"step": 3}, 3),
        ("state", Status.SUCCEEDED, None, None, {}, 0),
    ]
    assert all((e.task_id, e.name, e.queue) == (handle.id, "steps", "default") for e in rest)
    assert [e.attempt for e in rest] == [1] * 5
    assert [e.is_final for e in rest] == [False] * 4 + [True]
    assert all(e.at.tzinfo is not None for e in [first, *rest])


async def test_handle_events_joining_mid_run_start_at_the_stored_progress(
    backend: Backend,
) -> None:
    # Given a running task whose first report is stored
    app = backend.app()
    release = asyncio.Event()

    @app.task(name="halves")
    async def halves() -> None:
        await taskq.context().progress(0.5, "first half")
        await asyncio.wait_for(release.wait(), DEADLINE)
        await taskq.context().progress(1.0, "second half")

    async with app, app.worker():
        handle = await halves.submit()
        await stored_progress(handle, 1)
        # When a watcher joins now, and the task goes on
        events = handle.events()
        joined = [await asyncio.wait_for(anext(events), DEADLINE) for _ in range(2)]
        release.set()
        rest = await collect(events)
    # Then it starts with the state and the latest report from the store, then live ones
    assert shape(joined) == [
        ("state", Status.RUNNING, None, None, {}, 0),
        ("progress", Status.RUNNING, 0.5, "first half", {}, 1),
    ]
    assert shape(rest) == [
        ("progress", Status.RUNNING, 1.0, "second half", {}, 2),
        ("state", Status.SUCCEEDED, None, None, {}, 0),
    ]


async def test_late_subscriber_gets_exactly_the_final_state(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="brief")
    async def brief() -> int:
        await taskq.context().progress(0.5, "half")
        return 1

    async with app:
        async with app.worker():
            handle = await brief.submit()
            assert await handle.result(timeout=DEADLINE) == 1
        # Given the task finished before anyone watched
        # Then a watcher gets one event: the final state, and the iterator ends
        events = await collect(handle.events())
    assert shape(events) == [("state", Status.SUCCEEDED, None, None, {}, 0)]
    assert events[0].is_final and events[0].attempt == 1 and events[0].task_id == handle.id


async def test_handle_events_of_a_failing_task_end_failed(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="breaks")
    async def breaks() -> None:
        await taskq.context().progress(0.5)
        raise RuntimeError("broke half way")

    async with app, app.worker():
        handle = await breaks.submit()
        events = await collect(handle.events())
    # Then the last event is the final state `failed`, and the only final one
    assert (events[-1].kind, events[-1].state) == ("state", Status.FAILED)
    assert [e.is_final for e in events] == [False] * (len(events) - 1) + [True]


async def test_handle_events_of_a_cancelled_task_end_cancelled(backend: Backend) -> None:
    app = backend.app()
    started = asyncio.Event()

    @app.task(name="endless")
    async def endless() -> None:
        started.set()
        await asyncio.Event().wait()

    async with app, app.worker():
        handle = await endless.submit()
        watching = asyncio.create_task(collect(handle.events()))
        await asyncio.wait_for(started.wait(), DEADLINE)
        # When the running task is cancelled
        assert await handle.cancel() is True
        events = await watching
    # Then its events end with `cancelled`
    assert (events[-1].kind, events[-1].state) == ("state", Status.CANCELLED)
    assert Status.RUNNING in [e.state for e in events[:-1]]


# -- app.events() -----------------------------------------------------------------------------


async def pump(
    events: AsyncIterator[taskq.TaskEvent], into: asyncio.Queue[taskq.TaskEvent]
) -> None:
    async for event in events:
        into.put_nowait(event)


async def until_subscribed(
    tails: list[asyncio.Queue[taskq.TaskEvent]], warm_up: Callable[[], Awaitable[object]]
) -> None:
    """Submit warm-up tasks (that every tail matches) until each tail has yielded an event:
    from then on, each tail is bound and misses nothing."""
    deadline = time.monotonic() + TAIL_DEADLINE
    while not all(tail.qsize() for tail in tails):
        if time.monotonic() > deadline:
            raise AssertionError("the tails never yielded a warm-up task's event")
        await warm_up()
        await asyncio.sleep(0.05)


async def events_until_final(
    tail: asyncio.Queue[taskq.TaskEvent], task_id: str
) -> list[taskq.TaskEvent]:
    """What a tail yielded, up to and including `task_id`'s final state."""
    got: list[taskq.TaskEvent] = []
    async with asyncio.timeout(TAIL_DEADLINE):
        while not (got and got[-1].task_id == task_id and got[-1].is_final):
            got.append(await tail.get())
    return got


async def test_app_events_filter_by_queue_and_by_task_name(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    app = backend.app()

    @app.task(name="wanted_task")
    async def wanted_task(label: str) -> str:
        return label

    @app.task(name="other_task")
    async def other_task(label: str) -> str:
        return label

    async with app, app.worker(queues=["default", "wanted"]):
        # Given three tails: everything, queue "wanted" only, task "wanted_task" only
        tails: dict[str, asyncio.Queue[taskq.TaskEvent]] = {
            "all": asyncio.Queue(),
            "queue": asyncio.Queue(),
            "task": asyncio.Queue(),
        }
        pumps = [
            asyncio.create_task(pump(app.events(), tails["all"])),
            asyncio.create_task(pump(app.events(queue="wanted"), tails["queue"])),
            asyncio.create_task(pump(app.events(task="wanted_task"), tails["task"])),
        ]
        try:
            await until_subscribed(
                list(tails.values()), lambda: wanted_task.options(queue="wanted").submit("warm")
            )
            # When tasks run on both queues under both names, the one matching both last
            # (events arrive in the order sent, so once its end is seen, all before it are)
            submitted = {
                "neither": await other_task.submit("neither"),
                "queue only": await other_task.options(queue="wanted").submit("queue only"),
                "name only": await wanted_task.submit("name only"),
            }
            for handle in submitted.values():
                await handle.result(timeout=DEADLINE)
            both = await wanted_task.options(queue="wanted").submit("both")
            seen = {name: await events_until_final(tail, both.id) for name, tail in tails.items()}
        finally:
            for running in pumps:
                running.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    ids = {name: {event.task_id for event in events} for name, events in seen.items()}
    # Then the unfiltered tail saw every task: the events were sent
    assert {handle.id for handle in submitted.values()} | {both.id} <= ids["all"]
    # And each filtered tail yielded only the matching tasks' events
    assert all(event.queue == "wanted" for event in seen["queue"])
    assert submitted["queue only"].id in ids["queue"]
    assert not {submitted["neither"].id, submitted["name only"].id} & ids["queue"]
    assert all(event.name == "wanted_task" for event in seen["task"])
    assert submitted["name only"].id in ids["task"]
    assert not {submitted["neither"].id, submitted["queue only"].id} & ids["task"]
    # And each saw the whole life of the task matching both, in order
    for events in seen.values():
        states = [e.state for e in events if e.task_id == both.id and e.kind == "state"]
        assert states == [Status.QUEUED, Status.RUNNING, Status.SUCCEEDED]


# -- submit_many ------------------------------------------------------------------------------


async def test_submit_many_runs_every_item_and_gathers_the_results_in_order(
    backend: Backend,
) -> None:
    app = backend.app()

    @app.task(name="square")
    async def square(x: int) -> int:
        return x * x

    async with app, app.worker(concurrency=50):
        batch = await square.submit_many([(i,) for i in range(500)])
        assert isinstance(batch, taskq.Batch) and len(batch) == 500
        results = await app.gather(batch, timeout=DEADLINE)
        rows = await app.list_tasks(batch=batch.id, limit=1000)

    # Then every result came back, in item order
    assert results == [i * i for i in range(500)]
    # And every row carries the batch id
    assert len(rows) == 500
    assert {row.batch_id for row in rows} == {batch.id}
    assert {row.id for row in rows} == {handle.id for handle in batch}
    assert {row.state for row in rows} == {Status.SUCCEEDED}


async def test_gather_of_many_tasks_wakes_on_their_events(
    backend: Backend, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Above 16 tasks a wait binds one wildcard instead of a key per task.
    app = backend.app()
    release = asyncio.Event()
    first_read = asyncio.Event()
    finished = batch_module._finished

    async def reading(runtime: Any, task_ids: Any) -> list[str]:
        found = await finished(runtime, task_ids)
        first_read.set()
        return found

    monkeypatch.setattr(batch_module, "_finished", reading)

    @app.task(name="held")
    async def held(i: int) -> int:
        await asyncio.wait_for(release.wait(), DEADLINE)
        return i

    async with app, app.worker(concurrency=20):
        handles = await held.submit_many([(i,) for i in range(20)])
        # Given gather has read the store once, while all 20 were still running
        gathering = asyncio.create_task(app.gather(handles))
        await asyncio.wait_for(first_read.wait(), DEADLINE)
        # When they finish, the events they send wake it: long before the 30 s re-read
        release.set()
        assert await asyncio.wait_for(gathering, TAIL_DEADLINE) == list(range(20))


async def test_results_awaited_one_after_another_bind_the_events_key_once(
    production: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a client whose event subscription counts its binds and unbinds
    app = production.app()
    calls: list[str] = []

    @app.task(name="quick")
    async def quick(i: int) -> int:
        return i

    async with app, app.worker():
        assert await (await quick.submit(0)).result(timeout=DEADLINE) == 0
        subscription = app.waiter._subscription
        assert subscription is not None
        bind, unbind = subscription.bind, subscription.unbind

        async def counted_bind(key: str) -> None:
            calls.append("bind")
            await bind(key)

        async def counted_unbind(key: str) -> None:
            calls.append("unbind")
            await unbind(key)

        monkeypatch.setattr(subscription, "bind", counted_bind)
        monkeypatch.setattr(subscription, "unbind", counted_unbind)
        # When ten results are awaited one after another
        for i in range(1, 11):
            assert await (await quick.submit(i)).result(timeout=DEADLINE) == i
        # Then the binding made for the first was kept for them all
        assert calls == []
        # And it is dropped once nothing has been watched for a while
        monkeypatch.setattr(waiter_module, "UNBIND_AFTER", 0.01)
        assert await (await quick.submit(11)).result(timeout=DEADLINE) == 11

        async def seen() -> list[str]:
            return list(calls)

        await eventually(seen, lambda found: found == ["unbind"], what="the unbind after idling")


async def test_result_of_a_task_that_ended_before_result_was_called_returns_at_once(
    production: Backend,
) -> None:
    # Given a client already listening to events (one result awaited), and a task of its
    # own that has ended before its result is asked for
    app = production.app()

    @app.task(name="ended")
    async def ended(i: int) -> int:
        return i

    async with app, app.worker():
        assert await (await ended.submit(0)).result(timeout=DEADLINE) == 0
        handle = await ended.submit(1)

        async def heard() -> bool:  # its ending event has arrived, before anything watches it
            return handle.id in app.waiter._recent_ends

        await eventually(heard, what="the ending event")
        # When its result is awaited
        started = time.monotonic()
        value = await handle.result(timeout=DEADLINE)
        # Then it comes back at once: the ending event heard before was remembered, so the
        # store was read rather than an event waited for until the timeout
        assert value == 1
        assert time.monotonic() - started < DEADLINE / 2


async def test_a_small_result_comes_with_its_ending_event_and_a_large_one_from_the_store(
    production: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a client that counts its reads of task rows
    app = production.app()
    reads: list[str] = []
    info = taskq.TaskHandle.info

    async def counted_info(handle: taskq.TaskHandle[Any]) -> taskq.TaskRecord:
        reads.append(handle.id)
        return await info(handle)

    monkeypatch.setattr(taskq.TaskHandle, "info", counted_info)

    @app.task(name="sized")
    async def sized(size: int) -> dict[str, Any]:
        return {"text": "x" * size, "raw": b"\x00\xff", "nested": [1.5, None, True]}

    limit = protocol.RESULT_IN_EVENT_MAX_BYTES
    async with app, app.worker():
        await (await sized.submit(0)).result(timeout=DEADLINE)  # (events now bound)
        reads.clear()
        # When a small result and then a large one are awaited
        small = await sized.submit(10)
        assert await small.result(timeout=DEADLINE) == {
            "text": "x" * 10, "raw": b"\x00\xff", "nested": [1.5, None, True]
        }  # fmt: skip
        large = await sized.submit(limit)
        assert (await large.result(timeout=DEADLINE))["text"] == "x" * limit
    # Then the small one came with its `succeeded` event, and only the large one was read
    assert reads == [large.id]


async def test_a_result_the_store_refused_is_a_failure_also_for_a_waiting_result(
    production: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a store that refuses to write one task's succeeded outcome (as it would a value
    # it cannot hold)
    app = production.app()
    record = writer_module.Writer.record

    def refusing(self: writer_module.Writer, outcome: Outcome) -> Any:
        if outcome.state is Status.SUCCEEDED and outcome.result == "refused":
            refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            refused.set_exception(taskq.StoreError("value too odd to store"))
            return refused
        return record(self, outcome)

    monkeypatch.setattr(writer_module.Writer, "record", refusing)

    @app.task(name="refused")
    async def returns(value: str) -> str:
        return value

    async with app, app.worker():
        assert await (await returns.submit("kept")).result(timeout=DEADLINE) == "kept"
        # When a waiting client awaits the result the store refused
        handle = await returns.submit("refused")
        # Then it fails as the row says, though the value was small enough for an event
        with pytest.raises(taskq.TaskFailed) as failed:
            await handle.result(timeout=DEADLINE)
        assert (await handle.info()).state is Status.FAILED
    assert failed.value.error_type == "ResultNotStored"


async def test_concurrent_submits_send_their_queued_events_together(
    production: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a client whose broker counts the event messages it sends (and the events in each)
    app = production.app()

    @app.task(name="counted")
    async def counted(i: int) -> int:
        return i

    async with app:
        sent: list[int] = []
        publish_event = app.broker.publish_event

        async def counting(key: str, body: bytes) -> None:
            sent.append(len(protocol.decode_events(body)))
            await publish_event(key, body)

        monkeypatch.setattr(app.broker, "publish_event", counting)
        # When 20 tasks are submitted at once
        handles = await asyncio.gather(*(counted.submit(i) for i in range(20)))
    # Then their 20 `queued` events went out in far fewer messages than 20
    assert sum(sent) == 20
    assert len(sent) <= 3, sent
    assert len({handle.id for handle in handles}) == 20


async def test_submit_many_refuses_an_unserialisable_item_and_stores_and_sends_nothing(
    backend: Backend,
) -> None:
    app = backend.app()

    @app.task(name="keep")
    async def keep(value: object) -> None:
        pass

    async with app:
        # Given a batch whose item 3 holds a set
        items: list[tuple[Any, ...]] = [(0,), (1,), (2,), ({"tags": {1, 2}},), (4,)]
        # Then the error names the item and where in it the set is
        with pytest.raises(taskq.SerializationError) as caught:
            await keep.submit_many(items)
        assert "item 3" in str(caught.value)
        assert "argument 0['tags'] has type builtins.set" in str(caught.value)
        # And no item was stored, nor published (not even those before it)
        assert await app.list_tasks() == []
        assert await queued_messages(app) == []


async def test_submit_many_names_the_item_that_is_wrong(backend: Backend) -> None:
    app = backend.app(max_payload_bytes=64 * 1024)

    @app.task(name="pair")
    async def pair(a: int, b: object = None) -> None:
        pass

    async with app:
        # Wrong arity at item 2
        with pytest.raises(taskq.InvalidArguments) as arity:
            await pair.submit_many([(1,), (2, 3), (1, 2, 3), (4,)])
        assert "item 2" in str(arity.value) and "pair" in str(arity.value)
        # An item that is neither a tuple nor a dict (a bare argument) at item 1
        with pytest.raises(TypeError) as bare:
            await pair.submit_many([(1,), 5])  # type: ignore[list-item]
        assert "item 1" in str(bare.value) and "int" in str(bare.value)
        # An item over max_payload_bytes at item 5
        big = [(i,) for i in range(5)] + [(5, b"x" * (100 * 1024))]
        with pytest.raises(taskq.PayloadTooLarge) as oversize:
            await pair.submit_many(big)
        assert "item 5" in str(oversize.value)
        # An idempotency key cannot apply to a batch
        with pytest.raises(taskq.ConfigurationError, match="idempotency_key"):
            await pair.options(idempotency_key="once").submit_many([(1,)])
        # And none of these stored or published anything
        assert await app.list_tasks() == []
        assert await queued_messages(app) == []


async def test_submit_many_dict_items_are_keyword_arguments(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="greet")
    async def greet(name: str, greeting: str = "hello") -> str:
        return f"{greeting} {name}"

    async with app, app.worker():
        batch = await greet.submit_many(
            [{"name": "ada"}, {"name": "bob", "greeting": "hi"}, ("cy", "hey")]
        )
        assert await app.gather(batch, timeout=DEADLINE) == ["hello ada", "hi bob", "hey cy"]
        rows = {row.id: row for row in await app.list_tasks(batch=batch.id)}
    assert (rows[batch[1].id].args, rows[batch[1].id].kwargs) == (
        [],
        {"name": "bob", "greeting": "hi"},
    )


async def test_submit_many_with_countdown_leaves_the_rows_scheduled_until_due(
    backend: Backend,
) -> None:
    app = backend.app()

    @app.task(name="later")
    async def later(i: int) -> int:
        return i

    async with app, app.worker():
        submitted = datetime.now(UTC)
        batch = await later.options(countdown=1.0).submit_many([(i,) for i in range(3)])
        # Then the rows wait `scheduled`, due a second on
        rows = await app.list_tasks(batch=batch.id)
        assert {row.state for row in rows} == {Status.SCHEDULED}
        # And they run once due
        assert await app.gather(batch, timeout=DEADLINE) == [0, 1, 2]
        infos = [await handle.info() for handle in batch]
    for info in infos:
        assert info.run_at is not None and info.started_at is not None
        assert info.run_at >= submitted + timedelta(seconds=1)
        assert info.started_at >= info.run_at


# -- gather, as_completed ---------------------------------------------------------------------


async def test_gather_raises_the_failure_only_after_every_task_finished(backend: Backend) -> None:
    app = backend.app()
    release = asyncio.Event()

    @app.task(name="step")
    async def step(kind: str) -> str:
        if kind == "fail":
            raise ValueError("bad step")
        if kind == "held":
            await asyncio.wait_for(release.wait(), DEADLINE)
        return kind

    async with app, app.worker():
        handles = [await step.submit(kind) for kind in ("ok", "fail", "held")]
        gathering = asyncio.create_task(app.gather(handles, timeout=DEADLINE))
        # Given the failure is known while another task still runs
        with pytest.raises(taskq.TaskFailed):
            await handles[1].result(timeout=DEADLINE)
        assert not gathering.done()
        release.set()
        # Then gather raises that failure, once the held task has finished too
        with pytest.raises(taskq.TaskFailed) as caught:
            await gathering
        assert await handles[2].status() is Status.SUCCEEDED
    assert (caught.value.task_id, caught.value.error_type) == (handles[1].id, "ValueError")


async def test_gather_return_exceptions_puts_each_error_in_its_place(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="maybe")
    async def maybe(fail: bool) -> str:
        if fail:
            raise KeyError("missing")
        return "fine"

    async with app, app.worker():
        handles = [await maybe.submit(False), await maybe.submit(True), await maybe.submit(False)]
        results = await app.gather(handles, timeout=DEADLINE, return_exceptions=True)
    assert results[0] == "fine" and results[2] == "fine"
    assert isinstance(results[1], taskq.TaskFailed)
    assert (results[1].task_id, results[1].error_type) == (handles[1].id, "KeyError")


async def test_gather_and_as_completed_time_out_with_timeout_error(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="never_runs")
    async def never_runs() -> None:
        pass

    async with app:  # no worker: the task stays queued
        handle = await never_runs.submit()
        with pytest.raises(TimeoutError):
            await app.gather([handle], timeout=0.3)
        with pytest.raises(TimeoutError):
            async for _ in app.as_completed([handle], timeout=0.3):
                pass
        assert await handle.status() is Status.QUEUED


async def test_as_completed_yields_each_handle_once_in_finishing_order(backend: Backend) -> None:
    # Given three tasks, each held until the test releases it
    app = backend.app()
    gates = {label: asyncio.Event() for label in ("a", "b", "c")}

    @app.task(name="gated")
    async def gated(label: str) -> str:
        await asyncio.wait_for(gates[label].wait(), DEADLINE)
        return label

    async with app, app.worker(concurrency=3):
        handles = {label: await gated.submit(label) for label in gates}
        by_id = {handle.id: label for label, handle in handles.items()}
        # When they are released one at a time, the next once the previous was yielded
        release_order = ["c", "a", "b"]
        gates[release_order[0]].set()
        yielded = []
        async for handle in app.as_completed(handles.values(), timeout=DEADLINE):
            yielded.append(by_id[handle.id])
            if len(yielded) < len(release_order):
                gates[release_order[len(yielded)]].set()
    # Then they came in the order they finished, each once
    assert yielded == release_order


# -- cancel_many ------------------------------------------------------------------------------


async def test_cancel_many_cancels_waiting_tasks_and_reports_the_others(backend: Backend) -> None:
    app = backend.app()
    ran: list[str] = []

    @app.task(name="job")
    async def job(label: str) -> None:
        ran.append(label)

    async with app:
        async with app.worker():
            done = await job.submit("done")
            await done.result(timeout=DEADLINE)
        ran.clear()
        # Given three queued tasks (no worker runs), a finished one, and an unknown id
        waiting = [await job.submit(f"waiting {i}") for i in range(3)]
        unknown = str(uuid.uuid4())

        # When they are cancelled together
        answer = await app.cancel_many([h.id for h in waiting] + [done.id, unknown])

        # Then each waiting one was cancelled; the finished one and the unknown one were not
        assert answer == {**{h.id: True for h in waiting}, done.id: False, unknown: False}
        assert [await h.status() for h in waiting] == [Status.CANCELLED] * 3
        assert await done.status() is Status.SUCCEEDED
        # And an id that is not a UUID is refused
        with pytest.raises(taskq.TaskNotFound, match="not-a-uuid"):
            await app.cancel_many([waiting[0].id, "not-a-uuid"])
        # And a worker started now runs none of them
        behind = await job.submit("sentinel")
        async with app.worker(concurrency=1):
            await behind.result(timeout=DEADLINE)
    assert ran == ["sentinel"]


async def test_cancel_many_stops_a_running_task(backend: Backend) -> None:
    app = backend.app()
    started = asyncio.Event()

    @app.task(name="long")
    async def long() -> None:
        started.set()
        await asyncio.Event().wait()

    async with app, app.worker():
        handle = await long.submit()
        await asyncio.wait_for(started.wait(), DEADLINE)
        assert await app.cancel_many([handle.id]) == {handle.id: True}
        with pytest.raises(taskq.TaskCancelled):
            await handle.result(timeout=DEADLINE)
        assert await handle.status() is Status.CANCELLED


# -- list_tasks -------------------------------------------------------------------------------


async def test_list_tasks_filters_by_state_name_and_queue(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="alpha")
    async def alpha() -> None:
        pass

    @app.task(name="beta")
    async def beta() -> None:
        raise ValueError("beta fails")

    async with app:
        # Given tasks in five states, of two names, on two queues
        async with app.worker():
            succeeded = await alpha.submit()
            failed = await beta.submit()
            assert await final_state(succeeded) is Status.SUCCEEDED
            assert await final_state(failed) is Status.FAILED
        queued = await alpha.options(queue="other").submit()
        scheduled = await beta.options(countdown=3600).submit()
        cancelled = await alpha.submit()
        assert await cancelled.cancel() is True

        async def ids(**filters: Any) -> set[str]:
            return {record.id for record in await app.list_tasks(**filters)}

        # Then each filter, and their combination, selects the matching tasks
        assert await ids() == {h.id for h in (succeeded, failed, queued, scheduled, cancelled)}
        assert await ids(state="queued") == {queued.id}
        assert await ids(state=Status.SUCCEEDED) == {succeeded.id}
        assert await ids(state=["failed", Status.CANCELLED]) == {failed.id, cancelled.id}
        assert await ids(state={Status.SCHEDULED}) == {scheduled.id}
        assert await ids(name="beta") == {failed.id, scheduled.id}
        assert await ids(queue="other") == {queued.id}
        assert await ids(name="alpha", state="cancelled", queue="default") == {cancelled.id}
        assert await ids(name="beta", state="queued") == set()
        # And the records are whole rows
        (record,) = await app.list_tasks(state="failed")
        assert record.error is not None and record.error.message == "beta fails"


async def test_list_tasks_since_limit_and_newest_first(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="item")
    async def item(i: int) -> None:
        pass

    async with app:
        # Given a task created an hour ago and three created now, one after another
        old = await insert_old_task(app, "item", age=timedelta(hours=1))
        first = await item.submit(1)
        boundary = datetime.now(UTC)
        newer = [await item.submit(2), await item.submit(3)]

        async def ids(**filters: Any) -> list[str]:
            return [record.id for record in await app.list_tasks(**filters)]

        # Then they are listed newest first, and limit keeps the newest
        newest_first = [newer[1].id, newer[0].id, first.id, old]
        assert await ids() == newest_first
        assert await ids(limit=2) == newest_first[:2]
        # And since (a timedelta back, or an aware datetime) leaves out older tasks
        assert await ids(since=timedelta(minutes=10)) == newest_first[:3]
        assert await ids(since=timedelta(hours=2)) == newest_first
        assert await ids(since=boundary) == newest_first[:2]
        # And a naive datetime is refused: its zone would be a guess
        with pytest.raises(taskq.ConfigurationError, match="timezone-aware"):
            await app.list_tasks(since=datetime.now())
        # And a batch filter must be a UUID
        with pytest.raises(taskq.TaskNotFound, match="batch id"):
            await app.list_tasks(batch="yesterday")


async def test_list_tasks_since_with_an_offset_other_than_utc(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    app = backend.app()

    @app.task(name="now")
    async def now() -> None:
        pass

    async with app:
        handle = await now.submit()
        # An hour ago, written in another zone: the same instant
        an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).astimezone(
            timezone(timedelta(hours=5))
        )
        assert [r.id for r in await app.list_tasks(since=an_hour_ago)] == [handle.id]


# -- CLI: taskq tasks, taskq status -----------------------------------------------------------


async def test_cli_tasks_lists_ids_and_states_as_a_table_and_as_json(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="listed")
    async def listed(i: int) -> int:
        return i

    async with app:
        async with app.worker():
            succeeded = await listed.submit(1)
            await succeeded.result(timeout=DEADLINE)
        queued = await listed.options(queue="other").submit(2)
        scheduled = await listed.options(countdown=3600).submit(3)
    store = ["--store-url", backend.store_url]

    # The table: a row per task, with its id and state
    shown = await taskq_cli("tasks", *store)
    assert shown.exit_code == 0, shown.output
    rows = table_rows(shown.stdout)
    assert {task_id: row[2] for task_id, row in rows.items()} == {
        succeeded.id: "succeeded",
        queued.id: "queued",
        scheduled.id: "scheduled",
    }, shown.stdout
    assert rows[queued.id][:2] == ["listed", "other"]

    # JSON lines, filtered by state (repeatable) and queue
    shown = await taskq_cli("tasks", "--json", "--state", "queued", "--state", "scheduled", *store)
    assert shown.exit_code == 0, shown.output
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert {(line["id"], line["state"]) for line in lines} == {
        (queued.id, "queued"),
        (scheduled.id, "scheduled"),
    }
    shown = await taskq_cli("tasks", "--json", "--queue", "other", "--name", "listed", *store)
    (line,) = [json.loads(text) for text in shown.stdout.splitlines()]
    assert (line["id"], line["queue"], line["name"], line["batch_id"]) == (
        queued.id,
        "other",
        "listed",
        None,
    )
    assert datetime.fromisoformat(line["created_at"]).tzinfo is not None

    # --limit keeps the newest, and says there may be more
    shown = await taskq_cli("tasks", "--limit", "1", *store)
    assert list(table_rows(shown.stdout)) == [scheduled.id]
    assert "--limit shows more" in shown.stdout


async def test_cli_tasks_since_and_batch(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="batched")
    async def batched(i: int) -> None:
        pass

    async with app:
        old = await insert_old_task(app, "batched", age=timedelta(hours=1))
        single = await batched.submit(0)
        batch = await batched.submit_many([(1,), (2,)])
    store = ["--store-url", backend.store_url]

    async def listed(*options: str) -> set[str]:
        shown = await taskq_cli("tasks", "--json", *options, *store)
        assert shown.exit_code == 0, shown.output
        return {json.loads(line)["id"] for line in shown.stdout.splitlines()}

    recent = {single.id, *(h.id for h in batch)}
    assert await listed("--since", "10m") == recent
    assert await listed("--since", "2h") == recent | {old}
    since = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    assert await listed("--since", since) == recent
    assert await listed("--batch", batch.id) == {h.id for h in batch}
    shown = await taskq_cli("tasks", "--json", "--batch", batch.id, *store)
    assert {json.loads(line)["batch_id"] for line in shown.stdout.splitlines()} == {batch.id}


async def test_cli_tasks_refuses_an_invalid_batch_or_since_clearly(backend: Backend) -> None:
    store = ["--store-url", backend.store_url]
    shown = await taskq_cli("tasks", "--batch", "last-night", *store)
    assert shown.exit_code == 1
    assert "--batch 'last-night' is not a batch id" in shown.stderr
    assert "Traceback" not in shown.output
    shown = await taskq_cli("tasks", "--since", "yesterday", *store)
    assert shown.exit_code == 1
    assert "--since 'yesterday' is neither a duration" in shown.stderr


async def test_cli_tasks_since_an_iso_time_with_an_offset_other_than_utc(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    app = backend.app()

    @app.task(name="now")
    async def now() -> None:
        pass

    async with app:
        handle = await now.submit()
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).astimezone(timezone(timedelta(hours=5)))
    shown = await taskq_cli(
        "tasks", "--json", "--since", an_hour_ago.isoformat(), "--store-url", backend.store_url
    )
    assert shown.exit_code == 0, shown.output
    assert [json.loads(line)["id"] for line in shown.stdout.splitlines()] == [handle.id]


async def test_cli_status_shows_the_progress_of_a_running_task_and_its_batch(
    backend: Backend,
) -> None:
    app = backend.app()
    release = asyncio.Event()

    @app.task(name="import_rows")
    async def import_rows() -> None:
        await taskq.context().progress(0.4, "40 of 100 rows")
        await asyncio.wait_for(release.wait(), DEADLINE)

    async with app, app.worker():
        (handle,) = batch = await import_rows.submit_many([()])
        try:
            await stored_progress(handle, 1)
            shown = await taskq_cli("status", handle.id, "--store-url", backend.store_url)
            table = await taskq_cli("tasks", "--store-url", backend.store_url)
        finally:
            release.set()
        await handle.result(timeout=DEADLINE)
        done = await taskq_cli("status", handle.id, "--store-url", backend.store_url)

    assert shown.exit_code == 0, shown.output
    fields = dict(line.split(None, 1) for line in shown.stdout.splitlines() if line.strip())
    assert fields["state"].strip() == "running"
    assert fields["progress"].strip() == "40% 40 of 100 rows"
    assert fields["batch"].strip() == batch.id
    # And `taskq tasks` shows the progress next to the state
    assert table_rows(table.stdout)[handle.id][2] == "running 40% 40 of 100 rows"
    # And once finished, the progress line is gone (the batch stays)
    assert "progress" not in done.stdout and batch.id in done.stdout


# -- transactional submit (PostgreSQL) --------------------------------------------------------


async def test_transactional_submit_runs_once_committed(production: Backend) -> None:
    app = production.app()

    @app.task(name="after_commit")
    async def after_commit(x: int) -> int:
        return x * 2

    engine = create_async_engine(production.store_url)
    try:
        async with app:
            # Given a task submitted inside the caller's transaction
            async with engine.begin() as conn:
                handle = await after_commit.options(transaction=conn).submit(21)
                # Then nobody else sees it before the commit
                with pytest.raises(taskq.TaskNotFound):
                    await app.get(handle.id)
            # And after the commit it waits `scheduled`: the submitter publishes nothing
            assert await handle.status() is Status.SCHEDULED
            assert await queued_messages(app) == []
            # And a worker (which leads) publishes and runs it
            async with app.worker():
                assert await handle.result(timeout=DEADLINE) == 42
    finally:
        await engine.dispose()


async def test_transactional_submit_rolled_back_leaves_nothing(production: Backend) -> None:
    app = production.app()
    ran: list[str] = []

    @app.task(name="maybe_later")
    async def maybe_later(label: str) -> None:
        ran.append(label)

    engine = create_async_engine(production.store_url)
    try:
        async with app:
            async with engine.connect() as conn:
                await conn.begin()
                doomed = await maybe_later.options(transaction=conn).submit("rolled back")
                await conn.rollback()
            with pytest.raises(taskq.TaskNotFound):
                await app.get(doomed.id)
            assert await queued_messages(app) == []
            # A sentinel committed after it: once it ran, the leader had passed both
            async with app.worker(concurrency=1):
                async with engine.begin() as conn:
                    sentinel = await maybe_later.options(transaction=conn).submit("sentinel")
                await sentinel.result(timeout=DEADLINE)
            assert await app.list_tasks() == [await sentinel.info()]
    finally:
        await engine.dispose()
    assert ran == ["sentinel"]


async def test_transactional_submit_with_an_async_session(production: Backend) -> None:
    app = production.app()

    @app.task(name="from_session")
    async def from_session(x: int) -> int:
        return x + 1

    engine = create_async_engine(production.store_url)
    try:
        async with app, app.worker():
            async with AsyncSession(engine) as session, session.begin():
                handle = await from_session.options(transaction=session).submit(1)
            assert await handle.result(timeout=DEADLINE) == 2
    finally:
        await engine.dispose()


async def test_transactional_submit_refuses_what_is_not_a_transaction(
    production: Backend,
) -> None:
    app = production.app()

    @app.task(name="nowhere")
    async def nowhere() -> None:
        pass

    engine = create_async_engine(production.store_url)
    try:
        async with app:
            # A connection that has not begun a transaction
            async with engine.connect() as conn:
                with pytest.raises(taskq.ConfigurationError, match="must be in a transaction"):
                    await nowhere.options(transaction=conn).submit()
            # Something that is not a connection at all
            with pytest.raises(taskq.ConfigurationError, match="AsyncConnection or AsyncSession"):
                await nowhere.options(transaction=object()).submit()  # type: ignore[arg-type]
            assert await app.list_tasks() == []
    finally:
        await engine.dispose()


async def test_transactional_submit_with_countdown_waits_as_scheduled(
    production: Backend,
) -> None:
    app = production.app()

    @app.task(name="delayed")
    async def delayed() -> str:
        return "ran"

    engine = create_async_engine(production.store_url)
    try:
        async with app, app.worker():
            submitted = datetime.now(UTC)
            async with engine.begin() as conn:
                handle = await delayed.options(transaction=conn, countdown=1.0).submit()
            assert await handle.status() is Status.SCHEDULED
            assert await handle.result(timeout=DEADLINE) == "ran"
            info = await handle.info()
    finally:
        await engine.dispose()
    assert info.run_at is not None and info.started_at is not None
    assert info.run_at >= submitted + timedelta(seconds=1)
    assert info.started_at >= info.run_at
