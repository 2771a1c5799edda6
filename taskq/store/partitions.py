"""The optional time-partitioned tasks table (PostgreSQL): making it, and retention by it.

`taskq db upgrade --partitioned` turns `taskq_tasks` into a table partitioned by RANGE of
`created_at`, one partition per `days` (7 by default, aligned on Mondays, UTC), with a
DEFAULT partition so that an insert never fails. A converted database's rows stay where
they are: the old table becomes the partition `taskq_tasks_legacy` (MINVALUE to the end of
the current interval), so conversion copies nothing. The leader creates partitions ahead.

Retention then drops a partition once it lies wholly before the rules' cutoff: rows that
no rule deletes (unfinished tasks, dead-lettered ones, names kept longer or for ever, tasks
that finished after the cutoff) are moved to the DEFAULT partition in the transaction that
detaches it, and the detached table's attempts go in batches before it is dropped. A
partition keeping more than `MOVE_MAX` such rows stays, and the rules delete its rows one
by one as on the plain table. Row deletes leave alone the partition the cutoff falls in
(`floored`): its rows go with it, up to one interval later than their retention says.
Only the leader (or `taskq prune`) does this, one short step per call.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import and_, func, not_, or_, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex

from taskq.status import FINAL, TaskStatus
from taskq.store import partition_sql as sql
from taskq.store.async_core import Connection
from taskq.store.pruning import PruneRule
from taskq.store.tables import tasks

logger = logging.getLogger(__name__)

DAYS = 7  # a partition's span unless `taskq db upgrade --partitioned --days` says otherwise
ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)  # a Monday: weekly partitions start on Mondays
AHEAD = 2  # intervals of partitions kept ready past now
MOVE_MAX = 10_000  # rows a partition may keep and still be dropped (they move to DEFAULT)
RECHECK = timedelta(hours=1)  # before a partition that kept too many rows is looked at again
# Tasks of a detached partition whose attempts one step deletes: a step of the plain table's
# row deletes (1,000 tasks, their attempts too) every PRUNE_PAUSE, twice over (attempts are
# narrower, with one index): 20,000 a step took a drain's database from it (performance.md).
ATTEMPT_BATCH = 2_000
LOCK_TIMEOUT = "500ms"  # DDL waits no longer for its lock (others would queue behind it)
_NOT_FINAL = tuple(state.value for state in TaskStatus if state not in FINAL)
_BOUND = re.compile(r"FROM \((.+)\) TO \((.+)\)")
_ZERO_ID = "00000000-0000-0000-0000-000000000000"


@dataclasses.dataclass(frozen=True, slots=True)
class Partition:
    name: str
    low: datetime | None  # None: MINVALUE
    high: datetime | None  # None (and low None): the DEFAULT partition

    @property
    def dated(self) -> bool:
        return self.name.startswith(sql.PREFIX)


@dataclasses.dataclass(slots=True)
class Retirement:
    """What retention remembers between steps (lost on restart: steps are idempotent)."""

    after: dict[str, str] = dataclasses.field(default_factory=dict)  # detached → last id
    kept: dict[str, datetime] = dataclasses.field(default_factory=dict)  # too full, when


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One step's work: "" (nothing to do), "busy", "created", "detached", "attempts" or
    "dropped"; the table; rows deleted with it (on "dropped")."""

    kind: str = ""
    table: str = ""
    rows: int = 0


