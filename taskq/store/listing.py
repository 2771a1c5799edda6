"""Reads for people: tasks by filter a page at a time, waiting counts, and the last hour's
summary (what `taskq tasks`, `taskq queues` and the dashboard show)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select

from taskq.status import FINAL, TaskStatus
from taskq.store import records
from taskq.store.async_core import Connection
from taskq.store.tables import tasks

_c = tasks.c
_NOT_FINAL = tuple(s.value for s in TaskStatus if s not in FINAL)
_FINAL = tuple(s.value for s in TaskStatus if s in FINAL)


@dataclasses.dataclass(frozen=True, slots=True)
class PageMark:
    """Where a page of tasks ended: the next page starts after this row. Pages go by key,
    not OFFSET, so the millionth row costs what the first does."""

    created_at: datetime
    id: str

    def __str__(self) -> str:
        return f"{self.created_at.astimezone(UTC).isoformat()}~{self.id}"

    @classmethod
    def parse(cls, text: str) -> PageMark:
        """The mark `str()` wrote; ValueError if `text` is not one."""
        moment, _, task_id = text.partition("~")
        created_at = datetime.fromisoformat(moment)
        if created_at.tzinfo is None or len(task_id) != 36:
            raise ValueError(f"{text!r} is not a page mark")
        return cls(created_at.astimezone(UTC), task_id)


async def find_tasks(
    conn: Connection,
    *,
    states: Sequence[TaskStatus] = (),
    name: str | None = None,
    queue: str | None = None,
    batch_id: str | None = None,
    workflow_id: str | None = None,
    since: datetime | None = None,
    after: PageMark | None = None,
    limit: int = 100,
) -> list[records.TaskRecord]:
    """Tasks matching every filter given, newest first (the indexes cover each filter), from
    just after `after` if given; a workflow's steps in step order."""
    query = select(tasks).order_by(_c.created_at.desc(), _c.id.desc()).limit(limit)
    if states:
        query = query.where(_c.state.in_([state.value for state in states]))
    if name is not None:
        query = query.where(_c.name == name)
    if queue is not None:
        query = query.where(_c.queue == queue)
    if batch_id is not None:
        query = query.where(_c.batch_id == batch_id)
    if workflow_id is not None:
        query = query.where(_c.workflow_id == workflow_id).order_by(None).order_by(_c.step)
    if since is not None:
        query = query.where(_c.created_at >= since)
    if after is not None:
        # (The plain `<=` lets every index on (…, created_at) bound the scan.)
        query = query.where(
            _c.created_at <= after.created_at,
            or_(
                _c.created_at < after.created_at,
                and_(_c.created_at == after.created_at, _c.id < after.id),
            ),
        )
    return [records.record_of(row) for row in (await conn.execute(query)).mappings()]


async def count_waiting(conn: Connection, queues: Sequence[str]) -> dict[str, dict[str, int]]:
    """queue → {state: count} of the not-yet-final tasks of `queues`."""
    query = (
        select(_c.queue, _c.state, func.count())
        .where(_c.queue.in_(list(queues)), _c.state.in_(_NOT_FINAL))
        .group_by(_c.queue, _c.state)
    )
    counts: dict[str, dict[str, int]] = {queue: {} for queue in queues}
    for queue, state, count in await conn.execute(query):
        counts[queue][state] = count
    return counts


@dataclasses.dataclass(frozen=True, slots=True)
class Summary:
    """What the dashboard's overview shows: tasks by queue and state (every unfinished one,
    and the finished ones created since `since`), and those finished per minute since then."""

    since: datetime
    counts: dict[str, dict[str, int]]  # queue → state → tasks
    per_minute: list[tuple[datetime, str, int]]  # (minute, final state, tasks finished)


async def summarise(conn: Connection, since: datetime) -> Summary:
    """The not-yet-final rows all, the final ones created since `since` (each read through
    the (state, created_at) index, never the whole table)."""
    counts: dict[str, dict[str, int]] = {}
    unfinished = (
        select(_c.queue, _c.state, func.count())
        .where(_c.state.in_(_NOT_FINAL))
        .group_by(_c.queue, _c.state)
    )
    finished = (
        select(_c.queue, _c.state, func.count())
        .where(_c.state.in_(_FINAL), _c.created_at >= since)
        .group_by(_c.queue, _c.state)
    )
    for query in (unfinished, finished):
        for queue, state, count in await conn.execute(query):
            counts.setdefault(queue, {})[state] = count
    minute = _minute_of(conn, _c.finished_at)
    per_minute = (
        select(minute.label("minute"), _c.state, func.count())
        .where(_c.state.in_(_FINAL), _c.created_at >= since, _c.finished_at >= since)
        .group_by(minute, _c.state)
        .order_by(minute)
    )
    rows = await conn.execute(per_minute)
    return Summary(since, counts, [(_as_minute(m), state, n) for m, state, n in rows])


def _minute_of(conn: Connection, column: ColumnElement[Any]) -> ColumnElement[Any]:
    if conn.dialect.name == "postgresql":
        return func.date_trunc("minute", column)
    return func.strftime("%Y-%m-%dT%H:%M:00+00:00", column)  # (SQLite keeps UTC text)


def _as_minute(value: datetime | str) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
