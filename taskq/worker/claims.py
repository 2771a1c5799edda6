"""A delivery's claim on its task's row: the attempt it runs as, or why it does not run."""

from __future__ import annotations

from taskq import protocol
from taskq.client.submit import new_task_row
from taskq.store import Claimed, Store, TaskRecord, Writer


async def claim(
    writer: Writer, store: Store, envelope: protocol.Envelope, worker_id: str, *, redelivered: bool
) -> Claimed | TaskRecord | None:
    """The claim (run it); None (a duplicate: final, running elsewhere, or not yet due); or
    the row of another task, when the message reuses an id whose row names another task or
    queue (it must not run in that task's place, nor settle that task's own message)."""

    async def claimed() -> Claimed | None:
        return await writer.claim(
            envelope.id,
            worker_id,
            redelivered=redelivered,
            name=envelope.task,
            queue=envelope.queue,
        )

    if (taken := await claimed()) is not None:
        return taken
    record = await store.get_task(envelope.id)
    if record is None:
        # A message with no row (published by other means): record it, then run it.
        await store.insert_task_if_missing(new_task_row(envelope))
        return await claimed()
    if (record.name, record.queue) != (envelope.task, envelope.queue):
        return record
    return None
