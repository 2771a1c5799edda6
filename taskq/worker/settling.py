"""Settling deliveries, and the messages that never run: malformed, of an unknown task, or
expired before they started. Each is dead-lettered once, with the reason in its row."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

from taskq import protocol
from taskq.broker import Delivery, topology
from taskq.client.events import EventBatcher, event, task_event
from taskq.client.rows import new_task_row
from taskq.exceptions import ProtocolError, TaskqError
from taskq.signing import BadSignature
from taskq.status import TaskStatus
from taskq.store import Held, Store, TaskError, TaskRecord
from taskq.telemetry import metrics, semconv
from taskq.worker import claims

logger = logging.getLogger("taskq.worker.executor")

T = TypeVar("T")


async def settle(settling: Awaitable[Any]) -> bool:
    """Ack or reject; a broken channel means the broker will redeliver, which is safe.
    → whether it was settled."""
    try:
        await settling
    except TaskqError as exc:
        logger.info("could not settle a delivery (%s); the broker will redeliver it", exc)
        return False
    return True


async def shielded(write: Awaitable[T]) -> T:
    """Await `write` to its end even if the worker is being cancelled, then re-raise."""
    future = asyncio.ensure_future(write)  # (a future stays as it is: no task is made)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await future
        raise


async def quietly(operation: Awaitable[Any]) -> None:
    try:
        await operation
    except TaskqError as exc:
        logger.warning("ignored: %s", exc)


def count_dead(queue: str, reason: str, name: str | None = None) -> None:
    attributes = {semconv.MESSAGING_DESTINATION_NAME: queue, semconv.DEAD_LETTER_REASON: reason}
    if name is not None:
        attributes[semconv.TASK_NAME] = name
    metrics.dead_lettered.add(1, attributes)


async def reject_malformed(
    store: Store, events: EventBatcher, delivery: Delivery, exc: ProtocolError
) -> None:
    task_id = exc.task_id or _task_id_of(delivery)
    forged = isinstance(exc, BadSignature)
    reason = "bad_signature" if forged else "malformed"
    logger.error(
        "dead-lettering a %s message from queue %s (task id %s): %s",
        "forged" if forged else "malformed",
        delivery.queue,
        task_id or "unknown",
        exc,
        extra={"action": "reject_malformed", "task_id": task_id},
    )
    if forged:
        task_id = None  # (whatever id it names, it must not touch that task's row)
    if task_id is not None:
        error = TaskError("ProtocolError", str(exc))
        await quietly(store.fail_unclaimed(task_id, error, dead_reason=reason))
    count_dead(delivery.queue, reason)
    await settle(delivery.reject(requeue=False))
    if task_id is not None:
        events.add(event(task_id, TaskStatus.FAILED))


async def reject_unknown(
    store: Store, events: EventBatcher, delivery: Delivery, envelope: protocol.Envelope
) -> None:
    message = (
        f"no task named {envelope.task!r} is registered in this worker's app; "
        "deploy the code that defines it, then replay the message from "
        f"{topology.dlq_name(envelope.queue)}"
    )
    logger.error(
        "task %s: %s",
        envelope.id,
        message,
        extra={"action": "reject_unknown", "task_id": envelope.id, "task_name": envelope.task},
    )
    await store.insert_task_if_missing(new_task_row(envelope))
    error = TaskError("UnknownTask", message)
    await store.fail_unclaimed(envelope.id, error, dead_reason="unknown_task")
    count_dead(envelope.queue, "unknown_task")
    await settle(delivery.reject(requeue=False))
    events.add(task_event(envelope, TaskStatus.FAILED))


async def not_claimed(
    events: EventBatcher,
    delivery: Delivery,
    envelope: protocol.Envelope,
    claim: Held | claims.Impostor | claims.Leased | claims.Duplicate,
) -> None:
    """Settle a delivery whose claim did not take (`Held` by a limit, `claims.Impostor`,
    `Leased`, `Duplicate`)."""
    if isinstance(claim, Held):
        await hold(events, delivery, envelope, claim)
        return
    if isinstance(claim, claims.Impostor):
        await reject_impostor(delivery, envelope, claim.record)
        return
    if isinstance(claim, claims.Leased):
        logger.warning(
            "task %s was delivered again while a live worker runs it (its connection or "
            "channel closed); the run is kept by a lease from now, and this copy is acked",
            envelope.id,
            extra={"action": "leased", "task_id": envelope.id},
        )
        await settle(delivery.ack())
        return
    record = claim.record
    if delivery.redelivered and record is not None and record.dead_reason is not None:
        # The worker that ended it could not reject its copy (its channel closed, or it
        # died after storing the outcome): this copy goes to the dead letters instead.
        await settle(delivery.reject(requeue=False))
    else:
        # Final, not yet due, or running: a duplicate copy. Nothing to run.
        logger.info("task %s is not claimable; acking a duplicate delivery", envelope.id)
        await settle(delivery.ack())
    events.add(task_event(envelope, None))


async def hold(
    events: EventBatcher, delivery: Delivery, envelope: protocol.Envelope, held: Held
) -> None:
    """A limit holds the task back: its row waits `scheduled` (the leader publishes it when
    it may start), so this message is done with; it never holds a slot here."""
    logger.debug(
        "task %s waits for %s %s until %s",
        envelope.id,
        "rate limit" if held.reason == "rate" else "a free slot of",
        held.key,
        "a slot is free" if held.until is None else held.until.isoformat(),
        extra={"action": "held", "task_id": envelope.id},
    )
    if held.reason == "rate":
        metrics.rate_limited.add(1, {semconv.TASK_NAME: envelope.task})
    await settle(delivery.ack())
    events.add(task_event(envelope, TaskStatus.SCHEDULED))


async def reject_impostor(
    delivery: Delivery, envelope: protocol.Envelope, record: TaskRecord
) -> None:
    """A message whose id is another task's: dead-lettered, that task's row left alone."""
    logger.error(
        "dead-lettering a message for task %r on queue %s whose id %s belongs to task %r on "
        "queue %s: it must not run in that task's place",
        envelope.task,
        delivery.queue,
        envelope.id,
        record.name,
        record.queue,
        extra={"action": "reject_impostor", "task_id": envelope.id},
    )
    count_dead(delivery.queue, "impostor")
    await settle(delivery.reject(requeue=False))


async def expire(
    store: Store, events: EventBatcher, delivery: Delivery, envelope: protocol.Envelope
) -> bool:
    """Expire a task that never started; → False if it had started (a redelivery)."""
    if not await store.expire_waiting(envelope.id):
        return False
    logger.warning("task %s expired before it started; dead-lettered", envelope.id)
    count_dead(envelope.queue, "expired", envelope.task)
    await settle(delivery.reject(requeue=False))
    events.add(task_event(envelope, TaskStatus.EXPIRED))
    return True


def _task_id_of(delivery: Delivery) -> str | None:
    """The task id taskq put in the message id, for messages whose body cannot be read."""
    candidate = delivery.message_id.partition(":")[0]
    try:
        return str(uuid.UUID(candidate))
    except ValueError:
        return None
