"""Retention's verbs that depend on the tasks table's shape: on the partitioned table
(`taskq.store.partitions`), whole partitions go first and row deletes spare the partition
the cutoff falls in; on the plain table (and SQLite) these do nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from taskq.store import partitions
from taskq.store.async_core import Connection
from taskq.store.pruning import PruneRule

T = TypeVar("T")


class RetentionOperations:
    """Needs the store's `_run` (one transaction) and `dialect`."""

    _retirement: partitions.Retirement | None = None

    @property
    def dialect(self) -> str:
        raise NotImplementedError

    async def _run(self, operation: Callable[[Connection], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def retire_partitions(
        self, rules: Sequence[PruneRule], now: datetime | None = None
    ) -> partitions.Step:
        """One step of retention by partitions (create ahead, detach, delete a batch of a
        detached one's attempts, drop it); → what it did (`kind` "" once nothing is left)."""
        if self.dialect != "postgresql":
            return partitions.Step()
        if self._retirement is None:
            self._retirement = partitions.Retirement()
        memory, moment = self._retirement, now or datetime.now(UTC)

        async def step(conn: Connection) -> partitions.Step:
            if not await partitions.is_partitioned(conn):
                return partitions.Step()
            return await partitions.retire_step(conn, rules, moment, memory)

        return await self._run(step)

    async def row_rules(self, rules: Sequence[PruneRule]) -> list[PruneRule]:
        """The rules for row deletes: as given, or on the partitioned table with each cutoff
        moved back to the start of the partition it falls in."""
        if self.dialect != "postgresql" or not rules:
            return list(rules)

        async def read(conn: Connection) -> list[PruneRule]:
            if not await partitions.is_partitioned(conn):
                return list(rules)
            return partitions.floored(rules, await partitions.partitions(conn))

        return await self._run(read)
