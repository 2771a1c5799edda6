"""The store's reads for listings: tasks by filter, waiting counts, attempts, workers (a
part of `Store`, kept apart to keep each module short)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy import select

from taskq.status import TaskStatus
from taskq.store import coordination, lifecycle, listing
from taskq.store.async_core import Connection
from taskq.store.records import TaskRecord, WorkerRecord
from taskq.store.tables import tasks

T = TypeVar("T")


class ReadOperations:
    """Needs the store's `_run` (one transaction)."""

    async def _run(self, operation: Callable[[Connection], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def find_tasks(
        self,
        *,
        states: Sequence[TaskStatus] = (),
        name: str | None = None,
        queue: str | None = None,
        batch_id: str | None = None,
        workflow_id: str | None = None,
        since: datetime | None = None,
        after: listing.PageMark | None = None,
        limit: int = 100,
    ) -> list[TaskRecord]:
        """Tasks matching every filter given, newest first (after `after`: the next page)."""
        return await self._run(
            lambda conn: listing.find_tasks(
                conn,
                states=states,
                name=name,
                queue=queue,
                batch_id=batch_id,
                workflow_id=workflow_id,
                since=since,
                after=after,
                limit=limit,
            )
        )

    async def count_waiting(self, queues: Sequence[str]) -> dict[str, dict[str, int]]:
        """queue → {state: count} of the not-yet-final tasks of `queues`."""
        return await self._run(lambda conn: listing.count_waiting(conn, queues))

    async def summarise(self, since: datetime) -> listing.Summary:
        """Tasks by queue and state, and finished per minute, since `since` (the overview)."""
        return await self._run(lambda conn: listing.summarise(conn, since))

    async def queued_queues(self) -> list[str]:
        """The queues that tasks wait `queued` in (tagged ones among them), sorted."""
        return await self._run(_queued_queues)

    async def list_attempts(self, task_id: str) -> list[dict[str, object]]:
        return await self._run(lambda conn: lifecycle.list_attempts(conn, task_id))

    async def list_workers(self, *, include_stopped: bool) -> list[WorkerRecord]:
        return await self._run(
            lambda conn: coordination.list_workers(conn, include_stopped=include_stopped)
        )


async def _queued_queues(conn: Connection) -> list[str]:
    # (The index on (state, created_at) finds the queued rows.)
    query = select(tasks.c.queue).where(tasks.c.state == TaskStatus.QUEUED.value).distinct()
    return sorted(row.queue for row in await conn.execute(query))
