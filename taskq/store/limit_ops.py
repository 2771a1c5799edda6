"""The store's verbs for flow control (a part of `Store`, kept apart to keep each module
short): submits under a quota, the leader's release of tasks waiting for a slot, and what
`taskq limits` shows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from taskq.store import limit_sql, statements
from taskq.store.async_core import Connection
from taskq.store.lifecycle import release_slots
from taskq.store.records import NewTask

T = TypeVar("T")


class LimitOperations:
    """Needs the store's `_run` (one transaction), `_due_channel`, `_scope`."""

    _due_channel: str
    _scope: str

    async def _run(self, operation: Callable[[Connection], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def _insert_under_quota(self, rows: Sequence[NewTask], *, due_now: bool) -> str:
        """Check the rows' quotas and insert them in one transaction (`QuotaExceeded`:
        nothing inserted); → the first row's id (an earlier task's, if its idempotency key
        was taken)."""
        scope = self._scope

        async def insert(conn: Connection) -> str:
            await limit_sql.check_quotas(conn, rows, scope)
            if len(rows) == 1:
                return await statements.insert_task(conn, rows[0], due_now=due_now)
            await statements.insert_tasks(conn, rows, due_now=due_now)
            return rows[0].id

        return await self._run(insert)

    async def _check_quotas(self, conn: Connection, rows: Sequence[NewTask]) -> None:
        """`limit_sql.check_quotas` in a transaction of the caller's."""
        await limit_sql.check_quotas(conn, rows, self._scope)

    async def release_free_slots(self, limit: int) -> int:
        """Tasks waiting for a concurrency slot that is free (its holder ended in a way no
        flush saw: a lapsed lease, a cancel) become due; → how many (the leader's sweep)."""
        channel, scope = self._due_channel, self._scope

        async def release(conn: Connection) -> int:
            keys = await limit_sql.keys_with_waiters(conn, limit)
            return await release_slots(conn, keys, channel, scope)

        return await self._run(release)

    async def forget_idle_rates(self, idle_for: float) -> int:
        """Delete the rows of rate-limit keys unused for `idle_for` seconds."""
        return await self._run(lambda conn: limit_sql.forget_idle_rates(conn, idle_for))

    async def limits_in_use(self) -> list[dict[str, Any]]:
        """Each limit key in use: its kind, limit, and use now (`limit_sql.usage`)."""
        return await self._run(limit_sql.usage)


def under_quota(rows: Sequence[NewTask]) -> bool:
    """Whether any of these rows counts against a quota."""
    return any(row.limits and "quota" in row.limits for row in rows)
