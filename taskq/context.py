"""What a running task knows about itself: `taskq.context()`."""

from __future__ import annotations

import dataclasses
from contextvars import ContextVar

from taskq.exceptions import TaskqError

_current: ContextVar[TaskContext] = ContextVar("taskq_task_context")


@dataclasses.dataclass(frozen=True, slots=True)
class TaskContext:
    """The task being run: its id, registered name, queue and attempt (1 on first run)."""

    id: str
    name: str
    queue: str
    attempt: int


def context() -> TaskContext:
    """The current task's context; only valid inside a task run by a worker."""
    try:
        return _current.get()
    except LookupError:
        raise TaskqError("taskq.context() was called outside a running task") from None
