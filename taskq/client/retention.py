"""Which finished tasks the leader deletes: the app's TASKQ_RETENTION, and each task's own
`retention=` where it set one."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from taskq.config import parse_retention
from taskq.store import PruneRule

if TYPE_CHECKING:
    from taskq.client.task import Task

OwnRetention = timedelta | Literal["off"] | None  # None: the app's TASKQ_RETENTION


def declared(value: timedelta | str | None, where: str) -> OwnRetention:
    """A task's `retention=`, read once when it is declared (`ConfigurationError` if bad)."""
    if value is None:
        return None
    period = parse_retention(value, where)
    return "off" if period is None else period


def rules(
    tasks: Iterable[Task[Any, Any]], default: timedelta | None, now: datetime
) -> list[PruneRule]:
    """One rule per task with its own period, then one (unless `default` is None: "off")
    for every other name, those of tasks this app does not know included."""
    own = {task.name: task.retention for task in tasks if task.retention is not None}
    found = [
        PruneRule(cutoff=now - period, names=[name])
        for name, period in own.items()
        if isinstance(period, timedelta)
    ]
    if default is not None:
        found.append(PruneRule(cutoff=now - default, except_names=list(own)))
    return found
