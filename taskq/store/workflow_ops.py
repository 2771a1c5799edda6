"""The store's verbs for workflows, and the flush that releases their steps (a part of
`Store`, kept apart to keep each module short)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from taskq.status import TaskStatus
from taskq.store import lifecycle, limits, pg, pg_limits, statements, workflows
from taskq.store.async_core import Connection
from taskq.store.held import HeldConnection, PgPaths
from taskq.store.records import ClaimRequest, Held, NewTask, Outcome, TaskRecord, Written

T = TypeVar("T")

EndedStep = workflows.EndedStep


class WorkflowOperations:
    """Needs the store's `_run` (one transaction), `_pg`, `_due_channel`, `_due_here`,
    `_scope`."""

    _pg: PgPaths | None
    _due_channel: str
    _scope: str
    _due_here: asyncio.Event

    async def _run(self, operation: Callable[[Connection], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def insert_workflow(
        self, workflow_id: str, created_at: datetime, output: Any, rows: Sequence[NewTask]
    ) -> None:
        """Every step's row and the workflow's, in one transaction; the steps without
        parents are due at once (the caller publishes them, or else the leader)."""

        if self._pg is not None:
            await pg.insert_workflow(self._pg.pooled, workflow_id, created_at, output, rows)
            return
        await self._run(lambda conn: workflows.insert(conn, workflow_id, created_at, output, rows))

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
        """One flush of a writer. On PostgreSQL it is one statement (`pg.flush`), which also
        counts down the steps waiting for workflow steps that succeeded; a step that did not
        succeed may cancel others (`workflows.release`): its outcome goes, with that, in a
        transaction of its own. So do claims of tasks with limits (after the outcomes, whose
        slots are then free) and the release of tasks waiting for a slot an outcome freed."""
        channel, scope = self._due_channel, self._scope
        if fetch is None:
            done = await self._run(
                lambda c: lifecycle.write_batch(c, claims, outcomes, channel, scope)
            )
            if done.released or any(h.until is not None for h in done.held.values()):
                self._due_here.set()  # (no NOTIFY here: the leader is in this process)
            return done
        failed = Written(claimed={})
        unlucky = [o for o in outcomes if _ends_a_step_unsuccessfully(o)]
        if unlucky:
            failed = await self._run(lambda c: lifecycle.write_batch(c, (), unlucky, channel))
            outcomes = [o for o in outcomes if not _ends_a_step_unsuccessfully(o)]
        limited = [c for c in claims if c.limited]
        claims = [c for c in claims if not c.limited]
        with_limits = limited or any(o.slot_key for o in outcomes)
        if with_limits and isinstance(fetch, HeldConnection):
            # One transaction on the writer's own connection, through asyncpg: the flush's
            # statement, then the limited claims and the release of freed slots.
            written, going = await fetch.in_transaction(
                lambda raw: pg_limits.flush(raw, claims, outcomes, limited, channel, scope)
            )
            if going:  # (takeovers and claims to refuse: as any claim)
                taken = await self._run(lambda c: statements.write_batch(c, going, ()))
                written = dataclasses.replace(written, claimed={**written.claimed, **taken.claimed})
            return dataclasses.replace(
                written, stale=written.stale | failed.stale, cancelled=failed.cancelled
            )
        written = Written(claimed={})
        if claims or outcomes:
            written = await pg.flush(fetch, claims, outcomes)
            if written.released:
                await self._run(lambda c: lifecycle.wake_leader(c, channel))
        claimed = dict(written.claimed)
        held: dict[str, Held] = {}
        freed = limits.freed_keys(outcomes, written.stale)
        if limited or freed:
            more, held, _ = await self._run(
                lambda c: lifecycle.claim_then_release(c, limited, freed, channel, scope)
            )
            claimed.update(more)
        return Written(
            claimed=claimed,
            stale=written.stale | failed.stale,
            released=written.released,
            cancelled=failed.cancelled,
            held=held,
        )


def _ends_a_step_unsuccessfully(outcome: Outcome) -> bool:
    """A workflow step's final outcome that may cancel others (`workflows.release`)."""
    return (
        outcome.in_workflow and outcome.state.is_final and outcome.state is not TaskStatus.SUCCEEDED
    )
