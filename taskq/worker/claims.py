"""A delivery's claim on its task's row: the attempt it runs as, or why it does not run."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from taskq import protocol
from taskq.client.rows import new_task_row
from taskq.status import TaskStatus
from taskq.store import Claimed, Held, Store, TaskRecord, Writer

# Reads of the row before a delivery whose claim keeps missing is taken for a duplicate.
TRIES = 3


@dataclasses.dataclass(frozen=True, slots=True)
class Impostor:
    """The message reuses the id of another task (its row names another task or queue): it
    must not run in that task's place, nor settle that task's own message."""

    record: TaskRecord


@dataclasses.dataclass(frozen=True, slots=True)
class Leased:
    """A redelivery of a task that a live worker still runs (its connection dropped, or
    RabbitMQ's consumer_timeout closed its channel): the row is now kept by a lease, which
    that worker renews while it runs the task and which lapses if it does not, so this
    copy is acked rather than run beside it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Duplicate:
    """Nothing to run: the row is final, not yet due, or a first delivery of a task that
    runs. `record` is the row as read (None if it could not be told apart)."""

    record: TaskRecord | None


Claim = Claimed | Held | Impostor | Leased | Duplicate


async def claim(
    writer: Writer,
    store: Store,
    envelope: protocol.Envelope,
    worker_id: str,
    *,
    redelivered: bool,
    lease_duration: float,
) -> Claim:
    """Claim the delivery's task: the claim (run it), the limit holding it back, or why
    it does not run."""
    limited = envelope.limits is not None
    named = envelope.limits or {}
    keys = (named["rate"][0] if "rate" in named else None,
            named["slots"][0] if "slots" in named else None)  # fmt: skip

    async def claimed() -> Claimed | Held | None:
        return await writer.claim(
            envelope.id,
            worker_id,
            redelivered=redelivered,
            name=envelope.task,
            queue=envelope.queue,
            limited=limited,
            keys=keys,
        )

    for _ in range(TRIES):
        if (taken := await claimed()) is not None:
            return taken
        record = await store.get_task(envelope.id)
        if record is not None and record.limits and not limited:
            limited = True  # (its row has limits that its message does not say: obey the row)
            continue
        if record is None:
            # A message with no row (published by other means): record it, then run it.
            await store.insert_task_if_missing(new_task_row(envelope))
            continue
        if (record.name, record.queue) != (envelope.task, envelope.queue):
            return Impostor(record)
        if not (redelivered and record.state is TaskStatus.RUNNING):
            return Duplicate(record)
        if record.lease_until is not None:
            return Leased()
        # Its worker lives (else the claim would have taken the row over): lease it.
        until = datetime.now(UTC) + timedelta(seconds=lease_duration)
        if await store.hand_off(record.id, record.attempts, until):
            return Leased()
        # The row moved on meanwhile (it ended, or was handed back): look again.
    return Duplicate(None)
