"""A stored task and its message, each made from the other: the row a message stands
for (at submit, or for a message that came without one), and the message of a stored task
(a delayed one coming due, a retry, a replay)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from taskq import protocol
from taskq.status import TaskStatus
from taskq.store import NewTask, TaskRecord


def new_task_row(
    envelope: protocol.Envelope,
    *,
    run_at: datetime | None = None,
    idempotency_key: str | None = None,
    batch_id: str | None = None,
    scheduled: bool = False,
) -> NewTask:
    """The row a message stands for; `scheduled` if it has a due time (or is to be
    published by whoever finds it due)."""
    return NewTask(
        id=envelope.id,
        name=envelope.task,
        queue=envelope.queue,
        priority=envelope.priority,
        args=envelope.args,
        kwargs=envelope.kwargs,
        timeout=envelope.timeout,
        created_at=datetime.fromtimestamp(envelope.created_at or time.time(), UTC),
        state=TaskStatus.SCHEDULED if scheduled or run_at is not None else TaskStatus.QUEUED,
        run_at=run_at,
        idempotency_key=idempotency_key,
        max_retries=envelope.max_retries,
        expires_at=(
            None
            if envelope.expires_at is None
            else datetime.fromtimestamp(envelope.expires_at, UTC)
        ),
        batch_id=batch_id,
        headers=envelope.headers or None,
        limits=envelope.limits,
    )


def envelope_of(record: TaskRecord) -> protocol.Envelope:
    """The message for a stored task (a delayed one coming due, or a replay)."""
    return protocol.Envelope(
        id=record.id,
        task=record.name,
        queue=record.queue,
        args=record.args,
        kwargs=record.kwargs,
        priority=record.priority,
        timeout=record.timeout,
        created_at=record.created_at.timestamp(),
        max_retries=record.max_retries,
        expires_at=None if record.expires_at is None else record.expires_at.timestamp(),
        headers=dict(record.headers or {}),
        limits=record.limits,
    )
