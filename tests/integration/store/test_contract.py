"""The store's contract on SQLite and PostgreSQL: round trips, fenced writes, claims, the writer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from taskq.status import TaskStatus
from taskq.store import (
    Claimed,
    ClaimRequest,
    Held,
    NewTask,
    Outcome,
    ProgressReport,
    Store,
    TaskError,
    TaskRecord,
    Writer,
    Written,
)

CREATED = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
ERROR = TaskError("ValueError", "boom", "Traceback ...")


def new_task(state: TaskStatus = TaskStatus.QUEUED, **changes: object) -> NewTask:
    values: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "name": "tests.task",
        "queue": "default",
        "priority": 0,
        "args": [],
        "kwargs": {},
        "timeout": None,
        "created_at": CREATED,
        "state": state,
    }
    values.update(changes)
    return NewTask(**values)  # type: ignore[arg-type]


async def insert(store: Store, *tasks: NewTask) -> list[str]:
    for task in tasks:
        await store.insert_task(task)
    return [task.id for task in tasks]


async def claim(
    store: Store, ids: Sequence[str], worker_id: str = "w1", *, redelivered: bool = False
) -> dict[str, int]:
    written = await store.write([ClaimRequest(i, worker_id, redelivered) for i in ids], [])
    return {task_id: claim.attempt for task_id, claim in written.claimed.items()}


async def record(store: Store, *outcomes: Outcome) -> None:
    await store.write([], outcomes)


async def state_of(store: Store, task_id: str) -> TaskRecord:
    record = await store.get_task(task_id)
    assert record is not None
    return record


# -- insert and read -----------------------------------------------------------------------


async def test_insert_then_get_round_trips_values(store: Store) -> None:
    # Given a task whose arguments hold bytes, non-finite floats and nested $-keyed dicts
    task = new_task(
        name="billing.charge",
        queue="billing",
        priority=7,
        args=[b"\x00\xff", [1, [2.5, None]], {"$bytes": "not a tag"}, "é"],
        kwargs={"blob": {"inner": [b"x", float("inf")]}, "flag": True, "big": 2**62},
        timeout=2.5,
    )
    # When it is inserted and read back
    await insert(store, task)
    got = await state_of(store, task.id)
    # Then every value comes back as it went in, with the row's initial state
    assert got.id == task.id
    assert (got.name, got.queue, got.priority, got.timeout) == ("billing.charge", "billing", 7, 2.5)
    assert got.args == list(task.args)
    assert got.kwargs == task.kwargs
    assert got.state is TaskStatus.QUEUED
    assert got.attempts == 0
    assert got.result is None and got.error is None and got.worker_id is None
    assert got.started_at is None and got.finished_at is None


async def test_timestamps_come_back_aware_and_in_utc(store: Store) -> None:
    task = new_task()
    await insert(store, task)
    got = await state_of(store, task.id)
    assert got.created_at == CREATED
    assert got.created_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "value",
    ["a\x00b", 1e16, -0.0, 2.0, 0.1, 2**63 - 1, -(2**63), "\u2028", {"": ""}],
    ids=[
        "NUL in str",
        "1e16",
        "negative zero",
        "integral float",
        "0.1",
        "max int64",
        "min int64",
        "line separator",
        "empty key",
    ],
)
async def test_scalar_values_round_trip_with_their_type(store: Store, value: object) -> None:
    # Values that JSON text or jsonb could change: NUL (jsonb refuses it), floats that
    # look integral (jsonb's numeric comes back as int), -0.0, int64 bounds
    task = new_task(args=[value], kwargs={"v": value})
    await insert(store, task)
    got = await state_of(store, task.id)
    assert got.args == [value] and got.kwargs == {"v": value}
    assert type(got.args[0]) is type(value)
    assert repr(got.args[0]) == repr(value)


async def test_get_of_a_missing_task_is_none(store: Store) -> None:
    assert await store.get_task(str(uuid.uuid4())) is None


async def test_insert_if_missing_keeps_the_existing_row(store: Store) -> None:
    task = new_task(kwargs={"v": 1})
    await insert(store, task)
    await store.insert_task_if_missing(new_task(id=task.id, kwargs={"v": 2}))
    assert (await state_of(store, task.id)).kwargs == {"v": 1}


# -- claim ---------------------------------------------------------------------------------


async def test_claim_marks_running_and_counts_the_attempt(store: Store) -> None:
    # Given a queued task
    task_id, other = await insert(store, new_task(), new_task())
    # When a worker claims it
    before = datetime.now(UTC)
    claimed = await claim(store, [task_id], "worker-1")
    # Then it is running, on attempt 1, owned by that worker, with a start time
    assert claimed == {task_id: 1}
    got = await state_of(store, task_id)
    assert got.state is TaskStatus.RUNNING
    assert got.attempts == 1
    assert got.worker_id == "worker-1"
    assert got.started_at is not None and got.started_at >= before - timedelta(seconds=5)
    assert got.started_at.utcoffset() == timedelta(0)
    # And a task not named is untouched
    assert (await state_of(store, other)).state is TaskStatus.QUEUED


async def test_claim_of_a_running_task_counts_another_attempt(store: Store) -> None:
    # A redelivery after a worker died claims the task again.
    (task_id,) = await insert(store, new_task())
    assert await claim(store, [task_id], "w1") == {task_id: 1}
    assert await claim(store, [task_id], "w2", redelivered=True) == {task_id: 2}
    got = await state_of(store, task_id)
    assert (got.attempts, got.worker_id) == (2, "w2")


async def test_first_delivery_of_a_running_task_is_a_duplicate(store: Store) -> None:
    # A second copy from a retried publish (not a redelivery) must not run the task twice.
    (task_id,) = await insert(store, new_task())
    assert await claim(store, [task_id], "w1") == {task_id: 1}
    assert await claim(store, [task_id], "w2", redelivered=False) == {}
    got = await state_of(store, task_id)
    assert (got.attempts, got.worker_id) == (1, "w1")


async def test_claim_returns_only_claimable_tasks(store: Store) -> None:
    # Given a queued task, a finished one and an id with no row
    queued, done = await insert(store, new_task(), new_task())
    await claim(store, [done])
    await record(store, Outcome(task_id=done, attempt=1, state=TaskStatus.SUCCEEDED, result=1))
    missing = str(uuid.uuid4())
    # When all three are claimed together
    claimed = await claim(store, [queued, done, missing])
    # Then only the queued one is, and the finished one is unchanged
    assert claimed == {queued: 1}
    finished = await state_of(store, done)
    assert finished.state is TaskStatus.SUCCEEDED
    assert finished.attempts == 1
    assert finished.result == 1
    assert await store.get_task(missing) is None


@pytest.mark.parametrize(
    "state",
    [TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED],
)
async def test_final_row_is_never_claimed(store: Store, state: TaskStatus) -> None:
    (task_id,) = await insert(store, new_task(state))
    assert await claim(store, [task_id]) == {}
    got = await state_of(store, task_id)
    assert (got.state, got.attempts) == (state, 0)


# -- outcomes ------------------------------------------------------------------------------


async def test_outcome_of_the_current_attempt_is_recorded(store: Store) -> None:
    (task_id,) = await insert(store, new_task())
    await claim(store, [task_id])
    result = {"total": 6, "raw": b"\x01", "$ref": None}
    await record(
        store, Outcome(task_id=task_id, attempt=1, state=TaskStatus.SUCCEEDED, result=result)
    )
    got = await state_of(store, task_id)
    assert got.state is TaskStatus.SUCCEEDED
    assert got.result == result
    assert got.error is None
    assert got.finished_at is not None and got.finished_at.utcoffset() == timedelta(0)


async def test_outcome_of_a_stale_attempt_does_not_overwrite(store: Store) -> None:
    # Given a task on its second attempt (the first worker was presumed dead)
    (task_id,) = await insert(store, new_task())
    await claim(store, [task_id], "w1")
    await claim(store, [task_id], "w2", redelivered=True)
    # When the first attempt's outcome arrives late
    await record(store, Outcome(task_id=task_id, attempt=1, state=TaskStatus.FAILED, error=ERROR))
    # Then the row still belongs to the second attempt
    got = await state_of(store, task_id)
    assert (got.state, got.attempts, got.error) == (TaskStatus.RUNNING, 2, None)
    # And the second attempt's outcome is recorded
    await record(store, Outcome(task_id=task_id, attempt=2, state=TaskStatus.SUCCEEDED, result=2))
    got = await state_of(store, task_id)
    assert (got.state, got.result) == (TaskStatus.SUCCEEDED, 2)


async def test_final_state_is_never_moved_back(store: Store) -> None:
    # Given a task that succeeded on attempt 1
    (task_id,) = await insert(store, new_task())
    await claim(store, [task_id])
    await record(
        store, Outcome(task_id=task_id, attempt=1, state=TaskStatus.SUCCEEDED, result="ok")
    )
    finished_at = (await state_of(store, task_id)).finished_at
    # When a second outcome for the same attempt arrives (a duplicate delivery's run)
    await record(store, Outcome(task_id=task_id, attempt=1, state=TaskStatus.FAILED, error=ERROR))
    # Then the success stands, untouched
    got = await state_of(store, task_id)
    assert got.state is TaskStatus.SUCCEEDED
    assert got.result == "ok"
    assert got.error is None
    assert got.finished_at == finished_at


async def test_outcomes_for_several_tasks_in_one_call(store: Store) -> None:
    first, second = await insert(store, new_task(), new_task())
    await claim(store, [first, second])
    await record(
        store,
        Outcome(task_id=first, attempt=1, state=TaskStatus.SUCCEEDED, result=[1]),
        Outcome(task_id=second, attempt=1, state=TaskStatus.FAILED, error=ERROR),
    )
    assert (await state_of(store, first)).result == [1]
    failed = await state_of(store, second)
    assert (failed.state, failed.error) == (TaskStatus.FAILED, ERROR)


# -- fail_unclaimed ------------------------------------------------------------------------


async def test_fail_unclaimed_only_queued_leaves_a_running_task_alone(store: Store) -> None:
    # Given a running task and a queued one
    running, queued = await insert(store, new_task(), new_task())
    await claim(store, [running])
    # When both are failed with only_queued=True (a publish that was not confirmed)
    await store.fail_unclaimed(running, ERROR, only_queued=True)
    await store.fail_unclaimed(queued, ERROR, only_queued=True)
    # Then the running one keeps running, and the queued one is failed with the error
    still = await state_of(store, running)
    assert (still.state, still.error) == (TaskStatus.RUNNING, None)
    failed = await state_of(store, queued)
    assert (failed.state, failed.error) == (TaskStatus.FAILED, ERROR)
    assert failed.finished_at is not None


async def test_fail_unclaimed_fails_a_running_task_by_default(store: Store) -> None:
    (task_id,) = await insert(store, new_task())
    await claim(store, [task_id])
    await store.fail_unclaimed(task_id, ERROR)
    assert (await state_of(store, task_id)).state is TaskStatus.FAILED


async def test_fail_unclaimed_never_touches_a_final_task(store: Store) -> None:
    (task_id,) = await insert(store, new_task())
    await claim(store, [task_id])
    await record(store, Outcome(task_id=task_id, attempt=1, state=TaskStatus.SUCCEEDED, result=1))
    await store.fail_unclaimed(task_id, ERROR)
    got = await state_of(store, task_id)
    assert (got.state, got.error, got.result) == (TaskStatus.SUCCEEDED, None, 1)


# -- writer --------------------------------------------------------------------------------


class CountingBatches:
    """The store's own `Batches` for a Writer, counting how many flushes it writes."""

    def __init__(self, store: Store) -> None:
        self.batches = store.writer(flush_interval=0)._batches
        self.calls = 0

    async def write(self, claims: Sequence[ClaimRequest], outcomes: Sequence[Outcome]) -> Written:
        self.calls += 1
        return await self.batches.write(claims, outcomes)

    async def write_progress(self, reports: Sequence[ProgressReport]) -> None:
        await self.batches.write_progress(reports)

    async def close(self) -> None:
        await self.batches.close()


