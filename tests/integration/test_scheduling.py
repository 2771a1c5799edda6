"""Delays, idempotency, periodic ticks and locks, on the embedded default and in production.

Each test runs twice (the `backend` fixture): memory:// + SQLite, and RabbitMQ + PostgreSQL,
with an in-process `app.worker()` that is also the scheduler leader. One test is production
only: it stages a leader that died between storing a periodic tick and publishing it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

import taskq
from taskq import protocol
from taskq.client.periodic import tick_key
from taskq.client.rows import new_task_row
from tests.conftest import Backend

COUNTDOWN = 1.5


async def rows(app: taskq.App, *, key: str | None = None) -> int:
    """How many task rows the store holds (with idempotency key `key`, if given)."""
    found = await app.store.find_tasks(limit=100_000)
    return sum(1 for record in found if key is None or record.idempotency_key == key)


# -- delays -----------------------------------------------------------------------------------


async def test_countdown_task_is_scheduled_then_runs_no_earlier_than_due(backend: Backend) -> None:
    # Given a task that records when it starts, and a worker that leads
    app = backend.app()
    started: list[float] = []

    @app.task(name="stamp")
    async def stamp() -> None:
        started.append(time.time())

    async with app, app.worker(concurrency=2):
        # When it is submitted with a countdown
        submitted = time.time()
        handle = await stamp.options(countdown=COUNTDOWN).submit()

        # Then its row waits as `scheduled`, due `countdown` seconds after the submit
        assert await handle.status() is taskq.TaskStatus.SCHEDULED
        info = await handle.info()
        assert info.run_at is not None
        due = info.run_at.timestamp()
        assert due >= submitted + COUNTDOWN - 0.001

        # And it runs once, no earlier than that, and not long after
        await handle.result(timeout=COUNTDOWN + 10)
    assert len(started) == 1
    assert started[0] >= due
    assert started[0] >= submitted + COUNTDOWN
    assert started[0] - due < 2.0, f"ran {started[0] - due:.3f} s late"


async def test_eta_in_the_past_runs_promptly(backend: Backend) -> None:
    # Given a worker that leads
    app = backend.app()

    @app.task(name="stamp")
    async def stamp() -> str:
        return "ran"

    async with app, app.worker():
        # When a task is submitted with an eta an hour ago
        begun = time.monotonic()
        handle = await stamp.options(eta=datetime.now(UTC) - timedelta(hours=1)).submit()
        # Then it runs at once
        assert await handle.result(timeout=10) == "ran"
        assert time.monotonic() - begun < 2.0


async def test_eta_in_the_future_waits_for_it(backend: Backend) -> None:
    app = backend.app()
    started: list[float] = []

    @app.task(name="stamp")
    async def stamp() -> None:
        started.append(time.time())

    async with app, app.worker():
        eta = datetime.now(UTC) + timedelta(seconds=1)
        handle = await stamp.options(eta=eta).submit()
        assert await handle.status() is taskq.TaskStatus.SCHEDULED
        await handle.result(timeout=10)
    assert started[0] >= eta.timestamp()


async def test_naive_eta_is_refused(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="stamp")
    async def stamp() -> None:
        return None

    async with app:
        with pytest.raises(taskq.ConfigurationError, match="timezone-aware"):
            await stamp.options(eta=datetime.now() + timedelta(seconds=5)).submit()
        assert await rows(app) == 0


async def test_countdown_and_eta_together_are_refused(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="stamp")
    async def stamp() -> None:
        return None

    async with app:
        both = stamp.options(countdown=5, eta=datetime.now(UTC) + timedelta(seconds=5))
        with pytest.raises(taskq.ConfigurationError, match="not both"):
            await both.submit()
        assert await rows(app) == 0


# -- idempotency ------------------------------------------------------------------------------


async def test_same_idempotency_key_twice_gives_one_task_that_runs_once(backend: Backend) -> None:
    # Given a task that counts its runs, and a one-slot worker (so tasks run in submit order)
    app = backend.app()
    runs: list[str] = []

    @app.task(name="charge")
    async def charge(order: int) -> int:
        runs.append(taskq.context().id)
        return order

    @app.task(name="after")
    async def after() -> None:
        return None

    async with app, app.worker(concurrency=1):
        # When it is submitted twice with one idempotency key
        first = await charge.options(idempotency_key="order-7").submit(7)
        second = await charge.options(idempotency_key="order-7").submit(7)

        # Then both submits return the same task
        assert second.id == first.id
        assert await second.result(timeout=10) == 7
        # And it ran once: a task submitted after both has run, so any second copy would have
        await (await after.submit()).result(timeout=10)
        assert await rows(app, key="order-7") == 1
    assert runs == [first.id]


async def test_concurrent_submits_with_one_key_make_one_row_and_one_run(backend: Backend) -> None:
    app = backend.app()
    runs: list[str] = []

    @app.task(name="charge")
    async def charge(order: int) -> int:
        runs.append(taskq.context().id)
        return order

    @app.task(name="after")
    async def after() -> None:
        return None

    async with app, app.worker(concurrency=1):
        # When 20 submits with one key race each other
        handles = await asyncio.gather(
            *(charge.options(idempotency_key="order-8").submit(8) for _ in range(20))
        )
        # Then they all name one task, stored once, run once
        assert len({h.id for h in handles}) == 1
        assert await handles[0].result(timeout=10) == 8
        await (await after.submit()).result(timeout=10)
        assert await rows(app, key="order-8") == 1
    assert runs == [handles[0].id]


# -- periodic ---------------------------------------------------------------------------------


async def test_periodic_every_second_runs_once_per_tick(backend: Backend) -> None:
    # Given a task scheduled every second that records its tick (from its idempotency key)
    app = backend.app()
    runs: list[tuple[datetime, float, str]] = []
    enough = asyncio.Event()

    @app.periodic(every=timedelta(seconds=1), name="every-second")
    async def every_second() -> None:
        ran = time.time()
        this = taskq.context()
        record = await app.store.get_task(this.id)
        assert record is not None and record.idempotency_key is not None
        tick = datetime.fromisoformat(record.idempotency_key.rpartition("every-second:")[2])
        assert record.idempotency_key == tick_key("every-second", tick)
        runs.append((tick, ran, this.id))
        if len(runs) >= 4:
            enough.set()

    # When a worker leads for about 3.5 s (four ticks after the schedule is first seen)
    async with app, app.worker(concurrency=4):
        await asyncio.wait_for(enough.wait(), timeout=10)
    ticks = sorted(tick for tick, _, _ in runs)
    ran = sorted(moment for _, moment, _ in runs)

    # Then no two runs share a tick (or a task), and the ticks are consecutive seconds
    assert len(set(ticks)) == len(ticks), ticks
    assert len({task_id for _, _, task_id in runs}) == len(runs)
    assert ticks == [ticks[0] + timedelta(seconds=i) for i in range(len(ticks))]
    # And each run started in its own second, at or after its tick, about 1 s after the last
    assert all(0 <= moment - tick.timestamp() < 1.0 for tick, moment, _ in runs), runs
    assert len({int(moment) for moment in ran}) == len(ran), ran
    gaps = [later - earlier for earlier, later in itertools.pairwise(ran)]
    assert all(0.6 < gap < 1.4 for gap in gaps), gaps


async def test_tick_a_dead_leader_stored_but_never_published_still_runs(
    production: Backend,
) -> None:
    # Given a schedule whose leader stored the row of tick T, then died before publishing
    # it and before recording T as done (kill -9 between the INSERT and the publish)
    app = production.app()
    ran: list[str] = []

    @app.periodic(every=timedelta(seconds=1), name="every-second")
    async def every_second() -> None:
        ran.append(taskq.context().id)

    async with app:
        tick = datetime.now(UTC).replace(microsecond=0)
        before = tick - timedelta(seconds=1)
        await app.store.record_tick("every-second", before)
        orphan = protocol.Envelope(
            id=str(uuid.uuid4()), task="every-second", queue="default", args=[], kwargs={}
        )
        key = tick_key("every-second", tick)
        await app.store.insert_task(new_task_row(orphan, idempotency_key=key))

        # When a new leader takes over within the misfire grace and catches T up
        async with app.worker():
            # Then T's task runs (its later ticks do too)
            await (await app.get(orphan.id)).result(timeout=5)
    assert orphan.id in ran


# -- locks ------------------------------------------------------------------------------------


async def test_lock_holders_in_one_process_never_overlap(backend: Backend) -> None:
    # Given 10 coroutines that each take the lock 5 times and yield while holding it
    app = backend.app()
    inside = 0
    most_inside = 0
    entries = 0

    async def holder() -> None:
        nonlocal inside, most_inside, entries
        for _ in range(5):
            async with app.lock("shared"):
                inside += 1
                entries += 1
                most_inside = max(most_inside, inside)
                await asyncio.sleep(0)
                await asyncio.sleep(0.001)
                most_inside = max(most_inside, inside)
                inside -= 1
                await asyncio.sleep(0)

    # When they run concurrently
    async with app:
        await asyncio.wait_for(asyncio.gather(*(holder() for _ in range(10))), timeout=60)
    # Then there was never more than one inside, and every round got its turn
    assert (most_inside, entries) == (1, 50)


async def test_lock_timeout_on_a_held_lock_raises_after_the_timeout(backend: Backend) -> None:
    app = backend.app()
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with app.lock("report"):
            held.set()
            await release.wait()

    async with app:
        # Given the lock held by another coroutine
        holder = asyncio.create_task(hold())
        await asyncio.wait_for(held.wait(), timeout=10)
        try:
            # When another asks for it with timeout=0.2
            begun = time.monotonic()
            with pytest.raises(taskq.LockTimeout):
                async with app.lock("report", timeout=0.2):
                    pytest.fail("the lock was granted while held")
            waited = time.monotonic() - begun
            # Then it is refused after about 0.2 s
            assert 0.15 <= waited < 1.0, waited
            # And timeout=0 is refused at once
            begun = time.monotonic()
            with pytest.raises(taskq.LockTimeout):
                async with app.lock("report", timeout=0):
                    pytest.fail("the lock was granted while held")
            assert time.monotonic() - begun < 0.5
        finally:
            release.set()
            await holder
        # And once released it is free again
        async with app.lock("report", timeout=0):
            pass


async def test_lock_is_released_when_the_block_raises(backend: Backend) -> None:
    app = backend.app()
    async with app:
        # Given a block that raises while holding the lock
        with pytest.raises(RuntimeError, match="boom"):
            async with app.lock("nightly"):
                # (held: a second holder is refused)
                with pytest.raises(taskq.LockTimeout):
                    async with app.lock("nightly", timeout=0):
                        pass
                raise RuntimeError("boom")
        # Then the error came through unchanged, and the lock is free at once
        async with app.lock("nightly", timeout=0):
            pass


async def test_lock_waiter_cancelled_while_waiting_leaves_the_lock_usable(backend: Backend) -> None:
    app = backend.app()
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with app.lock("report"):
            held.set()
            await release.wait()

    async with app:
        # Given the lock held, and a waiter (no lock timeout) cancelled by its caller's deadline
        holder = asyncio.create_task(hold())
        await asyncio.wait_for(held.wait(), timeout=10)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3), app.lock("report"):
                pytest.fail("the lock was granted while held")
        assert not holder.done()
        # When the holder releases it
        release.set()
        await holder
        # Then it is free: the cancelled waiter did not end up holding it
        for _ in range(3):
            async with app.lock("report", timeout=0):
                pass
