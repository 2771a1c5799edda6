"""A redelivery takes a running task over only from a worker that is gone; an outcome of an
attempt that was taken over is not stored, and says so (issue 17, defects 3 and 4).

On PostgreSQL a worker lives while its writer's session (named by its id) is open and its
heartbeat is fresh; on SQLite, while its heartbeat is fresh.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from taskq import protocol
from taskq.status import TaskStatus
from taskq.store import SILENT_FOR, Claimed, NewTask, Outcome, Store, Writer
from taskq.worker import claims

CREATED = datetime(2026, 1, 2, tzinfo=UTC)


def envelope() -> protocol.Envelope:
    return protocol.Envelope(
        id=str(uuid.uuid4()), task="tests.task", queue="default", args=[], kwargs={}
    )


def row_of(message: protocol.Envelope) -> NewTask:
    return NewTask(
        id=message.id,
        name=message.task,
        queue=message.queue,
        priority=0,
        args=[],
        kwargs={},
        timeout=None,
        created_at=CREATED,
    )


class Worker:
    """A worker as the store sees it: a registered row and a writer of its own."""

    def __init__(self, store: Store, worker_id: str) -> None:
        self.store, self.id = store, worker_id
        self.writer: Writer = store.writer(flush_interval=0, worker_id=worker_id)
        self._flushing: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Worker:
        await self.store.register_worker(self.id, role="worker", queues=["default"], concurrency=1)
        self._flushing = asyncio.create_task(self.writer.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()  # (its session closes with it: the worker is gone)
        assert self._flushing is not None
        await self._flushing

    async def claim(self, message: protocol.Envelope, *, redelivered: bool) -> claims.Claim:
        return await claims.claim(
            self.writer,
            self.store,
            message,
            self.id,
            redelivered=redelivered,
            lease_duration=60,
        )


@pytest.mark.parametrize("redelivered", [False, True])
async def test_a_live_workers_running_task_is_never_claimed_twice(
    store: Store, redelivered: bool
) -> None:
    # Given a task that worker w1 runs (w1 beats and, on PostgreSQL, has its session open)
    message = envelope()
    await store.insert_task(row_of(message))
    async with Worker(store, "w1") as w1, Worker(store, "w2") as w2:
        first = await w1.claim(message, redelivered=False)
        assert isinstance(first, Claimed) and first.attempt == 1
        # When its message comes to w2 (a copy, or a redelivery after w1's channel closed)
        second = await w2.claim(message, redelivered=redelivered)
        row = await store.get_task(message.id)
    # Then w2 does not run it: a redelivery leaves it kept by a lease, a copy is a duplicate
    assert row is not None and (row.state, row.attempts, row.worker_id) == (
        TaskStatus.RUNNING,
        1,
        "w1",
    )
    if redelivered:
        assert isinstance(second, claims.Leased)
        assert row.lease_until is not None
    else:
        assert isinstance(second, claims.Duplicate)
        assert row.lease_until is None


async def test_a_redelivery_takes_over_from_a_worker_that_is_gone(store: Store) -> None:
    # Given a task whose worker w1 ended without an outcome (its session closed; on SQLite,
    # where no session tells, its heartbeat is older than SILENT_FOR)
    message = envelope()
    await store.insert_task(row_of(message))
    async with Worker(store, "w1") as w1:
        assert isinstance(await w1.claim(message, redelivered=False), Claimed)
    if store.dialect == "sqlite":
        await store.mark_dead(timedelta(0))
    else:
        assert SILENT_FOR > timedelta(seconds=5)  # (w1's heartbeat is fresh: the session tells)
    # When its message is redelivered to w2
    async with Worker(store, "w2") as w2:
        taken = await w2.claim(message, redelivered=True)
    # Then w2 runs it as attempt 2
    assert isinstance(taken, Claimed) and taken.attempt == 2 and taken.deliveries == 2


async def test_an_outcome_of_an_attempt_taken_over_is_not_stored_and_says_so(
    store: Store,
) -> None:
    # Given attempt 1 by w1, taken over by w2's attempt 2 (w1 was taken for dead)
    message = envelope()
    await store.insert_task(row_of(message))
    async with Worker(store, "w1") as w1:
        await w1.claim(message, redelivered=False)
    await store.mark_dead(timedelta(0))
    async with Worker(store, "w2") as w2, Worker(store, "w1b") as late:
        assert isinstance(await w2.claim(message, redelivered=True), Claimed)
        # When attempt 1's outcome comes after all
        stale = Outcome(
            task_id=message.id, attempt=1, state=TaskStatus.SUCCEEDED, result=1, worker_id="w1"
        )
        stored = await late.writer.record(stale)
        # And attempt 2's
        fresh = Outcome(task_id=message.id, attempt=2, state=TaskStatus.FAILED, worker_id="w2")
        stored_fresh = await w2.writer.record(fresh)
    # Then only attempt 2's is the task's, and the log says attempt 1 was superseded
    assert (stored, stored_fresh) == (False, True)
    row = await store.get_task(message.id)
    assert row is not None and (row.state, row.result) == (TaskStatus.FAILED, None)
    logged = [(a["attempt"], a["state"]) for a in await store.list_attempts(message.id)]
    assert logged == [(1, "superseded"), (2, "failed")]


async def test_the_heartbeat_extends_only_the_leases_of_tasks_the_worker_runs(
    store: Store,
) -> None:
    # Given two tasks of w1 kept by leases that have lapsed
    kept, dropped = envelope(), envelope()
    async with Worker(store, "w1") as w1:
        for message in (kept, dropped):
            await store.insert_task(row_of(message))
            await w1.claim(message, redelivered=False)
            past = datetime.now(UTC) - timedelta(minutes=1)
            assert await store.hand_off(message.id, 1, past)
        # When w1 beats, running only the first
        until = datetime.now(UTC) + timedelta(minutes=1)
        await store.heartbeat("w1", running=[kept.id], memory=0, leases_until=until)
        # Then only the other lapses, and is requeued
        assert await store.requeue_lapsed(10) == [dropped.id]


async def test_a_dead_workers_running_task_gets_a_lease_that_nobody_renews(
    store: Store,
) -> None:
    # Given a task running on w1, whose worker then stops beating
    message = envelope()
    await store.insert_task(row_of(message))
    async with Worker(store, "w1") as w1:
        await w1.claim(message, redelivered=False)
    # When the leader marks w1 dead
    assert await store.mark_dead(timedelta(0)) == ["w1"]
    # Then the row is kept by a lease that lapses within SILENT_FOR (then the leader requeues
    # it, should no redelivery of its message come)
    row = await store.get_task(message.id)
    assert row is not None and row.lease_until is not None
    assert row.lease_until <= datetime.now(UTC) + SILENT_FOR
    # And a redelivery still takes it over at once, ending that lease
    async with Worker(store, "w2") as w2:
        taken = await w2.claim(message, redelivered=True)
    assert isinstance(taken, Claimed) and taken.attempt == 2
    row = await store.get_task(message.id)
    assert row is not None and row.lease_until is None
