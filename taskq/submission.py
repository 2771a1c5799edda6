"""Submitting a task: validate, store the row, then publish (or leave it `scheduled`)."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from taskq import protocol
from taskq.broker import Broker, topology
from taskq.exceptions import ConfigurationError, PublishError
from taskq.status import TaskStatus
from taskq.store import NewTask, Store, TaskRecord

if TYPE_CHECKING:
    from taskq.app import App
    from taskq.task import Task, TaskOptions

logger = logging.getLogger(__name__)


async def submit(
    app: App,
    task: Task[Any, Any],
    options: TaskOptions,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> str:
    """→ the task id (an earlier task's, if `options.idempotency_key` was used before)."""
    store, broker = app.store, app.broker
    check_options(options, app.settings.max_priority)
    run_at = due_time(options)
    expires_at = expiry_time(options)
    task.check_arguments(args, kwargs)
    for index, value in enumerate(args):
        protocol.check_value(value, f"task {task.name!r}: argument {index}")
    for key, value in kwargs.items():
        protocol.check_value(value, f"task {task.name!r}: argument {key!r}")
    envelope = protocol.Envelope(
        id=str(uuid.uuid4()),
        task=task.name,
        queue=options.queue,
        args=list(args),
        kwargs=kwargs,
        priority=options.priority,
        timeout=options.timeout,
        created_at=time.time(),
        max_retries=options.max_retries,
        expires_at=None if expires_at is None else expires_at.timestamp(),
    )
    body = protocol.encode(envelope, max_bytes=app.settings.max_payload_bytes)
    await app.declare(options.queue)
    row = new_task_row(envelope, run_at=run_at, idempotency_key=options.idempotency_key)
    # The row first, then the message: a worker never sees a task the store lacks.
    task_id = await store.insert_task(row)
    if task_id != envelope.id:
        await _republish_if_queued(app, task_id)  # an earlier submit with this key
    elif row.state is TaskStatus.QUEUED:
        await publish(store, broker, options.queue, body, envelope)
    # (A `scheduled` row is published by the leader when it is due.)
    return task_id


async def _republish_if_queued(app: App, task_id: str) -> None:
    """The earlier submit may have stored its row and died before publishing: publish it
    again. If its message is in the queue after all, the second copy is acked unrun."""
    record = await app.store.get_task(task_id)
    if record is not None and record.state is TaskStatus.QUEUED:
        envelope = envelope_of(record)
        body = protocol.encode(envelope, max_bytes=app.settings.max_payload_bytes)
        await app.declare(record.queue)
        await publish(app.store, app.broker, record.queue, body, envelope)


async def publish(
    store: Store, broker: Broker, queue: str, body: bytes, envelope: protocol.Envelope
) -> None:
    try:
        await broker.publish(
            queue,
            body,
            priority=envelope.priority,
            message_id=envelope.id,
            expiration=time_left(envelope),
        )
    except PublishError as exc:
        await _record_unpublished(store, envelope.id, exc)
        raise


def due_time(options: TaskOptions) -> datetime | None:
    """When a delayed task is due, or None to run it now."""
    if options.countdown is not None and options.eta is not None:
        raise ConfigurationError("pass countdown or eta, not both")
    if options.countdown is not None:
        if options.countdown < 0:
            raise ConfigurationError(f"countdown must be >= 0 seconds, not {options.countdown}")
        return datetime.now(UTC) + timedelta(seconds=options.countdown)
    if options.eta is not None:
        if options.eta.tzinfo is None:
            raise ConfigurationError(
                "eta must be timezone-aware, e.g. datetime(..., tzinfo=timezone.utc)"
            )
        return options.eta.astimezone(UTC)
    return None


def expiry_time(options: TaskOptions) -> datetime | None:
    """When a task that has not started by then must never run, or None."""
    expires = options.expires
    if expires is None:
        return None
    if isinstance(expires, datetime):
        if expires.tzinfo is None:
            raise ConfigurationError("expires must be timezone-aware, or a number of seconds")
        return expires.astimezone(UTC)
    if expires <= 0:
        raise ConfigurationError(f"expires must be > 0 seconds, not {expires}")
    return datetime.now(UTC) + timedelta(seconds=expires)


def time_left(envelope: protocol.Envelope) -> float | None:
    """Seconds until the envelope expires (its message's TTL), or None."""
    if envelope.expires_at is None:
        return None
    return max(envelope.expires_at - time.time(), 0.0)


def check_options(options: TaskOptions, max_priority: int) -> None:
    topology.validate_queue_name(options.queue)
    if not 0 <= options.priority <= max_priority:
        raise ConfigurationError(
            f"priority {options.priority} is outside 0..{max_priority} (the app's max_priority)"
        )
    if options.timeout is not None and options.timeout <= 0:
        raise ConfigurationError(
            f"timeout must be a positive number of seconds, not {options.timeout}"
        )
    key = options.idempotency_key
    if key is not None and not 1 <= len(key) <= 255:
        raise ConfigurationError("idempotency_key must be 1 to 255 characters")
    if options.max_retries < 0 or options.max_deliveries < 1:
        raise ConfigurationError("max_retries must be >= 0 and max_deliveries >= 1")


def new_task_row(
    envelope: protocol.Envelope,
    *,
    run_at: datetime | None = None,
    idempotency_key: str | None = None,
) -> NewTask:
    """The row a message stands for; `scheduled` if it has a due time."""
    return NewTask(
        id=envelope.id,
        name=envelope.task,
        queue=envelope.queue,
        priority=envelope.priority,
        args=envelope.args,
        kwargs=envelope.kwargs,
        timeout=envelope.timeout,
        created_at=datetime.fromtimestamp(envelope.created_at or time.time(), UTC),
        state=TaskStatus.QUEUED if run_at is None else TaskStatus.SCHEDULED,
        run_at=run_at,
        idempotency_key=idempotency_key,
        max_retries=envelope.max_retries,
        expires_at=(
            None
            if envelope.expires_at is None
            else datetime.fromtimestamp(envelope.expires_at, UTC)
        ),
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
    )


async def _record_unpublished(store: Store, task_id: str, exc: PublishError) -> None:
    """A task whose message the broker never confirmed must not sit `queued` forever."""
    error = {"type": "PublishError", "message": str(exc), "traceback": ""}
    try:
        await store.fail_unclaimed(task_id, error, only_queued=True)
    except Exception:
        logger.exception("could not record unpublished task %s", task_id)
