"""Flow control in the database: claims through rate and concurrency limits, the release of
tasks waiting for a slot, and quotas at submit. SQLAlchemy Core, both dialects.

Every limit is cluster-wide because every decision is taken in one transaction holding the
key's lock (a transaction-scoped advisory lock on PostgreSQL; SQLite has one writer):

- **Rate** (GCRA): each key keeps the theoretical arrival time `tat` of its starts in
  `taskq_rate_limits`. A start is allowed while `tat - (burst - 1/2) / rate <= now` (half an
  interval of slack for the jitter of turns coming due), and moves `tat` on by `1 / rate`:
  no window of one period ever holds more than rate x period + burst starts. A task that may
  not start yet is given a turn after those held back before it (`booked`), as a `scheduled`
  row held by "rate" that the leader publishes then. A new task never starts ahead of tasks
  waiting their turn; a turn that comes too late to start (the leader was late, and the
  turns behind it came due together) goes to the back of the line.
- **Concurrency**: the slots in use are the key's `running` rows, counted, so a slot is free
  again whenever its task stops running, however that happens (an outcome, a retry, the
  leader requeueing a dead worker's task once its lease lapsed). A task without a free slot
  waits `scheduled`, held by "slots" with no `run_at`; an attempt's end makes the oldest
  waiters due (`release_slots`), and the leader's sweep does so for any key with free slots.
- **Quota**: the key's unfinished rows, counted in the submit's transaction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, or_, select, text, update

from taskq.exceptions import QuotaExceeded
from taskq.status import TaskStatus
from taskq.store import records, statements
from taskq.store.async_core import Connection
from taskq.store.engine import clock, upsert_rows
from taskq.store.records import Held
from taskq.store.tables import rate_limits, tasks

_c = tasks.c
RATE, SLOTS = "rate", "slots"
# Waiters for a slot made due per key in one release (the leader's sweep does the rest).
RELEASE_AT_ONCE = 100
_UNFINISHED = (TaskStatus.QUEUED.value, TaskStatus.SCHEDULED.value, TaskStatus.RUNNING.value)
_EPSILON = 1e-6  # seconds: float noise, never a real gap between starts


async def claim_limited(
    conn: Connection, claims: Sequence[records.ClaimRequest], scope: str
) -> tuple[list[records.ClaimRequest], dict[str, records.Claimed], dict[str, Held]]:
    """Decide the claims of tasks with limits: → (those to claim as usual, those started
    here, those held back).

    Only a row that would start now (queued, or scheduled and due, of the claim's name and
    queue) is decided, and started here if its limits allow; any other claim goes on as
    usual, to be refused or taken over."""
    found, due_by = await _rows(conn, [c.task_id for c in claims])
    starting = [(c, found[c.task_id]) for c in claims if _starts(found.get(c.task_id), c, due_by)]
    if not starting:
        return list(claims), {}, {}
    rate_keys = {row.limits[RATE][0] for _, row in starting if RATE in row.limits}
    slot_keys = {row.limits[SLOTS][0] for _, row in starting if SLOTS in row.limits}
    now = await lock(conn, rate_keys | slot_keys, scope)  # (starts count from then)
    used = await running_per_key(conn, slot_keys)
    buckets = await _buckets(conn, rate_keys)
    held: dict[str, Held] = {}
    for claim, row in starting:
        refusal = _refusal(row, used, buckets, now)
        if refusal is not None:
            held[claim.task_id] = refusal
        elif SLOTS in row.limits:
            used[row.limits[SLOTS][0]] += 1
    await _save_buckets(conn, buckets)
    await _hold(conn, held)
    started = await _start(conn, [c for c, _ in starting if c.task_id not in held])
    decided = {c.task_id for c, _ in starting}
    return [c for c in claims if c.task_id not in decided], started, held


async def _start(
    conn: Connection, claims: Sequence[records.ClaimRequest]
) -> dict[str, records.Claimed]:
    """Mark these rows `running` (locked and checked by `_rows` in this transaction, so
    found by primary key alone), counting the attempt and the delivery."""
    by_worker: dict[str, list[str]] = {}
    for claim in claims:
        by_worker.setdefault(claim.worker_id, []).append(claim.task_id)
    started: dict[str, records.Claimed] = {}
    for worker_id, ids in by_worker.items():
        statement = (
            update(tasks)
            .where(_c.id.in_(ids))
            .values(**statements.STARTED, worker_id=worker_id, started_at=records.now())
            .returning(*statements.CLAIMED_COLUMNS)
        )
        started.update(statements.claimed_of(await conn.execute(statement)))
    return started


@dataclasses.dataclass(slots=True)
class _Bucket:
    """A rate key: `tat`, the GCRA's theoretical arrival time of starts; `booked`, the end of
    the turns given to tasks held back (epoch seconds)."""

    tat: float
    booked: float
    per_second: float
    burst: int
    changed: bool = False


def _refusal(row: Any, used: Counter[str], buckets: dict[str, _Bucket], now: float) -> Held | None:
    """Why this row may not start now (None: it may; its slot or rate token is taken)."""
    if SLOTS in row.limits:
        key, most = row.limits[SLOTS]
        if used[key] >= most:
            return Held(SLOTS, key, None)
    if RATE not in row.limits:
        return None
    key, per_second, burst = row.limits[RATE]
    bucket = buckets.setdefault(key, _Bucket(now, now, per_second, burst))
    bucket.per_second, bucket.burst, bucket.changed = per_second, burst, True
    interval = 1.0 / per_second
    start = max(bucket.tat, now)
    # Half an interval of slack for the jitter of turns coming due: still never more than
    # rate x period + burst starts in a period.
    allowed = start - (burst - 0.5) * interval <= now + _EPSILON
    queue_ahead = row.held_by != RATE and bucket.booked > now + _EPSILON
    if allowed and not queue_ahead:
        bucket.tat = start + interval
        return None
    # Its turn: after every task held back before it (or, at the front, when a start is free).
    turn = max(bucket.booked, start - (burst - 1) * interval)
    bucket.booked = turn + interval
    return Held(RATE, key, datetime.fromtimestamp(turn, UTC))


async def _rows(conn: Connection, task_ids: Sequence[str]) -> tuple[dict[str, Any], float]:
    """The claims' rows, locked, and the transaction's "now" (as the claim's own check of
    `run_at` sees it), in one statement."""
    now = func.extract("epoch", func.now()) if conn.dialect.name == "postgresql" else None
    query = (
        select(
            _c.id,
            _c.name,
            _c.queue,
            _c.state,
            _c.run_at,
            _c.limits,
            _c.held_by,
            (now if now is not None else _c.attempts).label("now"),
        )
        .where(_c.id.in_(list(task_ids)))
        .with_for_update()
    )
    found = {str(row.id): row for row in await conn.execute(query)}
    if now is None or not found:
        return found, time.time()
    return found, float(next(iter(found.values())).now)


def _starts(row: Any, claim: records.ClaimRequest, now: float) -> bool:
    """Whether the claim would start this row now (and its limits must say whether)."""
    if row is None or not row.limits or (claim.name, claim.queue) != (row.name, row.queue):
        return False
    if row.state == TaskStatus.QUEUED.value:
        return True
    run_at = records.aware(row.run_at)
    return row.state == TaskStatus.SCHEDULED.value and (
        run_at is not None and run_at.timestamp() <= now
    )


async def _now(conn: Connection, *, after_waiting: bool = False) -> float:
    """Epoch seconds by the database's clock (this process's on SQLite): the transaction's
    start, or with `after_waiting` the moment of asking (a lock may have kept it waiting)."""
    if conn.dialect.name != "postgresql":
        return time.time()
    clock = func.clock_timestamp() if after_waiting else func.now()
    return float((await conn.execute(select(func.extract("epoch", clock)))).scalar_one())


async def lock(conn: Connection, keys: Iterable[str], scope: str) -> float:
    """Hold each key's lock until this transaction ends (PostgreSQL; in a sorted order, so
    two transactions never wait for each other; SQLite has one writer: nothing to do).
    → epoch seconds by the database's clock once they are held."""
    numbers = sorted({_lock_number(scope, key) for key in keys})
    if conn.dialect.name != "postgresql" or not numbers:
        return await _now(conn, after_waiting=True)
    held = await conn.execute(
        text(
            "SELECT extract(epoch FROM max(clock_timestamp())) FROM ("
            "SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) k) AS locked"
        ),
        {"keys": numbers},
    )
    return float(held.scalar_one())


