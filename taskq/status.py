"""Task states and the rank that makes state writes monotonic."""

from __future__ import annotations

import enum


class TaskStatus(enum.StrEnum):
    """Where a task is in its life. The values are what the `state` column holds."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self in FINAL

    @property
    def rank(self) -> int:
        """A write may only move a task to a state of higher rank (or stay in `running`)."""
        return _RANK[self]


FINAL = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED}
)
_RANK = {
    TaskStatus.SCHEDULED: 0,
    TaskStatus.QUEUED: 1,
    TaskStatus.RUNNING: 2,
    **dict.fromkeys(FINAL, 3),
}
