"""What the pages and the JSON API show, read once for both: through the store's reads and the
broker's queue statistics, never from the user's app module."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from taskq.app import App
from taskq.client.as_json import (
    dead_letter_json,
    schedule_json,
    task_detail_json,
    task_json,
    when,
    worker_json,
)
from taskq.client.queues import known_queues, queue_rows
from taskq.config import parse_since
from taskq.exceptions import ConfigurationError
from taskq.status import FINAL, TaskStatus
from taskq.store import PageMark

PAGE = 50
MOST = 500
HOUR = timedelta(hours=1)


class BadQuery(ValueError):
    """A query parameter that cannot be used; the message says which and why."""


@dataclasses.dataclass(frozen=True, slots=True)
class TaskQuery:
    """The filters of `taskq tasks`, as query parameters (`state` may repeat)."""

    states: tuple[TaskStatus, ...] = ()
    name: str | None = None
    queue: str | None = None
    batch: str | None = None
    workflow: str | None = None
    since: str | None = None
    after: str | None = None
    limit: int = PAGE

    @classmethod
    def of(cls, params: Mapping[str, str], states: Sequence[str]) -> TaskQuery:
        try:
            found = tuple(TaskStatus(state) for state in states if state)
        except ValueError:
            known = ", ".join(state.value for state in TaskStatus)
            raise BadQuery(f"state must be one of {known}") from None
        text = {key: params.get(key) or None for key in ("name", "queue", "batch", "workflow")}
        try:
            limit = min(int(params.get("limit") or PAGE), MOST)
        except ValueError:
            raise BadQuery("limit must be a whole number") from None
        if limit < 1:
            raise BadQuery("limit must be at least 1")
        query = cls(
            found, **text, since=params.get("since") or None, after=params.get("after") or None,
            limit=limit,
        )  # fmt: skip
        query.checked()
        return query

    def checked(self) -> None:
        for what, value in (("batch", self.batch), ("workflow", self.workflow)):
            if value is not None:
                _uuid(value, what)
        if self.since is not None:
            since_moment(self.since)
        if self.after is not None:
            _mark(self.after)

    def params(self, **changes: object) -> dict[str, Any]:
        """These filters as query parameters (for links to other pages of the list)."""
        chosen = dataclasses.replace(self, **changes)  # type: ignore[arg-type]
        shown: dict[str, Any] = {"state": [state.value for state in chosen.states]}
        for key in ("name", "queue", "batch", "workflow", "since", "after"):
            if getattr(chosen, key) is not None:
                shown[key] = getattr(chosen, key)
        if chosen.limit != PAGE:
            shown["limit"] = chosen.limit
        return shown


def since_moment(text: str) -> datetime:
    try:
        return parse_since(text, "since")
    except ConfigurationError as exc:
        raise BadQuery(str(exc)) from None


async def list_tasks(app: App, query: TaskQuery) -> dict[str, Any]:
    """A page of tasks, newest first, and the mark the next page starts after (None: last)."""
    records = await app.store.find_tasks(
        states=query.states,
        name=query.name,
        queue=query.queue,
        batch_id=query.batch and _uuid(query.batch, "batch"),
        workflow_id=query.workflow and _uuid(query.workflow, "workflow"),
        since=None if query.since is None else since_moment(query.since),
        after=None if query.after is None else _mark(query.after),
        limit=query.limit,
    )
    more = len(records) == query.limit and query.workflow is None
    last = records[-1] if more else None
    return {
        "tasks": [task_json(record) for record in records],
        "next": None if last is None else str(PageMark(last.created_at, last.id)),
    }


async def task_ids_starting(app: App, prefix: str) -> list[str]:
    """The ids that start with `prefix` (at most a few): the search box's answer."""
    text = prefix.strip().lower()
    if len(text) == 36:
        return [text] if await app.store.get_task(text) else []
    if len(text.replace("-", "")) < 6 or not set(text) <= set("0123456789abcdef-"):
        return []
    return await app.store.ids_starting_with(text, limit=20)


async def task_detail(app: App, task_id: str) -> dict[str, Any] | None:
    try:
        uuid.UUID(task_id)
    except ValueError:
        return None
    record = await app.store.get_task(task_id)
    if record is None:
        return None
    attempts = await app.store.list_attempts(task_id)
    return task_detail_json(record, attempts)


async def overview(app: App) -> dict[str, Any]:
    """Tasks by queue and state (the finished ones of the last hour), finished per minute
    over the hour, the processes up and the leader."""
    since = datetime.now(UTC) - HOUR
    summary = await app.store.summarise(since)
    workers = await app.store.list_workers(include_stopped=False)
    minutes: dict[datetime, dict[str, int]] = {}
    for minute, state, count in summary.per_minute:
        minutes.setdefault(minute, {})[state] = count
    leader = next((row.id for row in workers if row.leader and row.state == "running"), None)
    return {
        "since": when(since),
        "queues": [
            {"queue": queue, "counts": counts} for queue, counts in sorted(summary.counts.items())
        ],
        "per_minute": [
            {"minute": when(minute), **counts} for minute, counts in sorted(minutes.items())
        ],
        "workers_up": sum(1 for row in workers if row.state == "running"),
        "leader": leader,
    }


async def queues(app: App) -> list[dict[str, Any]]:
    names = await known_queues(app.store)
    return await queue_rows(app.store, app.broker, names)


async def workers(app: App, *, include_stopped: bool = False) -> list[dict[str, Any]]:
    rows = await app.store.list_workers(include_stopped=include_stopped)
    return [worker_json(row) for row in rows]


async def dead_letters(app: App, queue: str, limit: int = PAGE) -> list[dict[str, Any]]:
    return [dead_letter_json(letter) for letter in await app.dlq(queue).list(limit)]


async def schedules(app: App) -> list[dict[str, Any]]:
    return [schedule_json(row) for row in await app.store.list_schedules()]


async def workflow(app: App, workflow_id: str) -> dict[str, Any] | None:
    """A workflow's steps in step order, each with the steps it waits for."""
    try:
        workflow_id = str(uuid.UUID(workflow_id))
    except ValueError:
        return None
    found = await app.store.workflow(workflow_id)
    if found is None:
        return None
    steps, _, created_at = found
    records = await app.store.find_tasks(workflow_id=workflow_id, limit=steps)
    shown = [{**task_json(record), "step": record.step, "parents": record.parents or []}
             for record in records]  # fmt: skip
    finished = sum(1 for record in records if record.state in FINAL)
    return {
        "id": workflow_id,
        "created_at": when(created_at),
        "steps": shown,
        "finished": finished,
    }


def _uuid(text: str, what: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise BadQuery(f"{what} {text!r} is not a {what} id (they are UUIDs)") from None


def _mark(text: str) -> PageMark:
    try:
        return PageMark.parse(text)
    except ValueError:
        raise BadQuery(f"after={text!r} is not a page mark (follow the page's own links)") from None
