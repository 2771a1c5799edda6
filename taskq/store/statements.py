"""Reads and writes of task rows as SQLAlchemy Core statements, named by what they do.

They run on both dialects; on PostgreSQL the store sends its hot statements (a writer's
flush, grouped inserts, the read of one task) through `pg` instead, so those verbs here are
SQLite's. Bound parameters only."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, bindparam, func, or_, select, text, update

from taskq.exceptions import StoreError
from taskq.status import FINAL, TaskStatus
from taskq.store import codec, records
from taskq.store.async_core import Connection
from taskq.store.engine import clock, insert_ignoring_duplicates
from taskq.store.tables import attempts, secrets, tasks, workers

_c = tasks.c
_NOT_FINAL = tuple(s.value for s in TaskStatus if s not in FINAL)


async def insert_task(conn: Connection, task: records.NewTask, *, due_now: bool = False) -> str:
    """Insert the row; → the id of the task that holds `task.idempotency_key` if one did.

    `due_now`: due by the database's clock (as of this transaction), not the caller's.
    """
    values = records.task_values(task)
    if due_now:
        values["run_at"] = clock(conn)
    if task.idempotency_key is None:
        await conn.execute(tasks.insert().values(values))
        return task.id
    # ON CONFLICT waits for a concurrent insert of the same key to commit, then yields to it.
    inserted = await conn.execute(
        insert_ignoring_duplicates(conn, tasks).values(values).returning(_c.id)
    )
    if inserted.first() is not None:
        return task.id
    existing = await conn.execute(select(_c.id).where(_c.idempotency_key == task.idempotency_key))
    return str(existing.scalar_one())


async def insert_tasks(
    conn: Connection, new_tasks: Sequence[records.NewTask], *, due_now: bool = False
) -> None:
    """Insert many rows in one statement (a batch; no idempotency keys).

    `due_now`: due by the database's clock, so that a worker's claim (which compares with
    that clock) can never find one of them not yet due because this host's clock runs ahead.
    """
    if not new_tasks:
        return
    statement = tasks.insert()
    rows = [records.task_values(task) for task in new_tasks]
    if due_now:
        statement = statement.values(run_at=clock(conn))
        for row in rows:
            del row["run_at"]
    await conn.execute(statement, rows)


async def insert_task_if_missing(conn: Connection, task: records.NewTask) -> None:
    await conn.execute(insert_ignoring_duplicates(conn, tasks), [records.task_values(task)])


async def get_task(conn: Connection, task_id: str) -> records.TaskRecord | None:
    row = (await conn.execute(select(tasks).where(_c.id == task_id))).mappings().first()
    return None if row is None else records.record_of(row)


async def get_tasks(conn: Connection, task_ids: Sequence[str]) -> dict[str, records.TaskRecord]:
    rows = (await conn.execute(select(tasks).where(_c.id.in_(list(task_ids))))).mappings()
    return {str(row["id"]): records.record_of(row) for row in rows}


async def read_secret(conn: Connection, name: str) -> str:
    value = (
        await conn.execute(select(secrets.c.value).where(secrets.c.name == name))
    ).scalar_one_or_none()
    if value is None:
        raise StoreError(
            f"the database has no {name!r} in taskq_secrets: run `taskq db upgrade` again, "
            "or insert one (a random string of 32 or more characters)"
        )
    return str(value)


async def ids_starting_with(conn: Connection, prefix: str, limit: int) -> list[str]:
    """Ids whose hex digits start with `prefix` (hyphens ignored), by a range of the primary
    key: an index scan, however many rows there are."""
    digits = prefix.replace("-", "").lower()
    low, high = (str(uuid.UUID(digits.ljust(32, pad))) for pad in "0f")
    query = select(_c.id).where(_c.id.between(low, high)).order_by(_c.id).limit(limit)
    return [str(row.id) for row in await conn.execute(query)]


async def get_states(conn: Connection, task_ids: Iterable[str]) -> dict[str, TaskStatus]:
    query = select(_c.id, _c.state).where(_c.id.in_(list(task_ids)))
    return {str(row.id): TaskStatus(row.state) for row in await conn.execute(query)}


CLAIMED_COLUMNS = (
    _c.id, _c.attempts, _c.deliveries, _c.retries, _c.max_retries, _c.cancel_requested_at,
    _c.workflow_id, _c.receives, _c.slot_key,
)  # fmt: skip
# What a claim sets besides the worker and the start (expiry means "not started by then":
# it has started now).
STARTED = {
    "state": TaskStatus.RUNNING.value, "attempts": _c.attempts + 1,
    "deliveries": _c.deliveries + 1, "finished_at": None, "lease_until": None,
    "progress": None, "expires_at": None, "held_by": None,
}  # fmt: skip


def claimed_of(rows: Iterable[Any]) -> dict[str, records.Claimed]:
    """The claims of the rows an UPDATE ... RETURNING `CLAIMED_COLUMNS` marked running."""
    return {
        str(row.id): records.Claimed(
            attempt=row.attempts,
            deliveries=row.deliveries,
            retries=row.retries,
            max_retries=row.max_retries,
            cancel_requested=row.cancel_requested_at is not None,
            workflow_id=None if row.workflow_id is None else str(row.workflow_id),
            receives=row.receives,
            slot_key=row.slot_key,
        )
        for row in rows
    }


async def claim(
    conn: Connection,
    task_ids: Sequence[str],
    worker_id: str,
    *,
    redelivered: bool,
    name: str | None = None,
    queue: str | None = None,
    limited: bool = False,
) -> dict[str, records.Claimed]:
    """Mark tasks `running` and count the attempt and delivery, in one statement.

    A row with limits is claimed only when `limited` (its limits were decided first, in
    this transaction: `limits.claim_then_release`), whatever its message says.

    Rows already final (a duplicate delivery) or missing are left alone and absent from
    the result. A `running` row is taken over only by a redelivery whose attempt's worker
    is gone (see `_owner_gone`): a first delivery of a running task is a duplicate publish,
    and a redelivery while its worker lives follows a dropped connection, not a crash. The
    caller must commit before any task starts.
    """
    takeover = [and_(_c.state == TaskStatus.RUNNING.value, _owner_gone(conn, worker_id))]
    statement = (
        update(tasks)
        .where(
            _c.id.in_(list(task_ids)),
            _c.name == (_c.name if name is None else name),
            _c.queue == (_c.queue if queue is None else queue),
            *(() if limited else (_c.limits.is_(None),)),
            or_(
                _c.state == TaskStatus.QUEUED.value,
                *(takeover if redelivered else ()),
                # A due `scheduled` row is being published by the leader right now. Matching it
                # makes PostgreSQL wait for the leader's row lock and then re-check the row,
                # now `queued`. (Not matching it would skip the row: the claim would miss.)
                and_(_c.state == TaskStatus.SCHEDULED.value, _c.run_at <= clock(conn)),
            ),
        )
        .values(**STARTED, worker_id=worker_id, started_at=records.now())
        .returning(*CLAIMED_COLUMNS)
    )
    return claimed_of(await conn.execute(statement))


_FENCE = (
    _c.id == bindparam("b_id"),
    _c.attempts == bindparam("b_attempt"),
    _c.state == TaskStatus.RUNNING.value,
)


def _owner_gone(conn: Connection, claimer: str) -> Any:
    """The row's attempt belongs to the claimer itself, or to a worker that no longer beats
    (or, on PostgreSQL, whose session is gone: a killed process's connection closes with it)."""
    alive = [
        workers.c.id == _c.worker_id,
        workers.c.state == "running",
        workers.c.heartbeat_at > records.now() - records.SILENT_FOR,
    ]
    if conn.dialect.name == "postgresql":
        sessions = (
            text("SELECT application_name FROM pg_stat_activity")
            .columns(application_name=String)
            .subquery()
        )
        alive.append(workers.c.id.in_(select(sessions.c.application_name)))
    return or_(_c.worker_id == claimer, ~select(workers.c.id).where(*alive).exists())


_record_final = (
    update(tasks)
    .where(*_FENCE)
    .values(
        state=bindparam("b_state"),
        result=bindparam("b_result", type_=tasks.c.result.type),
        error=bindparam("b_error", type_=tasks.c.error.type),
        dead_reason=bindparam("b_dead_reason"),
        finished_at=bindparam("b_finished_at"),
        lease_until=None,
    )
)
_record_retry = (
    update(tasks)
    .where(*_FENCE)
    .values(
        state=TaskStatus.SCHEDULED.value,
        error=bindparam("b_error", type_=tasks.c.error.type),
        run_at=bindparam("b_run_at"),
        retries=_c.retries + 1,
        deliveries=0,
        lease_until=None,
    )
)


async def record_outcomes(
    conn: Connection, outcomes: Sequence[records.Outcome]
) -> frozenset[tuple[str, int]]:
    """Write outcomes, each fenced by attempt so a stale one is a no-op, and log each
    attempt in `taskq_attempts` (a stale one as `superseded`); → (id, attempt) of those
    stored."""
    finished = records.now()
    stored = set()
    for o in outcomes:
        parameters: dict[str, Any]
        if o.state is TaskStatus.SCHEDULED:
            parameters = {"b_error": records.error_json(o.error), "b_run_at": o.retry_at}
            statement = _record_retry
        else:
            parameters = {
                "b_state": o.state.value,
                "b_result": codec.to_sqlite_json(o.result),
                "b_error": records.error_json(o.error),
                "b_dead_reason": o.dead_reason,
                "b_finished_at": finished,
            }
            statement = _record_final
        written = await conn.execute(
            statement, {"b_id": o.task_id, "b_attempt": o.attempt, **parameters}
        )
        if written.rowcount:
            stored.add((o.task_id, o.attempt))
    await conn.execute(
        insert_ignoring_duplicates(conn, attempts),
        [
            {
                "task_id": o.task_id,
                "attempt": o.attempt,
                "worker_id": o.worker_id,
                "state": o.logged_state if (o.task_id, o.attempt) in stored else "superseded",
                "started_at": o.started_at,
                "finished_at": finished,
                "error": records.error_json(o.error),
            }
            for o in outcomes
        ],
    )
    return frozenset(stored)


async def fail_unclaimed(
    conn: Connection,
    task_id: str,
    error: records.TaskError,
    *,
    only_queued: bool = False,
    dead_reason: str | None = None,
) -> bool:
    """Record a failure for a task that never ran (e.g. no worker knows its name); →
    whether it did (the task had not ended)."""
    states = (TaskStatus.QUEUED.value,) if only_queued else _NOT_FINAL
    failed = await conn.execute(
        update(tasks)
        .where(_c.id == task_id, _c.state.in_(states))
        .values(
            state=TaskStatus.FAILED.value,
            error=error.to_json(),
            finished_at=records.now(),
            dead_reason=dead_reason,
        )
        .returning(_c.id)
    )
    return failed.first() is not None


async def claim_due(conn: Connection, limit: int) -> list[records.TaskRecord]:
    """Lock up to `limit` due `scheduled` rows for this transaction (others skip them)."""
    query = (
        select(tasks)
        .where(_c.state == TaskStatus.SCHEDULED.value, _c.run_at <= clock(conn))
        .order_by(_c.run_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [records.record_of(row) for row in (await conn.execute(query)).mappings()]


# On PostgreSQL, a chunk's ids are one array parameter: an IN list of 500 bound values costs
# SQLAlchemy and asyncpg about ten times the CPU of the statement itself.
# (`state` is tested in a CASE, which no index serves: with `state = 'scheduled'` the planner
# took the state index whenever its statistics said few rows were scheduled, and a batch of
# 100,000 just inserted was then read whole for each chunk of 500: minutes, not seconds.)
_MARK_QUEUED_PG = text(
    "UPDATE taskq_tasks SET state = 'queued' WHERE id = ANY(CAST(:ids AS uuid[])) "
    "AND CASE state WHEN 'scheduled' THEN true ELSE false END"
)
_LOCK_SCHEDULED_PG = text(
    "SELECT id::text FROM taskq_tasks WHERE id = ANY(CAST(:ids AS uuid[])) "
    "AND CASE state WHEN 'scheduled' THEN true ELSE false END FOR UPDATE SKIP LOCKED"
)


async def mark_queued(conn: Connection, task_ids: Sequence[str]) -> None:
    """`scheduled` → `queued` for rows just published (still locked by `claim_due`)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_MARK_QUEUED_PG, {"ids": list(task_ids)})
        return
    await conn.execute(
        update(tasks)
        .where(_c.id.in_(list(task_ids)), _c.state == TaskStatus.SCHEDULED.value)
        .values(state=TaskStatus.QUEUED.value)
    )


async def lock_scheduled(conn: Connection, task_ids: Sequence[str]) -> list[str]:
    """Lock these rows if still `scheduled` (→ their ids); rows a leader is publishing now
    are left to it (SKIP LOCKED: a big batch's submitter used to queue behind the leader,
    500 rows at a time)."""
    if conn.dialect.name == "postgresql":
        locked = await conn.execute(_LOCK_SCHEDULED_PG, {"ids": list(task_ids)})
        return list(locked.scalars())
    query = select(_c.id).where(_c.id.in_(list(task_ids)), _c.state == TaskStatus.SCHEDULED.value)
    return [str(task_id) for task_id in (await conn.execute(query)).scalars()]


async def write_batch(
    conn: Connection,
    claims: Sequence[records.ClaimRequest],
    outcomes: Sequence[records.Outcome],
) -> records.Written:
    """A writer's flush in one transaction: outcomes, then claims in one UPDATE per
    (worker, redelivered, task name, queue, limited)."""
    stored = await record_outcomes(conn, outcomes) if outcomes else frozenset()
    groups: dict[tuple[str, bool, str | None, str | None, bool], list[str]] = {}
    for c in claims:
        group = (c.worker_id, c.redelivered, c.name, c.queue, c.limited)
        groups.setdefault(group, []).append(c.task_id)
    claimed: dict[str, records.Claimed] = {}
    for (worker_id, redelivered, name, queue, limited), ids in groups.items():
        claimed.update(
            await claim(
                conn,
                ids,
                worker_id,
                redelivered=redelivered,
                name=name,
                queue=queue,
                limited=limited,
            )
        )
    stale = {(o.task_id, o.attempt) for o in outcomes} - stored
    return records.Written(claimed=claimed, stale=frozenset(stale))


_record_progress = (
    update(tasks).where(*_FENCE).values(progress=bindparam("b_progress", type_=_c.progress.type))
)


async def record_progress(
    conn: Connection, reports: Sequence[tuple[str, int, Mapping[str, Any]]]
) -> None:
    """Store the latest progress of running attempts: (task id, attempt, progress)."""
    if reports:
        await conn.execute(
            _record_progress,
            [
                {"b_id": task_id, "b_attempt": attempt, "b_progress": codec.to_json(dict(value))}
                for task_id, attempt, value in reports
            ],
        )


async def next_due(conn: Connection) -> datetime | None:
    """When the earliest `scheduled` task is due, if any."""
    query = select(func.min(_c.run_at)).where(_c.state == TaskStatus.SCHEDULED.value)
    return records.aware((await conn.execute(query)).scalar())
