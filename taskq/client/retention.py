"""Which finished tasks the leader deletes: the app's TASKQ_RETENTION, and each task's own
`retention=` where it set one."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from taskq.config import parse_retention
from taskq.store import PruneRule

if TYPE_CHECKING:
    from taskq.client.app import App


def rules(app: App, now: datetime) -> list[PruneRule]:
    """One rule per task with its own period (or "off"), then one for every other name —
    those of tasks this app does not know included."""
    default = app.settings.retention_period
    own: dict[str, timedelta | None] = {
        name: parse_retention(task.retention, f"task {name!r}: retention")
        for name, task in app.tasks.items()
        if task.retention is not None
    }
    found = [
        PruneRule(cutoff=now - period, names=[name])
        for name, period in own.items()
        if period is not None
    ]
    if default is not None:
        found.append(PruneRule(cutoff=now - default, except_names=list(own)))
    return found
