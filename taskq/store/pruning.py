"""Retention: deleting finished tasks (and their attempts) older than a cutoff, in batches.

Each batch is one short transaction that deletes at most `limit` rows, found through the
(state, created_at) index: a task finished before the cutoff was also created before it.
Unfinished tasks are never touched, nor dead-lettered ones unless asked (their dead letter
needs the row to be replayed). Rows of processes that stopped long ago go the same way, and
those of workflows none of whose steps is left.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, exists, func, select

from taskq.status import FINAL
from taskq.store.async_core import Connection
from taskq.store.tables import attempts, tasks, workers, workflows

_c = tasks.c
_FINAL = tuple(sorted(state.value for state in FINAL))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PruneRule:
    """Finished tasks that ended before `cutoff`: of the task names in `names` (None: of
    every name), leaving out those in `except_names`."""

    cutoff: datetime
    names: Collection[str] | None = None
    except_names: Collection[str] = ()
    include_dead: bool = False

    def condition(self) -> ColumnElement[bool]:
        parts = [
            _c.state.in_(_FINAL),
            _c.created_at < self.cutoff,
            _c.finished_at < self.cutoff,
        ]
        if not self.include_dead:
            parts.append(_c.dead_reason.is_(None))
        if self.names is not None:
            parts.append(_c.name.in_(list(self.names)))
        if self.except_names:
            parts.append(_c.name.not_in(list(self.except_names)))
        return and_(*parts)


async def prune(conn: Connection, rule: PruneRule, limit: int) -> int:
    """Delete up to `limit` tasks that `rule` matches, with their attempts; → how many."""
    victims = select(_c.id).where(rule.condition()).order_by(_c.created_at).limit(limit)
    if conn.dialect.name == "postgresql":
        # One statement: the ids never travel to the worker (its loop runs the leader too).
        chosen = victims.with_for_update(skip_locked=True).cte("victims")
        ids = select(chosen.c.id)
        gone_attempts = delete(attempts).where(attempts.c.task_id.in_(ids)).cte("gone_attempts")
        gone = delete(tasks).where(_c.id.in_(ids)).returning(_c.id).cte("gone")
        counted = select(func.count()).select_from(gone).add_cte(gone_attempts)
        return int((await conn.execute(counted)).scalar_one())
    found = [str(row.id) for row in await conn.execute(victims)]
    if not found:
        return 0
    await conn.execute(delete(attempts).where(attempts.c.task_id.in_(found)))
    # (SQLite: the store's one writer at a time keeps the rows as selected until here.)
    deleted = await conn.execute(delete(tasks).where(_c.id.in_(found)))
    return int(deleted.rowcount)


async def count(conn: Connection, rule: PruneRule) -> int:
    """How many tasks `rule` matches (what `prune` would delete, all batches together)."""
    matching = select(func.count()).select_from(tasks).where(rule.condition())
    return int((await conn.execute(matching)).scalar_one())


async def forget_workers(conn: Connection, before: datetime) -> int:
    """Delete the rows of processes that stopped (or died) before `before`; → how many."""
    gone = delete(workers).where(workers.c.state != "running", workers.c.heartbeat_at < before)
    return int((await conn.execute(gone)).rowcount)


async def forget_workflows(conn: Connection, before: datetime) -> int:
    """Delete the rows of workflows submitted before `before` whose steps are all gone
    (pruned); → how many."""
    steps_left = exists().where(_c.workflow_id == workflows.c.id)
    gone = delete(workflows).where(workflows.c.created_at < before, ~steps_left)
    return int((await conn.execute(gone)).rowcount)
