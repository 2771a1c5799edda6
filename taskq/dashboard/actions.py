"""What an authorised user may change: cancel a task, retry one that ended without
succeeding, replay or purge a queue's dead letters. Each goes through the client's own
operations, so it keeps their guarantees (a replayed task is published by the leader in the
transaction that marks it queued)."""

from __future__ import annotations

from collections.abc import Sequence

from taskq.app import App


class Refused(Exception):
    """An action that does not apply (a 409 with this message)."""


async def cancel(app: App, task_id: str) -> dict[str, object]:
    cancelled = (await app.cancel_many([task_id]))[task_id]
    if not cancelled:
        raise Refused(f"task {task_id} has already finished, or there is no such task")
    return {"task_id": task_id, "cancelled": True}


async def retry(app: App, task_id: str) -> dict[str, object]:
    """A new attempt for a task that failed, was cancelled or expired: through its queue's
    dead letters when it has one there (which the replay removes), else from its row."""
    record = await app.store.get_task(task_id)
    if record is None:
        raise Refused(f"there is no task {task_id}")
    if not record.state.is_final or record.state.value == "succeeded":
        raise Refused(f"task {task_id} is {record.state}: only a task that ended without "
                      "succeeding can be retried")  # fmt: skip
    replayed = await app.dlq(record.queue).replay([task_id])
    if not replayed and not await app.store.replay([task_id]):
        raise Refused(f"task {task_id} could not be reset (it changed meanwhile): reload")
    return {"task_id": task_id, "retried": True}


async def replay(app: App, queue: str, ids: Sequence[str] | None) -> dict[str, object]:
    """Replay the dead letters named (all of them if `ids` is None)."""
    return {"queue": queue, "replayed": await app.dlq(queue).replay(ids)}


async def purge(app: App, queue: str) -> dict[str, object]:
    return {"queue": queue, "purged": await app.dlq(queue).purge()}
