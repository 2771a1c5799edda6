"""PostgreSQL only: stale pooled connections are replaced, and a writer flush is one statement
that does what the SQLAlchemy statements do on SQLite."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from taskq.status import TaskStatus
from taskq.store import (
    Claimed,
    ClaimRequest,
    NewTask,
    Outcome,
    Store,
    TaskError,
    TaskRecord,
    engine,
    pg,
)

CREATED = datetime(2026, 1, 2, tzinfo=UTC)


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[Store]:
    opened = Store(postgres_url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def new_task() -> NewTask:
    return NewTask(
        id=str(uuid.uuid4()),
        name="tests.task",
        queue="default",
        priority=0,
        args=[],
        kwargs={},
        timeout=None,
        created_at=CREATED,
    )


async def row_of(store: Store, task: NewTask) -> TaskRecord:
    record = await store.get_task(task.id)
    assert record is not None
    return record


async def _terminate_taskq_backends(postgres_url: str) -> int:
    database = postgres_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        killed: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND application_name = 'taskq' AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await admin.close()
    return killed


async def test_a_pooled_connection_the_server_dropped_is_replaced_without_an_error(
    store: Store, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a store whose pooled connection the server has since terminated
    task = new_task()
    await store.insert_task(task)
    assert await _terminate_taskq_backends(postgres_url) >= 1
    # When it is used again after the idle threshold (no ping before that: set to 0 here)
    monkeypatch.setattr(engine, "PING_AFTER_IDLE", 0.0)
    record = await store.get_task(task.id)
    # Then the read succeeds on a fresh connection
    assert record is not None and record.id == task.id


async def test_a_flush_is_one_statement_that_claims_records_and_logs_attempts(
    store: Store, postgres_url: str
) -> None:
    # Given a running task, a queued one, one already final, and one to retry
    done, queued, final, retry = (new_task() for _ in range(4))
    for task in (done, queued, final, retry):
        await store.insert_task(task)
    writer = store.writer(flush_interval=0)
    batches = writer._batches
    written = await batches.write(
        [ClaimRequest(t.id, "w1", False) for t in (done, final, retry)], []
    )
    assert sorted(written.claimed) == sorted([done.id, final.id, retry.id])
    await batches.write([], [Outcome(task_id=final.id, attempt=1, state=TaskStatus.SUCCEEDED)])
    # When one flush claims the queued task (and the final one again) and records an
    # outcome with a result and a retry
    retry_at = datetime.now(UTC) + timedelta(hours=1)
    started = datetime.now(UTC)
    error = TaskError("ValueError", "boom")
    written = await batches.write(
        [ClaimRequest(queued.id, "w2", False), ClaimRequest(final.id, "w2", True)],
        [
            Outcome(
                task_id=done.id,
                attempt=1,
                state=TaskStatus.SUCCEEDED,
                result={"bytes": b"\x00", "n": 1},
                worker_id="w1",
                started_at=started,
            ),
            Outcome(
                task_id=retry.id,
                attempt=1,
                state=TaskStatus.SCHEDULED,
                error=error,
                retry_at=retry_at,
                worker_id="w1",
                started_at=started,
            ),
        ],
    )
    await batches.close()
    # Then only the queued task is claimed, by w2, as attempt 1, and both outcomes stored
    claims = written.claimed
    assert written.stale == frozenset()
    assert list(claims) == [queued.id]
    assert claims[queued.id].attempt == 1 and not claims[queued.id].cancel_requested
    running, succeeded, retried = [await row_of(store, t) for t in (queued, done, retry)]
    assert running.state is TaskStatus.RUNNING and running.worker_id == "w2"
    # And the outcome's result round-trips through the codec
    assert succeeded.state is TaskStatus.SUCCEEDED
    assert succeeded.result == {"bytes": b"\x00", "n": 1}
    # And the retry is scheduled with its error, one retry used
    assert retried.state is TaskStatus.SCHEDULED
    assert retried.error == error and retried.retries == 1 and retried.run_at == retry_at
    # And both attempts are logged
    admin = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        logged = await admin.fetch(
            "SELECT task_id::text, state, worker_id FROM taskq_attempts ORDER BY state"
        )
    finally:
        await admin.close()
    assert {tuple(row) for row in logged} == {
        (retry.id, "retrying", "w1"),
        (final.id, "succeeded", None),
        (done.id, "succeeded", "w1"),
    }


async def test_a_flush_of_many_claims_takes_each_once(store: Store) -> None:
    # Given 300 queued tasks, two of them delivered twice
    tasks = [new_task() for _ in range(300)]
    for task in tasks:
        await store.insert_task(task)
    requests = [ClaimRequest(t.id, "w1", False) for t in tasks]
    requests += requests[:2]
    writer = store.writer(flush_interval=0)
    running = asyncio.create_task(writer.run())
    try:
        # When one writer claims them all at once
        async with asyncio.timeout(30):
            claims = await asyncio.gather(
                *(writer.claim(r.task_id, r.worker_id, redelivered=False) for r in requests)
            )
    finally:
        writer.close()
        await running
    # Then every task is claimed exactly once, as attempt 1 (the extra copies get None)
    attempts = [c.attempt for c in claims if isinstance(c, Claimed)]
    assert attempts == [1] * 300
    assert claims.count(None) == 2


@pytest.mark.parametrize(
    "parts", [(True, False, False), (False, True, False), (False, False, True), (True, True, True)]
)
async def test_each_flush_statement_finds_rows_by_primary_key_whatever_the_statistics(
    postgres_url: str, parts: tuple[bool, bool, bool]
) -> None:
    # Given a table whose statistics say no task is queued or running (all 'succeeded')
    admin = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await admin.execute(
            "INSERT INTO taskq_tasks (id, name, queue, priority, state, args, kwargs, "
            "attempts, created_at, batch_id) SELECT gen_random_uuid(), 'n', 'q', 0, "
            "'succeeded', '[]', '{}', 1, now(), gen_random_uuid() FROM generate_series(1, 5000)"
        )
        await admin.execute("ANALYZE taskq_tasks")
        sql, names = pg._flush_statement(*parts)
        values: dict[str, object] = {
            name: ["00000000-0000-0000-0000-000000000001"] if name.endswith("_ids") else None
            for name in names
        }
        values["now"] = datetime.now(UTC)
        # When PostgreSQL plans the flush (a generic plan, as a prepared statement keeps)
        await admin.execute("SET plan_cache_mode = force_generic_plan")
        plan = "\n".join(row[0] for row in await admin.fetch("EXPLAIN " + sql, *values.values()))
    finally:
        await admin.close()
    # Then every task row it touches is found through the primary key, never a scan
    scans = [line for line in plan.splitlines() if "Scan" in line and "taskq_tasks" in line]
    assert scans, plan
    assert all("pk_taskq_tasks" in line or "Bitmap Heap Scan" in line for line in scans), plan
    assert "Seq Scan" not in plan and "ix_taskq_tasks_state" not in plan, plan


async def test_a_writers_session_is_named_by_its_worker_and_plans_its_flushes_once(
    store: Store,
) -> None:
    # Given a worker's writer (its connection is held for its flushes)
    writer = store.writer(flush_interval=0, worker_id="w-plans")
    connection = writer._batches._connection  # type: ignore[attr-defined]
    # When its session's settings are read
    rows = await connection.fetch(
        "SELECT current_setting('application_name') AS name, "
        "current_setting('plan_cache_mode') AS plans"
    )
    await writer._batches.close()
    # Then others see the worker by name, and each flush statement is planned once
    # (generic plans: its arrays never change how rows are found)
    assert (rows[0]["name"], rows[0]["plans"]) == ("w-plans", "force_generic_plan")


async def test_concurrent_reads_of_single_tasks_go_in_one_statement(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 20 stored tasks and an id that has none
    tasks = [new_task() for _ in range(20)]
    for task in tasks:
        await store.insert_task(task)
    missing = str(uuid.uuid4())
    assert store._pg is not None
    connection = store._pg.reads._connection
    statements: list[str] = []
    fetch = connection.fetch

    async def counted(statement: str, *arguments: object) -> list[asyncpg.Record]:
        statements.append(statement)
        return await fetch(statement, *arguments)

    monkeypatch.setattr(connection, "fetch", counted)
    # When they are all read at once
    ids = [*(task.id for task in tasks), missing]
    found = await asyncio.gather(*(store.get_task(task_id) for task_id in ids))
    # Then each read gets its own row (None for the missing one), from one statement
    assert [None if record is None else record.id for record in found] == [*ids[:-1], None]
    assert len(statements) == 1


async def test_publishing_a_batch_leaves_rows_a_leader_holds_to_it_without_waiting(
    store: Store, postgres_url: str
) -> None:
    # Given three due scheduled rows, one of them locked by a leader publishing it now
    rows = [dataclasses.replace(new_task(), state=TaskStatus.SCHEDULED) for _ in range(3)]
    await store.insert_tasks(rows, due_now=True)
    ids = [row.id for row in rows]
    leader = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        async with leader.transaction():
            await leader.execute("SELECT 1 FROM taskq_tasks WHERE id = $1 FOR UPDATE", ids[0])
            published: list[str] = []

            async def publish(locked: list[str]) -> None:
                published.extend(locked)

            # When the submitter publishes the batch
            async with asyncio.timeout(5):  # (it used to wait for the leader's commit)
                mine = await store.publish_scheduled(ids, publish)
    finally:
        await leader.close()
    # Then it published the two others at once and left the held one to the leader
    assert sorted(mine) == sorted(published) == sorted(ids[1:])
    assert (await store.get_states(ids))[ids[0]] is TaskStatus.SCHEDULED
