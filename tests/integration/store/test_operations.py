"""The store's verbs beyond claims and outcomes, on SQLite and PostgreSQL alike: headers,
the outbox insert, reads, cancel, replay, leases, workers, ticks, the leader's sweeps; and
one scenario run on both dialects whose resulting rows must match."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from taskq.exceptions import ConfigurationError
from taskq.status import TaskStatus
from taskq.store import ClaimRequest, NewTask, Outcome, Store, TaskError, TaskRecord

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
HEADERS = {"tenant": "acme", "x-ray": "é\u2028"}


def new_task(state: TaskStatus = TaskStatus.QUEUED, **changes: Any) -> NewTask:
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "name": "tests.task",
        "queue": "default",
        "priority": 0,
        "args": [1],
        "kwargs": {},
        "timeout": None,
        "created_at": CREATED,
        "state": state,
    }
    values.update(changes)
    return NewTask(**values)


async def got(store: Store, task_id: str) -> TaskRecord:
    record = await store.get_task(task_id)
    assert record is not None
    return record


async def claim(store: Store, task_id: str, worker_id: str = "w1") -> int:
    written = await store.write([ClaimRequest(task_id, worker_id, False)], [])
    return written.claimed[task_id].attempt


# -- headers, on every insert and read path ----------------------------------------------------


async def test_headers_are_written_by_every_insert_and_read_by_every_read(
    store: Store, store_url: str
) -> None:
    # Given tasks with headers, inserted one by one, as a batch, if missing, and in a
    # caller's transaction
    one, keyed = new_task(headers=HEADERS), new_task(headers=HEADERS, idempotency_key="k")
    batch = [new_task(TaskStatus.SCHEDULED, headers=HEADERS) for _ in range(2)]
    missing = new_task(headers=HEADERS)
    outboxed = new_task(TaskStatus.SCHEDULED, headers=HEADERS)
    await store.insert_task(one)
    await store.insert_task(keyed)
    await store.insert_tasks(batch, due_now=True)
    await store.insert_task_if_missing(missing)
    engine = create_async_engine(store_url)
    try:
        async with engine.begin() as conn:
            await store.insert_in(conn, outboxed, due_now=True)
    finally:
        await engine.dispose()
    ids = [one.id, keyed.id, *(t.id for t in batch), missing.id, outboxed.id]
    # Then every read gives them back
    assert [(await got(store, task_id)).headers for task_id in ids] == [HEADERS] * len(ids)
    assert all(r.headers == HEADERS for r in (await store.get_tasks(ids)).values())
    assert {r.id for r in await store.find_tasks(limit=10) if r.headers == HEADERS} == set(ids)
    # And a task without headers reads None
    bare = new_task()
    await store.insert_task(bare)
    assert (await got(store, bare.id)).headers is None


# -- the outbox insert -------------------------------------------------------------------------


async def test_an_insert_in_a_rolled_back_transaction_leaves_nothing(
    store: Store, store_url: str
) -> None:
    task = new_task(TaskStatus.SCHEDULED)
    engine = create_async_engine(store_url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(ConfigurationError):
                await store.insert_in(conn, task, due_now=True)  # not in a transaction
            await conn.begin()
            assert await store.insert_in(conn, task, due_now=True) == task.id
            await conn.rollback()
        # (a key taken earlier gives the earlier task's id)
        first, second = (new_task(TaskStatus.SCHEDULED, idempotency_key="same") for _ in "ab")
        async with engine.begin() as conn:
            assert await store.insert_in(conn, first, due_now=False) == first.id
        async with engine.begin() as conn:
            assert await store.insert_in(conn, second, due_now=False) == first.id
        with pytest.raises(ConfigurationError):
            await store.insert_in(object(), task, due_now=True)  # type: ignore[arg-type]
    finally:
        await engine.dispose()
    assert await store.get_task(task.id) is None


# -- reads -------------------------------------------------------------------------------------


async def test_states_counts_and_finds(store: Store) -> None:
    queued, scheduled = new_task(), new_task(TaskStatus.SCHEDULED, queue="other")
    done = new_task(TaskStatus.SUCCEEDED, name="tests.done")
    for task in (queued, scheduled, done):
        await store.insert_task(task)
    missing = str(uuid.uuid4())
    assert await store.get_states([queued.id, done.id, missing]) == {
        queued.id: TaskStatus.QUEUED,
        done.id: TaskStatus.SUCCEEDED,
    }
    assert await store.count_waiting(["default", "other", "none"]) == {
        "default": {"queued": 1},
        "other": {"scheduled": 1},
        "none": {},
    }
    assert [r.id for r in await store.find_tasks(name="tests.done")] == [done.id]
    assert [r.id for r in await store.find_tasks(states=[TaskStatus.SCHEDULED])] == [scheduled.id]
    assert await store.find_tasks(since=datetime.now(UTC)) == []


# -- cancel, replay, leases, expiry --------------------------------------------------------------


async def test_cancel_many_cancels_waiting_marks_running_and_skips_final(store: Store) -> None:
    waiting, running, final = new_task(), new_task(), new_task(TaskStatus.FAILED)
    for task in (waiting, running, final):
        await store.insert_task(task)
    await claim(store, running.id)
    changed = await store.cancel_many([waiting.id, running.id, final.id])
    assert changed == {
        waiting.id: (TaskStatus.CANCELLED, "tests.task", "default"),
        running.id: (TaskStatus.RUNNING, "tests.task", "default"),
    }
    assert (await got(store, running.id)).cancel_requested_at is not None


async def test_replay_resets_only_final_tasks(store: Store) -> None:
    dead, alive = new_task(TaskStatus.FAILED), new_task()
    for task in (dead, alive):
        await store.insert_task(task)
    assert await store.replay([dead.id, alive.id]) == [dead.id]
    record = await got(store, dead.id)
    assert record.state is TaskStatus.SCHEDULED and record.error is None


async def test_a_lease_is_handed_off_extended_released_and_requeued_when_lapsed(
    store: Store,
) -> None:
    kept, lapsed = new_task(), new_task()
    for task in (kept, lapsed):
        await store.insert_task(task)
    for task in (kept, lapsed):
        attempt = await claim(store, task.id)
    past = datetime.now(UTC) - timedelta(minutes=1)
    assert await store.hand_off(kept.id, 1, past)
    assert not await store.hand_off(kept.id, 2, past)  # a stale attempt holds nothing
    assert await store.hand_off(lapsed.id, attempt, past)
    await store.register_worker("w1", role="worker", queues=["default"], concurrency=1)
    # The heartbeat extends the leases of the tasks w1 runs; then one lapses again and is requeued
    until = datetime.now(UTC) + timedelta(1)
    await store.heartbeat("w1", running=[kept.id, lapsed.id], memory=1, leases_until=until)
    assert await store.requeue_lapsed(10) == []
    await store.hand_off(lapsed.id, 1, past)
    assert await store.requeue_lapsed(10) == [lapsed.id]
    assert (await got(store, lapsed.id)).state is TaskStatus.SCHEDULED
    # A release of a leased task ends its lease (the leader publishes it again)
    await store.release(kept.id, 1)
    assert (await got(store, kept.id)).lease_until is not None
    plain = new_task()
    await store.insert_task(plain)
    await claim(store, plain.id)
    await store.release(plain.id, 1)
    record = await got(store, plain.id)
    assert record.state is TaskStatus.QUEUED and record.deliveries == 0


async def test_expiry_by_a_worker_and_by_the_leaders_sweep(store: Store) -> None:
    past = datetime.now(UTC) - timedelta(seconds=5)
    received, overdue, unexpiring = new_task(expires_at=past), new_task(expires_at=past), new_task()
    for task in (received, overdue, unexpiring):
        await store.insert_task(task)
    assert await store.expire_waiting(received.id)
    assert not await store.expire_waiting(unexpiring.id)
    assert await store.expire_overdue(10) == [
        (overdue.id, "tests.task", "default", TaskStatus.EXPIRED)
    ]
    assert (await got(store, overdue.id)).dead_reason == "expired"


async def test_fail_unclaimed_stores_the_error_as_type_message_traceback(store: Store) -> None:
    task = new_task()
    await store.insert_task(task)
    await store.fail_unclaimed(task.id, TaskError("UnknownTask", "no such task"), dead_reason="x")
    record = await got(store, task.id)
    assert record.error == TaskError("UnknownTask", "no such task", "")
    assert record.state is TaskStatus.FAILED and record.dead_reason == "x"


async def test_progress_is_written_for_the_current_attempt_only(store: Store) -> None:
    task = new_task()
    await store.insert_task(task)
    await claim(store, task.id)
    await store.write_progress([(task.id, 1, {"fraction": 0.5, "n": 1})])
    await store.write_progress([(task.id, 9, {"fraction": 0.9, "n": 2})])
    assert (await got(store, task.id)).progress == {"fraction": 0.5, "n": 1}


# -- the leader ----------------------------------------------------------------------------------


async def test_publish_due_publishes_marks_queued_and_says_when_the_next_is_due(
    store: Store,
) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    due, waiting = new_task(TaskStatus.SCHEDULED), new_task(TaskStatus.SCHEDULED, run_at=later)
    await store.insert_tasks([due], due_now=True)
    await store.insert_tasks([waiting], due_now=False)
    published: list[str] = []

    async def publish(records: list[TaskRecord]) -> None:
        published.extend(record.id for record in records)

    rows, next_due = await store.publish_due(10, publish)
    assert [r.id for r in rows] == published == [due.id]
    assert next_due == later
    assert (await got(store, due.id)).state is TaskStatus.QUEUED


async def test_a_failed_publish_leaves_the_rows_scheduled(store: Store) -> None:
    due = new_task(TaskStatus.SCHEDULED)
    await store.insert_tasks([due], due_now=True)

    async def publish(records: list[TaskRecord]) -> None:
        raise RuntimeError("broker down")

    with pytest.raises(RuntimeError):
        await store.publish_due(10, publish)
    assert (await got(store, due.id)).state is TaskStatus.SCHEDULED


async def test_workers_register_beat_lead_stop_and_die(store: Store) -> None:
    for worker_id in ("w1", "w2", "w3"):
        await store.register_worker(worker_id, role="worker", queues=["q"], concurrency=4)
    await store.set_leader("w1", True)
    await store.set_leader("w2", True)
    await store.heartbeat(
        "w2",
        running=[str(uuid.uuid4()) for _ in range(3)],
        memory=42,
        leases_until=datetime.now(UTC),
    )
    await store.stop_worker("w3")
    workers = {w.id: w for w in await store.list_workers(include_stopped=True)}
    assert [workers[w].leader for w in ("w1", "w2")] == [False, True]
    assert (workers["w2"].running, workers["w2"].memory) == (3, 42)
    assert workers["w3"].state == "stopped" and workers["w3"].queues == ["q"]
    assert {w.id for w in await store.list_workers(include_stopped=False)} == {"w1", "w2"}
    assert sorted(await store.mark_dead(timedelta(0))) == ["w1", "w2"]
    # (w4 and w5 share host and pid, as processes of two containers named alike can)
    await store.register_worker("w4", role="scheduler", queues=[], concurrency=0)
    await store.register_worker("w5", role="worker", queues=["q"], concurrency=1)
    assert await store.mark_process_dead("w4") == ["w4"]
    workers = {w.id: w for w in await store.list_workers(include_stopped=False)}
    assert (workers["w4"].state, workers["w5"].state) == ("dead", "running")
    assert (workers["w4"].host, workers["w4"].pid) == (socket.gethostname(), os.getpid())
    assert (workers["w5"].host, workers["w5"].pid) == (socket.gethostname(), os.getpid())


async def test_ticks_only_move_forward(store: Store) -> None:
    assert await store.last_ticks() == {}
    await store.record_tick("cron", CREATED)
    await store.record_tick("cron", CREATED - timedelta(hours=1))
    assert await store.last_ticks() == {"cron": CREATED}


async def test_ping_and_locks(store: Store) -> None:
    assert await store.ping()
    async with store.lock("one", wait=1.0), store.due_soon() as wake:
        assert not wake.is_set()


# -- the same scenario on both dialects ---------------------------------------------------------


async def _scenario(url: str) -> list[dict[str, Any]]:
    """Insert, claim, finish, retry, cancel, report progress, fail unclaimed, replay; →
    the rows, normalised (ids by position, timestamps as whether they are set)."""
    store = Store(url)
    await store.open()
    try:
        tasks = [
            new_task(args=[b"\x00", 1e16], kwargs={"$k": {"n": None}}, headers=HEADERS),
            new_task(priority=3, max_retries=2, headers={"traceparent": "00-x"}),
            new_task(),
            new_task(timeout=1.5),
            new_task(),
            new_task(),
        ]
        for task in tasks:
            await store.insert_task(task)
        ok, retried, cancelled, progressing, unclaimed, replayed = (t.id for t in tasks)
        claims = [ClaimRequest(t, "w1", False) for t in (ok, retried, progressing, replayed)]
        await store.write(claims, [])
        await store.write_progress([(progressing, 1, {"fraction": 0.25, "message": "¼"})])
        error = TaskError("ValueError", "boom", "Traceback ...")
        started = datetime.now(UTC)
        await store.write(
            [],
            [
                Outcome(task_id=ok, attempt=1, state=TaskStatus.SUCCEEDED, result={"v": [1, b"2"]}),
                Outcome(
                    task_id=retried,
                    attempt=1,
                    state=TaskStatus.SCHEDULED,
                    error=error,
                    retry_at=started + timedelta(hours=1),
                    worker_id="w1",
                    started_at=started,
                ),
                Outcome(
                    task_id=replayed,
                    attempt=1,
                    state=TaskStatus.FAILED,
                    error=error,
                    dead_reason="failed",
                ),
            ],
        )
        await store.cancel_many([cancelled])
        await store.fail_unclaimed(unclaimed, TaskError("UnknownTask", "?"), dead_reason="unknown")
        await store.replay([replayed])
        ids = [t.id for t in tasks]
        records = await store.get_tasks(ids)
        attempts = [await store.list_attempts(task_id) for task_id in ids]
    finally:
        await store.close()
    position = {task_id: index for index, task_id in enumerate(ids)}
    rows = []
    for task_id, logged in zip(ids, attempts, strict=True):
        row: dict[str, Any] = {}
        for field in TaskRecord.__slots__:
            value = getattr(records[task_id], field)
            if isinstance(value, datetime):
                value = "set"
            row[field] = position[value] if field == "id" else value
        row["attempts_log"] = [
            {k: ("set" if isinstance(v, datetime) else v) for k, v in a.items() if k != "task_id"}
            for a in logged
        ]
        rows.append(row)
    return rows


async def test_one_scenario_leaves_the_same_rows_on_sqlite_and_postgresql(
    sqlite_url: str, postgres_url: str
) -> None:
    on_sqlite = await _scenario(sqlite_url)
    on_postgres = await _scenario(postgres_url)
    assert on_sqlite == on_postgres
    # (and the scenario did what it says)
    states = [row["state"] for row in on_sqlite]
    assert states == [
        TaskStatus.SUCCEEDED,
        TaskStatus.SCHEDULED,
        TaskStatus.CANCELLED,
        TaskStatus.RUNNING,
        TaskStatus.FAILED,
        TaskStatus.SCHEDULED,
    ]
    assert on_sqlite[0]["headers"] == HEADERS and on_sqlite[0]["args"] == [b"\x00", 1e16]
    assert on_sqlite[3]["progress"] == {"fraction": 0.25, "message": "¼"}