def boundary(moment: datetime, days: int) -> datetime:
    """The start of the interval `moment` falls in."""
    span = timedelta(days=days)
    return ORIGIN + ((moment - ORIGIN) // span) * span


def partition_name(low: datetime) -> str:
    return f"{sql.PREFIX}{low.astimezone(UTC):%Y%m%d}"


def _literal(moment: datetime) -> str:
    return f"'{moment.astimezone(UTC).isoformat()}'"  # (a DDL bound cannot be a parameter)


async def is_partitioned(conn: Connection) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    return bool((await conn.execute(text(sql.IS_PARTITIONED))).scalar())


def is_partitioned_sync(conn: SyncConnection) -> bool:
    """For migration scripts: a later revision that adds a unique index, say, must include
    `created_at` in it on the partitioned shape."""
    return conn.dialect.name == "postgresql" and bool(
        conn.execute(text(sql.IS_PARTITIONED)).scalar()
    )


def _bound(value: str) -> datetime | None:
    if value == "MINVALUE":
        return None
    return datetime.fromisoformat(value.strip("'")).astimezone(UTC)


async def partitions(conn: Connection) -> list[Partition]:
    """The attached partitions, oldest first, DEFAULT last (bounds read in UTC)."""
    await conn.execute(text("SET LOCAL TimeZone = 'UTC'"))
    found = []
    for row in await conn.execute(text(sql.LIST_PARTITIONS)):
        match = _BOUND.search(row.bound)
        if match is None:
            found.append(Partition(row.name, None, None))
        else:
            found.append(Partition(row.name, _bound(match[1]), _bound(match[2])))
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(found, key=lambda p: (p.high is None, p.high or far))


def interval_days(parts: Sequence[Partition]) -> int:
    """The span of the newest dated partition (the one the table was made with)."""
    dated = [p for p in parts if p.dated and p.low is not None and p.high is not None]
    if not dated:
        return DAYS
    newest = dated[-1]
    assert newest.low is not None and newest.high is not None
    return max((newest.high - newest.low).days, 1)


async def _try(conn: Connection, statement: str, params: dict[str, Any] | None = None) -> bool:
    """Run DDL under LOCK_TIMEOUT in a savepoint; → False if its lock was not to be had."""
    await conn.execute(text("SAVEPOINT taskq_ddl"))
    await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    try:
        await conn.execute(text(statement), params or {})
    except DBAPIError as exc:
        if _sqlstate(exc) != "55P03":  # lock_not_available
            raise
        await conn.execute(text("ROLLBACK TO SAVEPOINT taskq_ddl"))
        return False
    await conn.execute(text("SET LOCAL lock_timeout = 0"))
    await conn.execute(text("RELEASE SAVEPOINT taskq_ddl"))
    return True


def _sqlstate(exc: DBAPIError) -> str | None:
    original = exc.orig
    for candidate in (original, getattr(original, "__cause__", None)):
        code = getattr(candidate, "pgcode", None) or getattr(candidate, "sqlstate", None)
        if code:
            return str(code)
    return None


async def ensure(conn: Connection, start: datetime, end: datetime, days: int) -> list[str]:
    """Create the partitions of the intervals from `start`'s to `end`'s that are missing;
    → their names. An interval some row in DEFAULT falls in is left to DEFAULT (PostgreSQL
    would refuse the partition); one whose lock is busy waits for the next call."""
    have = {p.low for p in await partitions(conn) if p.dated}
    made = []
    low = boundary(start, days)
    while low < end:
        high = low + timedelta(days=days)
        if low not in have and not await _in_default(conn, low, high):
            name = partition_name(low)
            create = (
                f'CREATE TABLE "{name}" PARTITION OF {sql.PARENT} '
                f"FOR VALUES FROM ({_literal(low)}) TO ({_literal(high)})"
            )
            if await _try(conn, create):
                made.append(name)
        low = high
    return made


async def _in_default(conn: Connection, low: datetime, high: datetime) -> bool:
    query = text(
        f"SELECT EXISTS (SELECT 1 FROM {sql.DEFAULT} WHERE created_at >= :low "
        "AND created_at < :high)"
    )
    return bool((await conn.execute(query, {"low": low, "high": high})).scalar())


async def create_ahead(conn: Connection, now: datetime) -> list[str]:
    """Partitions from the newest one's end to AHEAD intervals past now."""
    parts = await partitions(conn)
    days = interval_days(parts)
    ends = [p.high for p in parts if p.high is not None and (p.dated or p.low is None)]
    start = max([*ends, boundary(now, days)]) if ends else boundary(now, days)
    return await ensure(conn, start, now + timedelta(days=days * AHEAD), days)


def _indexes() -> list[str]:
    """The plain table's indexes, none unique (PostgreSQL: a unique index on a partitioned
    table must hold the partition key); the keys' uniqueness is `taskq_task_keys`'s."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    found = []
    for index in sorted(tasks.indexes, key=lambda i: str(i.name)):
        ddl = str(CreateIndex(index).compile(dialect=dialect))
        found.append(ddl.replace("CREATE UNIQUE INDEX", "CREATE INDEX"))
    return found


async def convert(conn: Connection, now: datetime, days: int = DAYS) -> str:
    """Make `taskq_tasks` partitioned (the caller's transaction; the table is locked until
    it commits); → what was done. Its rows, if any, become the partition LEGACY."""
    if await is_partitioned(conn):
        made = await create_ahead(conn, now)
        return f"taskq_tasks is already partitioned ({len(made)} partitions made ahead)"
    await conn.execute(text(f"LOCK TABLE {sql.PARENT} IN ACCESS EXCLUSIVE MODE"))
    newest = (await conn.execute(text(f"SELECT max(created_at) FROM {sql.PARENT}"))).scalar()
    await conn.execute(text(f"ALTER TABLE {sql.PARENT} RENAME TO {sql.LEGACY}"))
    names = await conn.execute(
        text(
            "SELECT indexname FROM pg_indexes "
            "WHERE schemaname = current_schema() AND tablename = :t"
        ),
        {"t": sql.LEGACY},
    )
    for (index,) in list(names):
        await conn.execute(text(f'ALTER INDEX "{index}" RENAME TO "{("legacy_" + index)[:63]}"'))
    await conn.execute(
        text(
            f"CREATE TABLE {sql.PARENT} (LIKE {sql.LEGACY} INCLUDING DEFAULTS "
            "INCLUDING CONSTRAINTS) PARTITION BY RANGE (created_at)"
        )
    )
    await conn.execute(
        text(
            f"ALTER TABLE {sql.PARENT} ADD CONSTRAINT pk_{sql.PARENT} PRIMARY KEY (id, created_at)"
        )
    )
    for ddl in _indexes():
        await conn.execute(text(ddl))
    for ddl in (sql.CREATE_KEYS, sql.CREATE_TAKE_KEY, sql.CREATE_FREE_KEY, *sql.TRIGGERS):
        await conn.execute(text(ddl))
    await conn.execute(text(f"CREATE TABLE {sql.DEFAULT} PARTITION OF {sql.PARENT} DEFAULT"))
    if newest is None:
        await conn.execute(text(f"DROP TABLE {sql.LEGACY}"))
        made = await ensure(conn, now, now + timedelta(days=days * AHEAD), days)
        return f"taskq_tasks is partitioned: {len(made)} partitions of {days} days"
    await conn.execute(
        text(
            f"INSERT INTO {sql.KEYS} (idempotency_key, task_id) SELECT idempotency_key, id "
            f"FROM {sql.LEGACY} WHERE idempotency_key IS NOT NULL"
        )
    )
    # (its primary key on id alone gives way to the parent's, built by the attach)
    primary = text(
        "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(:t) AND contype = 'p'"
    )
    for (name,) in list(await conn.execute(primary, {"t": sql.LEGACY})):
        await conn.execute(text(f'ALTER TABLE {sql.LEGACY} DROP CONSTRAINT "{name}"'))
    cutover = boundary(max(newest, now), days) + timedelta(days=days)
    await conn.execute(
        text(
            f"ALTER TABLE {sql.PARENT} ATTACH PARTITION {sql.LEGACY} "
            f"FOR VALUES FROM (MINVALUE) TO ({_literal(cutover)})"
        )
    )
    made = await ensure(conn, cutover, now + timedelta(days=days * AHEAD), days)
    return (
        f"taskq_tasks is partitioned: its rows are the partition {sql.LEGACY} (up to "
        f"{cutover:%Y-%m-%d}), then {len(made)} partitions of {days} days"
    )


def floored(rules: Sequence[PruneRule], parts: Sequence[Partition]) -> list[PruneRule]:
    """The rules for row deletes: a cutoff inside a dated partition moves to its start, so
    that its rows wait for the partition's drop instead of going one by one."""
    found = []
    for rule in rules:
        cutoff = rule.cutoff
        for part in parts:
            if part.dated and part.low is not None and part.high is not None:
                if part.low <= cutoff < part.high:
                    cutoff = part.low
        found.append(dataclasses.replace(rule, cutoff=cutoff))
    return found


def _kept_by_rules(rules: Sequence[PruneRule]) -> Any:
    """Rows no rule deletes (a NULL in a condition keeps the row, as a row delete would)."""
    return not_(func.coalesce(or_(*(rule.condition() for rule in rules)), False))


def _in_partition(part: Partition) -> Any:
    where: list[Any] = [tasks.c.created_at < part.high]
    if part.low is not None:
        where.append(tasks.c.created_at >= part.low)
    # (MINVALUE: DEFAULT is scanned too, its rows are left out)
    where.append(text("taskq_tasks.tableoid = CAST(:part AS regclass)").bindparams(part=part.name))
    return and_(*where)


async def retire_step(
    conn: Connection, rules: Sequence[PruneRule], now: datetime, memory: Retirement
) -> Step:
    """One step of retention by partitions, in the caller's transaction (see the module's
    docstring); → what it did. Only one process at a time takes steps."""
    lock = text("SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || :what))")
    if not (await conn.execute(lock, {"what": "/taskq_partitions"})).scalar():
        return Step("busy")
    made = await create_ahead(conn, now)
    if made:
        logger.info("retention: created partitions %s", ", ".join(made))
        return Step("created", made[-1])
    detached = [row.name for row in await conn.execute(text(sql.LIST_DETACHED))]
    if detached:
        return await _empty(conn, detached[0], memory)
    if not rules:
        return Step()
    latest = max(rule.cutoff for rule in rules)
    for part in await partitions(conn):
        if part.high is None or part.high > latest:
            continue
        checked = memory.kept.get(part.name)
        if checked is not None and now - checked < RECHECK:
            continue
        step = await _detach(conn, part, rules, memory)
        if step.kind:
            return step
        memory.kept[part.name] = now
    return Step()


async def _detach(
    conn: Connection, part: Partition, rules: Sequence[PruneRule], memory: Retirement
) -> Step:
    """Detach `part` and move the rows the rules keep to DEFAULT, unless it keeps too many."""
    # One pass over the partition (it stops early once too many are kept); its rows are
    # counted once it is detached, when nobody waits on it.
    chosen = select(tasks.c.id).where(_in_partition(part), _kept_by_rules(rules))
    survivors = [str(row.id) for row in await conn.execute(chosen.limit(MOVE_MAX + 1))]
    if len(survivors) > MOVE_MAX:
        logger.info(
            "retention: partition %s keeps more than %d rows: left to row deletes",
            part.name,
            MOVE_MAX,
        )
        return Step()
    if not await _try(conn, f'ALTER TABLE {sql.PARENT} DETACH PARTITION "{part.name}"'):
        return Step("busy", part.name)
    # Rows kept, and any that stopped being final since they were counted (a replay).
    columns = ", ".join(column.name for column in tasks.columns)
    move = text(
        f'WITH moved AS (DELETE FROM "{part.name}" WHERE id = ANY(CAST(:ids AS uuid[])) '
        "OR state = ANY(CAST(:states AS text[])) "
        f"RETURNING {columns}) INSERT INTO {sql.PARENT} ({columns}) SELECT {columns} FROM moved"
    )
    moved = await conn.execute(move, {"ids": survivors, "states": list(_NOT_FINAL)})
    logger.info(
        "retention: detached partition %s (%d rows kept and moved to %s)",
        part.name,
        moved.rowcount,
        sql.DEFAULT,
    )
    return Step("detached", part.name)


async def _empty(conn: Connection, table: str, memory: Retirement) -> Step:
    """A batch of the detached table's attempts; once none is left, its keys and itself."""
    after = memory.after.get(table, _ZERO_ID)
    batch = text(sql.DELETE_ATTEMPTS.format(table=table))
    last = (await conn.execute(batch, {"after": after, "n": ATTEMPT_BATCH})).scalar()
    if last is not None:
        memory.after[table] = str(last)
        return Step("attempts", table)
    await conn.execute(text(sql.DELETE_KEYS.format(table=table)))
    rows = int((await conn.execute(text(f'SELECT count(*) FROM "{table}"'))).scalar_one())
    await conn.execute(text(f'DROP TABLE IF EXISTS "{table}"'))
    memory.after.pop(table, None)
    logger.info("retention: dropped partition %s (%d tasks)", table, rows)
    return Step("dropped", table, rows)
