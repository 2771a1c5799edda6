"""The periodic schedules' rows: the last tick handled (so a new leader neither repeats nor
skips one), and what the leader last saw of each schedule (for `taskq schedules` and the
dashboard, which have no app to ask)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from sqlalchemy import func, select, update

from taskq.store.async_core import Connection
from taskq.store.engine import upsert_increasing
from taskq.store.records import aware, now
from taskq.store.tables import schedules

T = TypeVar("T")
_s = schedules.c


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleRecord:
    name: str
    task: str | None  # None: no leader has described it yet (a row from before 0011)
    spec: str | None
    timezone: str | None
    next_tick: datetime | None
    ticked_at: datetime | None  # the last tick submitted; None: never


class ScheduleOperations:
    """Needs the store's `_run` (one transaction)."""

    async def _run(self, operation: Callable[[Connection], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def last_ticks(self) -> dict[str, datetime]:
        """Periodic schedule name → the newest tick handled (at first: when first seen)."""
        return await self._run(_last_ticks)

    async def record_tick(self, name: str, tick: datetime) -> None:
        """Remember the newest tick handled for `name` (never moves backwards)."""
        await self._run(lambda conn: _record_tick(conn, name, tick))

    async def describe_schedule(
        self,
        name: str,
        *,
        task: str,
        spec: str,
        timezone: str,
        next_tick: datetime,
        ticked_at: datetime | None,
    ) -> None:
        """What the leader sees of a schedule it has recorded; `ticked_at` only moves on."""
        statement = (
            update(schedules)
            .where(_s.name == name)
            .values(
                task=task,
                spec=spec,
                timezone=timezone,
                next_tick=next_tick,
                ticked_at=func.coalesce(ticked_at, _s.ticked_at),
            )
        )
        await self._run(lambda conn: conn.execute(statement))

    async def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule a leader has recorded, by name."""
        return await self._run(_list_schedules)


async def _last_ticks(conn: Connection) -> dict[str, datetime]:
    rows = await conn.execute(select(_s.name, _s.last_tick))
    return {row.name: aware(row.last_tick) or now() for row in rows}


async def _record_tick(conn: Connection, name: str, tick: datetime) -> None:
    values = {"name": name, "last_tick": tick}
    await conn.execute(upsert_increasing(conn, schedules, values, key="name", column="last_tick"))


async def _list_schedules(conn: Connection) -> list[ScheduleRecord]:
    rows = await conn.execute(select(schedules).order_by(_s.name))
    return [
        ScheduleRecord(
            name=row.name,
            task=row.task,
            spec=row.spec,
            timezone=row.timezone,
            next_tick=aware(row.next_tick),
            ticked_at=aware(row.ticked_at),
        )
        for row in rows
    ]
