"""The store's value types and the one mapping between them and rows.

Every insert path takes its column values from `task_values`, every read path builds its
record with `record_of`; a column added to `taskq_tasks` is added here once.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import RowMapping

from taskq.status import TaskStatus
from taskq.store import codec

# Columns stored as JSON (jsonb on PostgreSQL): raw asyncpg reads cast them to text and
# decode here, so no read depends on a codec registered on the connection.
JSON_COLUMNS = (
    "args", "kwargs", "result", "error", "progress", "headers", "parents", "children", "receives",
    "limits",
)  # fmt: skip

# A worker this long without a heartbeat is dead: the leader marks it so, and a running
# task it held may be taken over by a redelivery of its message.
SILENT_FOR = timedelta(seconds=30)


@dataclasses.dataclass(frozen=True, slots=True)
class TaskError:
    """Why an attempt (or a task that never ran) failed; stored as the JSON object
    `{"type", "message", "traceback"}` that `psql` users read."""

    type: str
    message: str
    traceback: str = ""

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def of(cls, value: Mapping[str, Any] | None) -> TaskError | None:
        """The error of a stored JSON object (missing keys read as empty), or None."""
        if value is None:
            return None
        return cls(
            type=str(value.get("type", "")),
            message=str(value.get("message", "")),
            traceback=str(value.get("traceback", "")),
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowPlace:
    """Where a step stands in its workflow (see `tables.tasks`): its number, the steps it
    waits for and those that wait for it, and the JSON shape of its first argument (None:
    it receives nothing)."""

    workflow_id: str
    step: int
    parents: Sequence[int]
    children: Sequence[int]
    receives: Any = None
    tolerates_failures: bool = False


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NewTask:
    """A task as submitted, before it has a row."""

    id: str
    name: str
    queue: str
    priority: int
    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    timeout: float | None
    created_at: datetime
    state: TaskStatus = TaskStatus.QUEUED
    run_at: datetime | None = None
    idempotency_key: str | None = None
    expires_at: datetime | None = None
    max_retries: int = 0
    batch_id: str | None = None
    # What submit middleware added (str → str), the W3C trace context among them.
    headers: Mapping[str, str] | None = None
    workflow: WorkflowPlace | None = None
    # Flow control it is subject to (`taskq.client.limits.row_limits`), if any.
    limits: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TaskRecord:
    """One task row, with JSON values decoded back to Python."""

    id: str
    name: str
    queue: str
    priority: int
    state: TaskStatus
    args: list[Any]
    kwargs: dict[str, Any]
    result: Any
    error: TaskError | None
    attempts: int
    timeout: float | None
    worker_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    run_at: datetime | None = None
    idempotency_key: str | None = None
    retries: int = 0
    max_retries: int = 0
    deliveries: int = 0
    expires_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    dead_reason: str | None = None
    lease_until: datetime | None = None
    # {"fraction", "message", "data", "n", "at"} of the running attempt's latest report.
    progress: dict[str, Any] | None = None
    batch_id: str | None = None
    headers: dict[str, str] | None = None
    workflow_id: str | None = None
    step: int | None = None
    parents: list[int] | None = None
    limits: dict[str, Any] | None = None
    # Which limit holds it back while `scheduled`: "rate" (until `run_at`) or "slots".
    held_by: str | None = None


# (task id, attempt, latest progress report)
ProgressReport = tuple[str, int, dict[str, Any]]


class ClaimRequest(NamedTuple):
    """A delivery asking to run its task: the writer batches these."""

    task_id: str
    worker_id: str
    redelivered: bool
    # The task name and queue the message gives: a row that says otherwise is not claimed
    # (a message reusing another task's id must not run in its place). None: not checked.
    name: str | None = None
    queue: str | None = None
    # Its message says it has limits: the claim goes through them (`store.limits`), whose
    # keys it names (locked before the row is read; the row's are the ones obeyed).
    limited: bool = False
    rate_key: str | None = None
    slot_key: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    """A delivery's claim: the attempt it runs as, and what the row says about it."""

    attempt: int
    deliveries: int  # since the last retry or replay
    retries: int  # used so far
    max_retries: int
    cancel_requested: bool
    # A workflow step's: its workflow, and the JSON shape of the value it receives (None:
    # a plain task, or a step that receives nothing).
    workflow_id: str | None = None
    receives: Any = None
    # Its concurrency key, if it has one: its attempt's end frees a slot of it.
    slot_key: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Held:
    """A claim a limit refused: the task waits `scheduled`, held by `reason` ("rate" or
    "slots") on `key`, until `until` (a rate reservation) or a free slot (None)."""

    reason: str
    key: str
    until: datetime | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Written:
    """What one flush did: the claims that took, the outcomes not stored because their
    attempt was no longer the row's latest (as (task id, attempt); usually none), and how
    many workflow steps it made due."""

    claimed: dict[str, Claimed]
    stale: frozenset[tuple[str, int]] = frozenset()
    released: int = 0  # workflow steps that became due
    # (id, name, queue) of workflow steps cancelled because a step they wait for did not
    # succeed: the writer's caller announces them.
    cancelled: tuple[tuple[str, str, str], ...] = ()
    # Claims a limit refused (`store.limits`): the task waits, its message is to be acked.
    held: Mapping[str, Held] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How one attempt ended. Written only if `attempt` is still the row's latest.

    `state` is final, or `scheduled` for a retry at `retry_at`. `dead_reason` says why
    the message goes to the dead-letter queue, if it does.
    """

    task_id: str
    attempt: int
    state: TaskStatus
    result: Any = None
    error: TaskError | None = None
    dead_reason: str | None = None
    retry_at: datetime | None = None
    worker_id: str | None = None
    started_at: datetime | None = None
    result_size: int | None = None  # msgpack bytes, once checked (not stored)
    # A workflow step's: its final state releases (or cancels) the steps waiting for it.
    in_workflow: bool = False
    # Its concurrency key, if it has one: once stored, the tasks waiting for a slot of it
    # are released (`store.limits.release_slots`).
    slot_key: str | None = None

    @property
    def logged_state(self) -> str:
        """The state in the attempts log: a retry is `retrying` there."""
        return "retrying" if self.state is TaskStatus.SCHEDULED else self.state.value


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRecord:
    id: str
    role: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    state: str
    leader: bool
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    running: int = 0
    memory: int = 0
    tags: list[str] = dataclasses.field(default_factory=list)  # started with (`--tags`)
    version: str | None = None  # taskq's, in that process (None: from before 0011)


def now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive; they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def error_json(error: TaskError | None) -> dict[str, str] | None:
    return None if error is None else error.to_json()


def task_values(task: NewTask) -> dict[str, Any]:
    """The row of a new task; JSON columns as Python values (see `as_json_text`)."""
    return {
        "id": task.id,
        "name": task.name,
        "queue": task.queue,
        "priority": task.priority,
        "state": task.state.value,
        "args": codec.to_json(list(task.args)),
        "kwargs": codec.to_json(dict(task.kwargs)),
        "attempts": 0,
        "timeout": task.timeout,
        "created_at": task.created_at,
        "run_at": task.run_at,
        "idempotency_key": task.idempotency_key,
        "expires_at": task.expires_at,
        "max_retries": task.max_retries,
        "batch_id": task.batch_id,
        "headers": dict(task.headers) if task.headers else None,
        **_limit_values(task.limits),
        **_workflow_values(task.workflow),
    }


def _limit_values(limits: Mapping[str, Any] | None) -> dict[str, Any]:
    """The limits column, and each limit's key in a column of its own (None if none)."""
    return {
        "limits": dict(limits) if limits else None,
        **{
            f"{column}_key": limits[kind][0] if limits and kind in limits else None
            for kind, column in (("rate", "rate"), ("slots", "slot"), ("quota", "quota"))
        },
    }


