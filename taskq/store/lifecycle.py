"""Writes that move a task outside the normal run: cancel, expire, lease, replay, recover."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import case, select, text, update

from taskq.status import TaskStatus
from taskq.store import coordination, limits, records, statements, workflows
from taskq.store.async_core import Connection
from taskq.store.engine import clock
from taskq.store.limit_sql import CoreIO
from taskq.store.records import TaskRecord, now
from taskq.store.tables import attempts, tasks

_c = tasks.c

# Where a transaction that made a task due says so (see `Store.due_soon`).
DUE_CHANNEL = "taskq_due"
_WAITING = (TaskStatus.SCHEDULED.value, TaskStatus.QUEUED.value)
_FINAL = tuple(state.value for state in TaskStatus if state.is_final)


async def publish_scheduled(
    conn: Connection, task_ids: Sequence[str], publish: Callable[[list[str]], Awaitable[None]]
) -> list[str]:
    """Lock those rows still `scheduled`, `publish(their ids)`, mark them `queued`."""
    locked = set(await statements.lock_scheduled(conn, task_ids))
    mine = [task_id for task_id in task_ids if task_id in locked]
    await publish(mine)
    await statements.mark_queued(conn, mine)
    return mine


async def publish_due(
    conn: Connection, limit: int, publish: Callable[[list[TaskRecord]], Awaitable[None]]
) -> tuple[list[TaskRecord], datetime | None]:
    """Lock up to `limit` due rows, `publish(them)`, mark them `queued`; → (the rows
    published, when the next scheduled row is due)."""
    due = await statements.claim_due(conn, limit)
    joins = [record.id for record in due if record.name == workflows.JOIN_TASK]
    if joins:  # (no worker runs a join: it ends here, and its children are released)
        await workflows.end_joins(conn, joins)
        await workflows.release(conn, joins)
        due = [record for record in due if record.name != workflows.JOIN_TASK]
    if due:
        await publish(due)
        await statements.mark_queued(conn, [record.id for record in due])
    return due, await statements.next_due(conn)


async def write_batch(
    conn: Connection,
    claims: Sequence[records.ClaimRequest],
    outcomes: Sequence[records.Outcome],
    channel: str = DUE_CHANNEL,
    scope: str = "",
) -> records.Written:
    """A writer's flush in one transaction (`statements.write_batch`), with the release of
    the steps waiting for the workflow steps that ended in it. Claims of tasks with limits
    are decided after the outcomes (whose slots are then free), and the tasks waiting for
    a slot that an outcome freed are released last (`limits`)."""
    written = await statements.write_batch(conn, (), outcomes)
    freed = limits.freed_keys(outcomes, written.stale)
    claimed, held, freed_due = await claim_then_release(conn, claims, freed, channel, scope)
    released = await ended(
        conn,
        [
            o.task_id
            for o in outcomes
            if o.in_workflow and o.state.is_final and (o.task_id, o.attempt) not in written.stale
        ],
        channel,
    )
    return dataclasses.replace(
        written,
        claimed=claimed,
        released=released.due + freed_due,
        cancelled=released.cancelled,
        held=held,
    )


async def claim_then_release(
    conn: Connection,
    claims: Sequence[records.ClaimRequest],
    freed: Sequence[str],
    channel: str = DUE_CHANNEL,
    scope: str = "",
) -> tuple[dict[str, records.Claimed], dict[str, records.Held], int]:
    """Claims, those of tasks with limits through them, then the release of the tasks
    waiting for the slots of `freed` keys (`limits.claim_then_release`), in the caller's
    one transaction; → (the claims that took, those held back, how many became due)."""
    going, claimed, held, released = await limits.claim_then_release(
        CoreIO(conn, scope), [c for c in claims if c.limited], freed
    )
    if released or any(h.until is not None for h in held.values()):
        await wake_leader(conn, channel)
    going += [c for c in claims if not c.limited]
    if going:
        claimed.update((await statements.write_batch(conn, going, ())).claimed)
    return claimed, held, released


async def release_slots(
    conn: Connection, keys: Sequence[str], channel: str = DUE_CHANNEL, scope: str = ""
) -> int:
    """The oldest tasks waiting for a free slot of these keys become due (the leader woken)."""
    released = await limits.release_slots(CoreIO(conn, scope), keys) if keys else 0
    if released:
        await wake_leader(conn, channel)
    return released


async def ended(
    conn: Connection, task_ids: Sequence[str], channel: str = DUE_CHANNEL
) -> workflows.Released:
    """These tasks have just ended, in this transaction: release (or cancel) the workflow
    steps waiting for them, and wake the leader for those that became due."""
    released = await workflows.release(conn, task_ids)
    if released.due:
        await wake_leader(conn, channel)
    return released


async def request_cancel_many(
    conn: Connection, task_ids: Sequence[str], channel: str = DUE_CHANNEL
) -> dict[str, tuple[TaskStatus, str, str]]:
    """Cancel waiting tasks at once; mark running ones for cancellation.

    → for each task changed: its state afterwards (`cancelled`, or `running` if its
    worker must be told), name and queue. Tasks already finished are left out.
    """
    waiting = _c.state.in_(_WAITING)
    statement = (
        update(tasks)
        .where(_c.id.in_(list(task_ids)), _c.state.not_in(_FINAL))
        .values(
            cancel_requested_at=now(),
            state=case((waiting, TaskStatus.CANCELLED.value), else_=_c.state),
            finished_at=case((waiting, now()), else_=_c.finished_at),
        )
        .returning(_c.id, _c.state, _c.name, _c.queue)
    )
    changed = {
        str(row.id): (TaskStatus(row.state), row.name, row.queue)
        for row in await conn.execute(statement)
    }
    cancelled = [task_id for task_id, (state, _, _) in changed.items() if state.is_final]
    released = await ended(conn, cancelled, channel)
    # (steps cancelled because these were: announced like them)
    changed.update((task_id, (TaskStatus.CANCELLED, name, queue))
                   for task_id, name, queue in released.cancelled)  # fmt: skip
    return changed


async def expire_waiting(conn: Connection, task_id: str, channel: str = DUE_CHANNEL) -> bool:
    """A worker received a task past its expiry: it never runs. → whether it was waiting."""
    statement = (
        update(tasks)
        # expires_at is cleared when a task first starts, so a task handed back after
        # starting is not "expired before it ran".
        .where(_c.id == task_id, _c.state.in_(_WAITING), _c.expires_at.is_not(None))
        .values(state=TaskStatus.EXPIRED.value, dead_reason="expired", finished_at=now())
        .returning(_c.id)
    )
    if expired := (await conn.execute(statement)).first() is not None:
        await ended(conn, [task_id], channel)
    return expired


async def expire_overdue(
    conn: Connection, limit: int, channel: str = DUE_CHANNEL
) -> list[tuple[str, str, str, TaskStatus]]:
    """The leader's sweep: waiting tasks past their expiry (RabbitMQ may have dropped their
    message into the DLQ as expired, so no worker will ever see it) end `expired`."""
    overdue = (
        select(_c.id)
        .where(_c.state.in_(_WAITING), _c.expires_at < clock(conn))
        .limit(limit)
        .scalar_subquery()
    )
    statement = (
        update(tasks)
        .where(_c.id.in_(overdue), _c.state.in_(_WAITING))
        .values(state=TaskStatus.EXPIRED.value, dead_reason="expired", finished_at=now())
        .returning(_c.id, _c.name, _c.queue)
    )
    # → (id, name, queue, state) of each task expired, and of each workflow step cancelled
    # because a step it waited for expired
    expired = [(str(row.id), row.name, row.queue) for row in await conn.execute(statement)]
    released = await ended(conn, [task_id for task_id, _, _ in expired], channel)
    return [(*task, TaskStatus.EXPIRED) for task in expired] + [
        (*step, TaskStatus.CANCELLED) for step in released.cancelled
    ]


async def fail_unclaimed(
    conn: Connection,
    task_id: str,
    error: records.TaskError,
    *,
    only_queued: bool = False,
    dead_reason: str | None = None,
    channel: str = DUE_CHANNEL,
) -> None:
    """`statements.fail_unclaimed`, and the release of the steps waiting for it."""
    if await statements.fail_unclaimed(
        conn, task_id, error, only_queued=only_queued, dead_reason=dead_reason
    ):
        await ended(conn, [task_id], channel)


async def hand_off(conn: Connection, task_id: str, attempt: int, until: datetime) -> bool:
    """A long task's message is about to be acked early: from now its lease keeps it."""
    statement = (
        update(tasks)
        .where(_c.id == task_id, _c.attempts == attempt, _c.state == TaskStatus.RUNNING.value)
        .values(lease_until=until)
        .returning(_c.id)
    )
    return (await conn.execute(statement)).first() is not None