async def test_writer_batches_concurrent_claims(store: Store) -> None:
    # Given 50 queued tasks and a running writer
    ids = await insert(store, *(new_task() for _ in range(50)))
    transactions = CountingBatches(store)
    writer = Writer(transactions, flush_interval=0.005)
    running = asyncio.create_task(writer.run(), name="writer")
    try:
        # When 50 executors claim at once
        async with asyncio.timeout(30):
            attempts = await asyncio.gather(
                *(_attempt_of(writer.claim(task_id, "w1", redelivered=False)) for task_id in ids)
            )
    finally:
        writer.close()
        async with asyncio.timeout(30):
            await running
    # Then each gets attempt 1, in far fewer transactions than claims
    assert attempts == [1] * 50
    assert 1 <= transactions.calls <= 5
    states = {(await state_of(store, task_id)).state for task_id in ids}
    assert states == {TaskStatus.RUNNING}


class SlowBatches(CountingBatches):
    """Batches whose writes wait until `release` is set, announcing each on `writing`."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.writing = asyncio.Event()
        self.release = asyncio.Event()

    async def write(self, claims: Sequence[ClaimRequest], outcomes: Sequence[Outcome]) -> Written:
        self.writing.set()
        await self.release.wait()
        return await super().write(claims, outcomes)


async def test_a_cancelled_outcome_waiter_returns_only_once_its_outcome_is_durable(
    store: Store,
) -> None:
    # Given a running task and a writer whose flush is held back
    (task_id,) = await insert(store, new_task())
    await claim(store, [task_id])
    batches = SlowBatches(store)
    writer = Writer(batches, flush_interval=0)
    flushing = asyncio.create_task(writer.run(), name="writer")
    outcome = Outcome(task_id=task_id, attempt=1, state=TaskStatus.SUCCEEDED, result="kept")

    async def store_outcome() -> bool:
        return await writer.record(outcome)

    waiter = asyncio.create_task(store_outcome())
    try:
        async with asyncio.timeout(30):
            await batches.writing.wait()
            # When the waiter is cancelled while its outcome is being written
            waiter.cancel()
            await asyncio.sleep(0)
            # Then it is still waiting: its write is not durable yet
            assert not waiter.done()
            batches.release.set()
            # And once the write is durable it ends cancelled, with the outcome stored
            with pytest.raises(asyncio.CancelledError):
                await waiter
        assert (await state_of(store, task_id)).state is TaskStatus.SUCCEEDED
    finally:
        batches.release.set()
        writer.close()
        async with asyncio.timeout(30):
            await flushing


async def test_writer_claim_of_a_final_task_is_none(store: Store) -> None:
    (task_id,) = await insert(store, new_task(TaskStatus.SUCCEEDED))
    writer = store.writer(flush_interval=0.001)
    running = asyncio.create_task(writer.run(), name="writer")
    try:
        async with asyncio.timeout(30):
            assert await writer.claim(task_id, "w1", redelivered=False) is None
    finally:
        writer.close()
        async with asyncio.timeout(30):
            await running


async def test_a_claim_is_fenced_by_task_name_and_queue(store: Store) -> None:
    # Given three queued tasks (new_task: name "tests.task", queue "default")
    wrong_name, wrong_queue, right = await insert(store, new_task(), new_task(), new_task())
    writer = store.writer(flush_interval=0.001)
    running = asyncio.create_task(writer.run(), name="writer")
    try:
        async with asyncio.timeout(30):
            # When messages claim them naming another task, another queue, and the right ones
            assert (
                await writer.claim(
                    wrong_name, "w1", redelivered=False, name="other.task", queue="default"
                )
                is None
            )
            assert (
                await writer.claim(
                    wrong_queue, "w1", redelivered=False, name="tests.task", queue="other"
                )
                is None
            )
            taken = await writer.claim(
                right, "w1", redelivered=False, name="tests.task", queue="default"
            )
    finally:
        writer.close()
        async with asyncio.timeout(30):
            await running
    # Then only the last is claimed; the others stay queued with no attempt counted
    assert isinstance(taken, Claimed) and taken.attempt == 1
    for task_id in (wrong_name, wrong_queue):
        record = await state_of(store, task_id)
        assert (record.state, record.attempts) == (TaskStatus.QUEUED, 0)


async def test_writer_close_flushes_pending_items_before_run_returns(store: Store) -> None:
    # Given claims and an outcome queued on a writer that has not flushed yet
    # (more than one batch of them, so close() must flush several times)
    done, *ids = await insert(store, *(new_task() for _ in range(26)))
    await claim(store, [done])
    transactions = CountingBatches(store)
    writer = Writer(transactions, flush_interval=0.005, max_batch=10)
    running = asyncio.create_task(writer.run(), name="writer")
    claims = [
        asyncio.create_task(_attempt_of(writer.claim(task_id, "w1", redelivered=False)))
        for task_id in ids
    ]
    outcome = Outcome(task_id=done, attempt=1, state=TaskStatus.SUCCEEDED, result="flushed")
    recording: asyncio.Future[bool] = writer.record(outcome)
    # When close() is called right after they were queued (call_soon runs it after the
    # tasks above have taken their first step, i.e. queued their items)
    asyncio.get_running_loop().call_soon(writer.close)
    async with asyncio.timeout(30):
        await running
    # Then by the time run() returned, every item was committed
    assert transactions.calls >= 3
    assert all(task.done() for task in claims) and recording.result() is True
    assert [task.result() for task in claims] == [1] * 25
    assert {(await state_of(store, task_id)).state for task_id in ids} == {TaskStatus.RUNNING}
    assert (await state_of(store, done)).result == "flushed"


async def _attempt_of(claiming: Awaitable[Claimed | Held | None]) -> int | None:
    claimed = await claiming
    return claimed.attempt if isinstance(claimed, Claimed) else None


async def test_a_batch_is_inserted_due_by_the_databases_clock_or_at_its_own_time(
    store: Store,
) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    due = [new_task(TaskStatus.SCHEDULED) for _ in range(3)]
    timed = [new_task(TaskStatus.SCHEDULED, run_at=later) for _ in range(2)]

    before = datetime.now(UTC) - timedelta(seconds=5)
    await store.insert_tasks(due, due_now=True)
    await store.insert_tasks(timed, due_now=False)

    for task in due:
        record = await store.get_task(task.id)
        assert record is not None and record.state is TaskStatus.SCHEDULED
        assert record.run_at is not None and before <= record.run_at <= datetime.now(UTC)
    for task in timed:
        record = await store.get_task(task.id)
        assert record is not None and record.run_at == later


async def test_only_scheduled_rows_are_locked_for_publishing_and_marked_queued(
    store: Store,
) -> None:
    scheduled = [new_task(TaskStatus.SCHEDULED) for _ in range(3)]
    running = new_task(TaskStatus.RUNNING)
    ids = await insert(store, *scheduled, running)

    published: list[str] = []

    async def publish(locked: list[str]) -> None:
        published.extend(locked)

    locked = await store.publish_scheduled(ids, publish)

    assert sorted(locked) == sorted(published) == sorted(task.id for task in scheduled)
    states = await store.get_states(ids)
    assert states == {
        **{task.id: TaskStatus.QUEUED for task in scheduled},
        running.id: TaskStatus.RUNNING,
    }
