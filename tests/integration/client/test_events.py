"""Task events: `handle.events()` from the current state to the final one, and `app.events()`
filtered by queue and task name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import taskq
from tests.conftest import Backend
from tests.integration.client.helpers import (
    DEADLINE,
    TAIL_DEADLINE,
    Status,
    collect,
    shape,
    stored_progress,
)

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