async def extend_leases(
    conn: Connection, worker_id: str, task_ids: Sequence[str], until: datetime
) -> None:
    await conn.execute(
        update(tasks)
        .where(
            _c.id.in_(list(task_ids)),
            _c.worker_id == worker_id,
            _c.state == TaskStatus.RUNNING.value,
            _c.lease_until.is_not(None),
        )
        .values(lease_until=until)
    )


async def hand_to_relay(conn: Connection, task_id: str, channel: str = DUE_CHANNEL) -> bool:
    """`queued` → due `scheduled`, for the leader to publish (see `Store.hand_to_relay`)."""
    statement = (
        update(tasks)
        .where(_c.id == task_id, _c.state == TaskStatus.QUEUED.value)
        .values(state=TaskStatus.SCHEDULED.value, run_at=clock(conn))
        .returning(_c.id)
    )
    if handed := (await conn.execute(statement)).first() is not None:
        await wake_leader(conn, channel)
    return handed


async def wake_leader(conn: Connection, channel: str = DUE_CHANNEL) -> None:
    """Tell the leader (LISTENing on `channel`, on PostgreSQL) that a task is due, once this
    commits."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": channel})


async def bury_silent(conn: Connection, silent_for: timedelta) -> list[str]:
    """Workers silent for `silent_for` are `dead`, their running tasks orphans; → their ids."""
    worker_ids = await coordination.mark_dead(conn, silent_for)
    await lease_orphans(conn, worker_ids)
    return worker_ids


async def bury_process(conn: Connection, worker_id: str) -> list[str]:
    """A supervisor saw its child die: its worker is `dead`, its running tasks orphans;
    → [its id] if it was running."""
    worker_ids = await coordination.mark_process_dead(conn, worker_id)
    await lease_orphans(conn, worker_ids)
    return worker_ids


async def lease_orphans(conn: Connection, worker_ids: Sequence[str]) -> None:
    """Running tasks of dead workers get a lease that nobody renews: if no redelivery of
    their message takes them over (the usual way) before it lapses, the leader requeues
    them, so no row stays `running` with no live worker."""
    if worker_ids:
        await conn.execute(
            update(tasks)
            .where(
                _c.worker_id.in_(list(worker_ids)),
                _c.state == TaskStatus.RUNNING.value,
                _c.lease_until.is_(None),
            )
            .values(lease_until=now() + records.SILENT_FOR)
        )


async def requeue_lapsed(conn: Connection, limit: int) -> list[str]:
    """Running tasks whose lease lapsed (their worker died after acking early) become due
    `scheduled` rows; the leader publishes them as it does any due task (never while they
    still say `running`, which a worker's claim would skip)."""
    lapsed = (
        select(_c.id)
        .where(_c.state == TaskStatus.RUNNING.value, _c.lease_until < clock(conn))
        .limit(limit)
        .scalar_subquery()
    )
    statement = (
        update(tasks)
        .where(_c.id.in_(lapsed), _c.state == TaskStatus.RUNNING.value)
        .values(state=TaskStatus.SCHEDULED.value, run_at=clock(conn), lease_until=None)
        .returning(_c.id)
    )
    return [str(row.id) for row in await conn.execute(statement)]


async def reset_for_replay(conn: Connection, task_ids: Sequence[str]) -> list[str]:
    """Dead tasks back as due `scheduled` rows, for new attempts (numbers keep counting).

    Only tasks that ended without succeeding: a dead letter naming a succeeded task (a stale
    copy, or bytes anyone could publish) must never run it again. The leader publishes
    them as it does any due task: in the transaction that marks them `queued`, so no crash
    can leave a replayed task without its message.
    """
    statement = (
        update(tasks)
        .where(
            _c.id.in_(list(task_ids)),
            _c.state.in_(_FINAL),
            _c.state != TaskStatus.SUCCEEDED.value,
        )
        .values(
            state=TaskStatus.SCHEDULED.value,
            run_at=now(),
            dead_reason=None,
            held_by=None,
            error=None,
            result=None,
            finished_at=None,
            expires_at=None,
            cancel_requested_at=None,
            retries=0,
            deliveries=0,
        )
        .returning(_c.id)
    )
    return [str(row.id) for row in await conn.execute(statement)]


async def list_attempts(conn: Connection, task_id: str) -> list[dict[str, object]]:
    query = select(attempts).where(attempts.c.task_id == task_id).order_by(attempts.c.attempt)
    return [records.attempt_of(row) for row in (await conn.execute(query)).mappings()]


async def release(conn: Connection, task_id: str, attempt: int) -> None:
    """A stopping worker hands a running task back: `queued` again, and this delivery does
    not count towards max_deliveries (the task did nothing wrong). A task acked early (on a
    lease) has its lease ended instead, so the leader publishes it again at once."""
    fence = (_c.id == task_id, _c.attempts == attempt, _c.state == TaskStatus.RUNNING.value)
    await conn.execute(
        update(tasks)
        .where(*fence)
        .values(
            state=case((_c.lease_until.is_(None), TaskStatus.QUEUED.value), else_=_c.state),
            deliveries=case((_c.lease_until.is_(None), _c.deliveries - 1), else_=_c.deliveries),
            lease_until=case((_c.lease_until.is_(None), None), else_=now()),
        )
    )
