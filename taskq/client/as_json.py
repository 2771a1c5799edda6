"""Tasks, attempts, workers and events as plain JSON objects: what `taskq ... --json` prints
and the dashboard's API serves. Task values are shown as stored (`$datetime` and the like
tagged), the form `psql` shows too."""

from __future__ import annotations

import base64
import enum
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from taskq.store import codec

if TYPE_CHECKING:
    from taskq.client.dlq import DeadLetter
    from taskq.client.events import TaskEvent
    from taskq.store import ScheduleRecord, TaskRecord, WorkerRecord


def when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def task_json(record: TaskRecord) -> dict[str, Any]:
    """A task as listed: no values, no traceback."""
    return {
        "id": record.id,
        "name": record.name,
        "queue": record.queue,
        "priority": record.priority,
        "state": record.state.value,
        "attempts": record.attempts,
        "batch_id": record.batch_id,
        "workflow_id": record.workflow_id,
        "worker_id": record.worker_id,
        "created_at": when(record.created_at),
        "started_at": when(record.started_at),
        "finished_at": when(record.finished_at),
        "progress": plain(record.progress),
        "error": None if record.error is None else record.error.to_json(),
    }


def task_detail_json(record: TaskRecord, attempts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A task whole: its values as stored, headers, trace id, limits and every attempt."""
    return {
        **task_json(record),
        "args": codec.to_json(record.args),
        "kwargs": codec.to_json(record.kwargs),
        "result": codec.to_json(record.result),
        "retries": record.retries,
        "max_retries": record.max_retries,
        "run_at": when(record.run_at),
        "expires_at": when(record.expires_at),
        "dead_reason": record.dead_reason,
        "held_by": record.held_by,
        "step": record.step,
        "parents": record.parents,
        "headers": record.headers or {},
        "trace_id": trace_id(record.headers or {}),
        "attempt_log": [attempt_json(attempt) for attempt in attempts],
    }


def attempt_json(attempt: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "attempt": attempt["attempt"],
        "state": attempt["state"],
        "worker_id": attempt["worker_id"],
        "started_at": when(attempt["started_at"]),
        "finished_at": when(attempt["finished_at"]),
        "error": attempt["error"],
    }


def trace_id(headers: Mapping[str, str]) -> str | None:
    """The trace id of a W3C `traceparent` header (version-traceid-spanid-flags), if any."""
    parts = headers.get("traceparent", "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        return parts[1]
    return None


def worker_json(row: WorkerRecord) -> dict[str, Any]:
    return {
        "id": row.id,
        "role": row.role,
        "host": row.host,
        "pid": row.pid,
        "state": row.state,
        "leader": row.leader,
        "queues": row.queues,
        "tags": row.tags,
        "version": row.version,
        "concurrency": row.concurrency,
        "running": row.running,
        "memory": row.memory,
        "started_at": row.started_at.isoformat(),
        "heartbeat_at": row.heartbeat_at.isoformat(),
        "stopped_at": when(row.stopped_at),
    }


def schedule_json(row: ScheduleRecord) -> dict[str, Any]:
    return {
        "name": row.name,
        "task": row.task,
        "spec": row.spec,
        "timezone": row.timezone,
        "next_tick": when(row.next_tick),
        "ticked_at": when(row.ticked_at),
    }


def dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    return {
        "task_id": letter.task_id,
        "task": letter.task,
        "reason": letter.reason,
        "error_type": letter.error_type,
        "error_message": letter.error_message,
        "dead_at": when(letter.dead_at),
    }


def event_json(event: TaskEvent) -> dict[str, Any]:
    return {
        "kind": event.kind,
        "task_id": event.task_id,
        "state": event.state.value,
        "name": event.name,
        "queue": event.queue,
        "attempt": event.attempt,
        "at": event.at.isoformat(),
        "progress": event.progress,
        "message": event.message,
        "data": plain(dict(event.data)),
    }


def plain(value: Any) -> Any:
    """JSON-safe: bytes (which msgpack carries) become hex."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def json_value(value: Any) -> Any:
    """What `json` cannot write itself: times as ISO 8601, bytes as base64, states by value."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, enum.Enum):
        return value.value
    return str(value)
