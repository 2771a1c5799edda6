"""Cancelling tasks: one statement for many, then an event or a word to their workers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from taskq import protocol
from taskq.client.events import announce, event
from taskq.status import TaskStatus

if TYPE_CHECKING:
    from taskq.client.runtime import Runtime


async def cancel_many(runtime: Runtime, task_ids: Iterable[str]) -> dict[str, bool]:
    """Cancel every task given; → for each id, whether it was cancelled (False: it had
    already finished, or there is no such task)."""
    ids = list(dict.fromkeys(task_ids))
    states = await runtime.store.cancel_many(ids)
    for task_id, (state, name, queue) in states.items():
        if state is TaskStatus.CANCELLED:
            cancelled = event(task_id, state, name=name, queue=queue)
            await announce(runtime.broker, cancelled, runtime.event_signer)
        else:  # running: its worker must be told
            await runtime.broker.publish_control(protocol.encode_control("cancel", task_id))
    return {task_id: task_id in states for task_id in ids}
