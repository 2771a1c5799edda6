"""A workflow step's input: the value its parents passed, read from their rows at the
start of each attempt (large lists are never copied into messages)."""

from __future__ import annotations

import dataclasses
from typing import Any

from taskq import protocol
from taskq.exceptions import StoreError
from taskq.status import TaskStatus
from taskq.store import Store, workflows
from taskq.worker.instruments import Attempt


async def with_input(store: Store, attempt: Attempt) -> protocol.Envelope:
    """The attempt's envelope, with the value its step receives (if any) as the first
    positional argument: a parent's result, or for one that did not succeed (a chord with
    `tolerate_failures`) its `TaskFailed`."""
    envelope, claimed = attempt.envelope, attempt.claimed
    if claimed.workflow_id is None or claimed.receives is None:
        return envelope
    steps = workflows.steps_in(claimed.receives)
    ended = await store.ended_steps(claimed.workflow_id, steps)
    missing = sorted(set(steps) - set(ended))
    if missing:  # (a release happens only once every parent has ended)
        raise StoreError(f"workflow step inputs missing: steps {missing} have not ended")
    values: dict[int, Any] = {}
    for step, (state, result, error, task_id) in ended.items():
        if state is TaskStatus.SUCCEEDED:
            values[step] = result
        else:
            kind, message = (error.type, error.message) if error else (state.value, "")
            values[step] = {
                "$taskfailed": [task_id, kind, message, error.traceback if error else ""]
            }
    value = workflows.value_of(claimed.receives, values)
    return dataclasses.replace(envelope, args=[value, *envelope.args])