def _workflow_values(place: WorkflowPlace | None) -> dict[str, Any]:
    if place is None:
        return {}
    return {
        "workflow_id": place.workflow_id,
        "step": place.step,
        "parents": list(place.parents),
        "children": list(place.children),
        "waiting_for": len(place.parents),
        "receives": place.receives,
        "tolerates_failures": place.tolerates_failures,
    }


def json_text(value: Any) -> str | None:
    """jsonb text for asyncpg; None is SQL NULL (as `JsonOrNull` stores it)."""
    return None if value is None else json.dumps(value)


def record_of(row: Mapping[str, Any] | RowMapping, *, json_as_text: bool = False) -> TaskRecord:
    """A row as a TaskRecord. `json_as_text`: the JSON columns are still text (raw asyncpg
    reads select them as `::text`); otherwise SQLAlchemy has parsed them."""

    def loaded(column: str) -> Any:
        value = row[column]
        if json_as_text and value is not None:
            return json.loads(value)
        return value

    created_at = aware(row["created_at"])
    assert created_at is not None
    return TaskRecord(
        id=str(row["id"]),
        name=row["name"],
        queue=row["queue"],
        priority=row["priority"],
        state=TaskStatus(row["state"]),
        args=codec.from_json(loaded("args")),
        kwargs=codec.from_json(loaded("kwargs")),
        result=codec.from_json(loaded("result")),
        error=TaskError.of(loaded("error")),
        attempts=row["attempts"],
        timeout=row["timeout"],
        worker_id=row["worker_id"],
        created_at=created_at,
        started_at=aware(row["started_at"]),
        finished_at=aware(row["finished_at"]),
        run_at=aware(row["run_at"]),
        idempotency_key=row["idempotency_key"],
        retries=row["retries"],
        max_retries=row["max_retries"],
        deliveries=row["deliveries"],
        expires_at=aware(row["expires_at"]),
        cancel_requested_at=aware(row["cancel_requested_at"]),
        dead_reason=row["dead_reason"],
        lease_until=aware(row["lease_until"]),
        progress=codec.from_json(loaded("progress")),
        batch_id=None if row["batch_id"] is None else str(row["batch_id"]),
        headers=loaded("headers"),
        workflow_id=None if row["workflow_id"] is None else str(row["workflow_id"]),
        step=row["step"],
        parents=loaded("parents"),
        limits=loaded("limits"),
        held_by=row["held_by"],
    )


def attempt_of(row: Mapping[str, Any] | RowMapping) -> dict[str, object]:
    """A row of the attempts log, as `handle.attempts()` gives it (a dict per attempt)."""
    return {
        **row,
        "task_id": str(row["task_id"]),
        "started_at": aware(row["started_at"]),
        "finished_at": aware(row["finished_at"]),
    }


def worker_of(row: Mapping[str, Any] | RowMapping) -> WorkerRecord:
    return WorkerRecord(
        id=row["id"],
        role=row["role"],
        host=row["host"],
        pid=row["pid"],
        queues=list(row["queues"]),
        concurrency=row["concurrency"],
        state=row["state"],
        leader=bool(row["leader"]),
        started_at=aware(row["started_at"]) or now(),
        heartbeat_at=aware(row["heartbeat_at"]) or now(),
        stopped_at=aware(row["stopped_at"]),
        running=row["running"],
        memory=row["memory"],
        tags=list(row["tags"] or ()),
        version=row.get("version"),
    )