def _lock_number(scope: str, key: str) -> int:
    digest = hashlib.blake2b(f"{scope}taskq-limit:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def running_per_key(conn: Connection, keys: Iterable[str]) -> Counter[str]:
    """Slots in use: running tasks per concurrency key."""
    keys = list(keys)
    if not keys:
        return Counter()
    query = (
        select(_c.slot_key, func.count())
        .where(
            _c.slot_key.in_(keys),
            _c.state == TaskStatus.RUNNING.value,
        )
        .group_by(_c.slot_key)
    )
    return Counter(dict((await conn.execute(query)).all()))


async def _buckets(conn: Connection, keys: set[str]) -> dict[str, _Bucket]:
    if not keys:
        return {}
    query = select(rate_limits).where(rate_limits.c.key.in_(list(keys)))
    return {
        row.key: _Bucket(row.tat, row.booked, row.per_second, row.burst)
        for row in await conn.execute(query)
    }


async def _save_buckets(conn: Connection, buckets: dict[str, _Bucket]) -> None:
    changed = [
        {"key": key, "tat": b.tat, "booked": b.booked, "per_second": b.per_second, "burst": b.burst}
        for key, b in buckets.items()
        if b.changed
    ]
    if changed:
        await conn.execute(upsert_rows(conn, rate_limits, changed, key="key"))


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


async def _hold(conn: Connection, held: Mapping[str, Held]) -> None:
    if held:
        await conn.execute(
            _HOLD,
            [{"b_id": i, "b_until": h.until, "b_held": h.reason} for i, h in held.items()],
        )


async def release_slots(conn: Connection, keys: Iterable[str], scope: str) -> int:
    """Make due the oldest tasks waiting for a slot of these keys, as many as are free
    (at most `RELEASE_AT_ONCE` per key); → how many (the caller wakes the leader)."""
    keys = sorted(set(keys))
    if not keys:
        return 0
    await lock(conn, keys, scope)
    used = await running_per_key(conn, keys)
    place = func.row_number().over(partition_by=_c.slot_key, order_by=(_c.created_at, _c.id))
    waiting = (
        select(_c.id, _c.slot_key, _c.limits, place.label("place"))
        .where(
            _c.slot_key.in_(keys),
            _c.state == TaskStatus.SCHEDULED.value,
            _c.held_by == SLOTS,
            _c.run_at.is_(None),
        )
        .subquery()
    )
    rows = await conn.execute(select(waiting).where(waiting.c.place <= RELEASE_AT_ONCE))
    due = [str(row.id) for row in rows if row.place <= row.limits[SLOTS][1] - used[row.slot_key]]
    if due:
        await conn.execute(
            update(tasks)
            .where(_c.id.in_(due), _c.state == TaskStatus.SCHEDULED.value)
            .values(run_at=clock(conn))
        )
    return len(due)


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
