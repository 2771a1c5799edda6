"""A workflow step's input: the value its parents passed, read from their rows at the
start of each attempt (large lists are never copied into messages)."""

from __future__ import annotations

import dataclasses

from taskq import protocol
from taskq.store import Store, workflows
from taskq.worker.instruments import Attempt


async def with_input(store: Store, attempt: Attempt) -> protocol.Envelope:
    """The attempt's envelope, with the value its step receives (if any) as the first
    positional argument (`workflows.input_value`)."""
    envelope, claimed = attempt.envelope, attempt.claimed
    if claimed.workflow_id is None or claimed.receives is None:
        return envelope
    ended = await store.ended_steps(claimed.workflow_id, workflows.steps_in(claimed.receives))
    value = workflows.input_value(claimed.receives, ended)
    return dataclasses.replace(envelope, args=[value, *envelope.args])
