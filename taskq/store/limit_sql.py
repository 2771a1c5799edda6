"""Flow control's statements as SQLAlchemy Core, both dialects: `CoreIO` for the decisions
in `limits` (SQLite, and PostgreSQL outside a worker's flush), quotas at submit, and what
`taskq limits` shows."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import bindparam, delete, func, or_, select, text, update

from taskq.exceptions import QuotaExceeded
from taskq.status import TaskStatus
from taskq.store import records, statements
from taskq.store.async_core import Connection
from taskq.store.engine import clock, upsert_rows
from taskq.store.limits import RATE, SLOTS, Bucket, Read, Row, lock_number
from taskq.store.records import Held
from taskq.store.tables import rate_limits, tasks

_c = tasks.c
_UNFINISHED = (TaskStatus.QUEUED.value, TaskStatus.SCHEDULED.value, TaskStatus.RUNNING.value)
_EPSILON = 1e-6


class CoreIO:
    """`limits.LimitIO` on a SQLAlchemy connection, in its transaction."""

    def __init__(self, conn: Connection, scope: str) -> None:
        self._conn, self._scope = conn, scope

    async def read(
        self, task_ids: Sequence[str], slot_keys: Iterable[str], rate_keys: Iterable[str]
    ) -> Read:
        rows, due_by = await self._rows(task_ids) if task_ids else ({}, 0.0)
        slot_keys, rate_keys = list(slot_keys), list(rate_keys)
        used, waiting = await self._counts(slot_keys) if slot_keys else (Counter(), Counter())
        buckets = await self._buckets(rate_keys) if rate_keys else {}
        clock = await _now(self._conn, after_waiting=True)
        return Read(rows, due_by, clock, used, waiting, buckets)

    async def write(
        self,
        buckets: Mapping[str, Bucket],
        held: Mapping[str, Held],
        going: Sequence[records.ClaimRequest],
    ) -> dict[str, records.Claimed]:
        if buckets:
            await self._save(buckets)
        if held:
            await self._hold(held)
        return await self._start(going) if going else {}

    async def _rows(self, task_ids: Sequence[str]) -> tuple[dict[str, Row], float]:
        query = (
            select(_c.id, _c.name, _c.queue, _c.state, _c.run_at, _c.limits, _c.held_by)
            .where(_c.id.in_(list(task_ids)))
            .with_for_update()
        )
        found = {str(row.id): Row(str(row.id), *row[1:]) for row in await self._conn.execute(query)}
        return found, await _now(self._conn)

    async def lock(self, keys: Iterable[str]) -> None:
        await lock(self._conn, keys, self._scope)

    async def _counts(self, keys: Iterable[str]) -> tuple[Counter[str], Counter[str]]:
        waiting = (
            select(_c.slot_key, func.count())
            .where(
                _c.slot_key.in_(list(keys)),
                _c.state == TaskStatus.SCHEDULED.value,
                _c.held_by == SLOTS,
                _c.run_at.is_(None),
            )
            .group_by(_c.slot_key)
        )
        found = Counter(dict((await self._conn.execute(waiting)).all()))
        return await running_per_key(self._conn, keys), found

    async def _buckets(self, keys: Iterable[str]) -> dict[str, Bucket]:
        query = select(rate_limits).where(rate_limits.c.key.in_(list(keys))).with_for_update()
        return {
            row.key: Bucket(row.tat, row.booked, row.per_second, row.burst)
            for row in await self._conn.execute(query)
        }

    async def _save(self, buckets: Mapping[str, Bucket]) -> None:
        rows = [
            {"key": k, "tat": b.tat, "booked": b.booked, "per_second": b.per_second,
             "burst": b.burst}
            for k, b in buckets.items()
        ]  # fmt: skip
        await self._conn.execute(upsert_rows(self._conn, rate_limits, rows, key="key"))

    async def _hold(self, held: Mapping[str, Held]) -> None:
        values = [{"b_id": i, "b_until": h.until, "b_held": h.reason} for i, h in held.items()]
        await self._conn.execute(_HOLD, values)

    async def _start(self, claims: Sequence[records.ClaimRequest]) -> dict[str, records.Claimed]:
        by_worker: dict[str, list[str]] = {}
        for claim in claims:
            by_worker.setdefault(claim.worker_id, []).append(claim.task_id)
        started: dict[str, records.Claimed] = {}
        for worker_id, ids in by_worker.items():
            statement = (
                update(tasks)
                .where(_c.id.in_(ids))  # (locked and checked: the primary key alone)
                .values(**statements.STARTED, worker_id=worker_id, started_at=records.now())
                .returning(*statements.CLAIMED_COLUMNS)
            )
            started.update(statements.claimed_of(await self._conn.execute(statement)))
        return started

    async def release(self, keys: Sequence[str], most: int) -> int:
        used = await running_per_key(self._conn, keys)
        due = [w.id for w in await self._waiters(keys, most) if w.place <= w.limit - used[w.key]]
        if due:
            await self._conn.execute(
                update(tasks)
                .where(_c.id.in_(due), _c.state == TaskStatus.SCHEDULED.value)
                .values(run_at=clock(self._conn))
            )
        return len(due)

    async def _waiters(self, keys: Sequence[str], most: int) -> list[_Waiter]:
        place = func.row_number().over(partition_by=_c.slot_key, order_by=(_c.created_at, _c.id))
        waiting = (
            select(_c.id, _c.slot_key, _c.limits, place.label("place"))
            .where(
                _c.slot_key.in_(list(keys)),
                _c.state == TaskStatus.SCHEDULED.value,
                _c.held_by == SLOTS,
                _c.run_at.is_(None),
            )
            .subquery()
        )
        rows = await self._conn.execute(select(waiting).where(waiting.c.place <= most))
        return [_Waiter(str(r.id), r.slot_key, r.place, r.limits[SLOTS][1]) for r in rows]


class _Waiter(NamedTuple):
    """A task waiting for a slot: its place in its key's line (1 first) and the key's limit."""

    id: str
    key: str
    place: int
    limit: int


_HOLD = (
    update(tasks)
    .where(
        _c.id == bindparam("b_id"),
        or_(_c.state == TaskStatus.QUEUED.value, _c.state == TaskStatus.SCHEDULED.value),
    )
    .values(
        state=TaskStatus.SCHEDULED.value,
        run_at=bindparam("b_until", type_=_c.run_at.type),
        held_by=bindparam("b_held"),
    )
)


async def _now(conn: Connection, *, after_waiting: bool = False) -> float:
    """Epoch seconds by the database's clock (this process's on SQLite): the transaction's
    start, or with `after_waiting` the moment of asking (a lock may have kept it waiting)."""
    if conn.dialect.name != "postgresql":
        return time.time()
    moment = func.clock_timestamp() if after_waiting else func.now()
    return float((await conn.execute(select(func.extract("epoch", moment)))).scalar_one())


async def lock(conn: Connection, keys: Iterable[str], scope: str) -> None:
    """Hold each key's lock until this transaction ends (PostgreSQL; in a sorted order, so
    two transactions never wait for each other). SQLite has one writer: nothing to do."""
    numbers = sorted({lock_number(scope, key) for key in keys})
    if conn.dialect.name == "postgresql" and numbers:
        await conn.execute(
            text("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:keys AS bigint[])) k"),
            {"keys": numbers},
        )


async def running_per_key(conn: Connection, keys: Iterable[str]) -> Counter[str]:
    """Slots in use: running tasks per concurrency key."""
    query = (
        select(_c.slot_key, func.count())
        .where(_c.slot_key.in_(list(keys)), _c.state == TaskStatus.RUNNING.value)
        .group_by(_c.slot_key)
    )
    return Counter(dict((await conn.execute(query)).all()))


async def keys_with_waiters(conn: Connection, limit: int) -> list[str]:
    """Concurrency keys that have tasks waiting for a slot (for the leader's sweep)."""
    query = (
        select(_c.slot_key)
        .where(
            _c.slot_key.is_not(None),
            _c.state == TaskStatus.SCHEDULED.value,
            _c.held_by == SLOTS,
            _c.run_at.is_(None),
        )
        .distinct()
        .limit(limit)
    )
    return [key for (key,) in await conn.execute(query)]


async def check_quotas(conn: Connection, rows: Sequence[records.NewTask], scope: str) -> None:
    """Refuse the rows (`QuotaExceeded`, naming the first key over) if any key's unfinished
    tasks and these would go past its quota; the caller inserts them in this transaction."""
    asked: Counter[str] = Counter()
    quotas: dict[str, int] = {}
    for row in rows:
        if row.limits and "quota" in row.limits:
            key, most = row.limits["quota"]
            asked[key] += 1
            quotas[key] = most
    if not asked:
        return
    await lock(conn, asked, scope)
    query = (
        select(_c.quota_key, func.count())
        .where(_c.quota_key.in_(list(asked)), _c.state.in_(_UNFINISHED))
        .group_by(_c.quota_key)
    )
    unfinished = Counter(dict((await conn.execute(query)).all()))
    for key in sorted(asked):
        if unfinished[key] + asked[key] > quotas[key]:
            adding = "this task" if asked[key] == 1 else f"these {asked[key]} tasks"
            raise QuotaExceeded(
                f"quota of {quotas[key]:,} unfinished tasks for {key!r} reached: "
                f"{unfinished[key]:,} are unfinished, so {adding} would go past it; nothing "
                "was stored: submit again once some have finished",
                key=key,
                quota=quotas[key],
                unfinished=unfinished[key],
            )


async def usage(conn: Connection) -> list[dict[str, Any]]:
    """Every limit key in use now, as `taskq limits` shows it: rate keys with the starts
    allowed at once and the tasks holding a reservation; concurrency keys with slots in use
    and tasks waiting for one; quota keys with their unfinished tasks."""
    now = await _now(conn)
    found = [*await _rate_usage(conn, now), *await _slot_usage(conn), *await _quota_usage(conn)]
    return sorted(found, key=lambda row: (row["key"], row["kind"]))


async def _rate_usage(conn: Connection, now: float) -> list[dict[str, Any]]:
    waiting_query = (
        select(_c.rate_key, func.count())
        .where(_c.state == TaskStatus.SCHEDULED.value, _c.held_by == RATE)
        .group_by(_c.rate_key)
    )
    waiting = dict((await conn.execute(waiting_query)).all())
    found = []
    for row in await conn.execute(select(rate_limits)):
        interval = 1.0 / row.per_second
        slack = now + (row.burst - 1) * interval - max(row.tat, now)
        found.append(
            {
                "kind": RATE,
                "key": row.key,
                "limit": f"{row.per_second:g}/s, burst {row.burst}",
                "available": max(0, min(row.burst, int(slack / interval + _EPSILON) + 1)),
                "in_use": None,
                "waiting": waiting.get(row.key, 0),
            }
        )
    return found


async def _slot_usage(conn: Connection) -> list[dict[str, Any]]:
    query = (
        select(_c.slot_key, _c.state, func.count(), func.max(_c.limits[(SLOTS, 1)].as_integer()))
        .where(_c.slot_key.is_not(None), _c.state.in_(_UNFINISHED[1:]))
        .group_by(_c.slot_key, _c.state)
    )
    found: dict[str, dict[str, Any]] = {}
    for key, state, count, most in await conn.execute(query):
        row = found.setdefault(
            key, {"kind": SLOTS, "key": key, "limit": most, "in_use": 0, "waiting": 0}
        )
        row["limit"] = max(row["limit"], most)
        row["in_use" if state == TaskStatus.RUNNING.value else "waiting"] += count
    for row in found.values():
        row["available"] = max(0, row["limit"] - row["in_use"])
    return list(found.values())


async def _quota_usage(conn: Connection) -> list[dict[str, Any]]:
    query = (
        select(_c.quota_key, func.count(), func.max(_c.limits[("quota", 1)].as_integer()))
        .where(_c.quota_key.is_not(None), _c.state.in_(_UNFINISHED))
        .group_by(_c.quota_key)
    )
    return [
        {
            "kind": "quota",
            "key": key,
            "limit": most,
            "in_use": count,
            "available": max(0, most - count),
            "waiting": None,
        }
        for key, count, most in await conn.execute(query)
    ]


async def forget_idle_rates(conn: Connection, idle_for: float) -> int:
    """Delete the rows of rate keys unused for `idle_for` seconds (a bucket that full holds
    nothing a new row would not); → how many."""
    before = await _now(conn) - idle_for
    gone = await conn.execute(
        delete(rate_limits).where(rate_limits.c.tat < before, rate_limits.c.booked < before)
    )
    return int(gone.rowcount or 0)
