"""The store's verbs for workflows, and the flush that releases their steps (a part of
`Store`, kept apart to keep each module short)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from taskq.status import TaskStatus
from taskq.store import held, lifecycle, pg, workflows
from taskq.store.async_core import Connection
from taskq.store.records import ClaimRequest, NewTask, Outcome, TaskRecord, Written

T = TypeVar("T")

EndedStep = workflows.EndedStep


class WorkflowOperations:
    """Needs the store's `_run` (one transaction), `_pg` and `_due_channel`."""

    _pg: held.PgPaths | None
    _due_channel: str

    async def _run(self, operation: Callable[[Connection], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def insert_workflow(
        self, workflow_id: str, created_at: datetime, output: Any, rows: Sequence[NewTask]
    ) -> None:
        """Every step's row and the workflow's, in one transaction; the steps without
        parents are due at once (the leader is woken to publish any the caller does not)."""

        async def insert(conn: Connection) -> None:
            await workflows.insert(conn, workflow_id, created_at, output, rows)
            await lifecycle.wake_leader(conn, self._due_channel)

        await self._run(insert)

    async def workflow(self, workflow_id: str) -> tuple[int, Any, datetime] | None:
        """→ (steps, output shape, created at), or None if no such workflow exists."""
        return await self._run(lambda conn: workflows.get(conn, workflow_id))

    async def workflow_step_ids(self, workflow_id: str) -> list[str]:
        return await self._run(lambda conn: workflows.step_ids(conn, workflow_id))

    async def workflow_states(self, workflow_id: str) -> dict[TaskStatus, int]:
        return await self._run(lambda conn: workflows.count_states(conn, workflow_id))

    async def ended_steps(self, workflow_id: str, steps: Sequence[int]) -> dict[int, EndedStep]:
        """step → (state, result, error, task id) of those of `steps` that have ended."""
        return await self._run(lambda conn: workflows.ended_steps(conn, workflow_id, steps))

    async def first_failure(self, workflow_id: str) -> TaskRecord | None:
        return await self._run(lambda conn: workflows.first_failure(conn, workflow_id))

    async def _flush(
        self, fetch: pg.Fetch | None, claims: Sequence[ClaimRequest], outcomes: Sequence[Outcome]
    ) -> Written:
        """One flush of a writer. On PostgreSQL the outcomes of workflow steps go, with the
        release of the steps waiting for them, in a transaction of their own; everything
        else is the one-statement flush (`pg.flush`)."""
        channel = self._due_channel
        if fetch is None:
            return await self._run(lambda c: lifecycle.write_batch(c, claims, outcomes, channel))
        steps = [outcome for outcome in outcomes if outcome.in_workflow]
        if not steps:
            return await pg.flush(fetch, claims, outcomes)
        released = await self._run(lambda c: lifecycle.write_batch(c, (), steps, channel))
        plain = [outcome for outcome in outcomes if not outcome.in_workflow]
        if not claims and not plain:
            return released
        written = await pg.flush(fetch, claims, plain)
        return Written(claimed=written.claimed, stale=written.stale | released.stale)
