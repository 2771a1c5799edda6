"""Log lines that say which task they are about: `--log-format text|json` for workers.

Inside a task (its own code and taskq's lines about it) every record carries the task's
id, name, attempt and queue, and the trace and span ids when a span is current. Task
arguments never appear, and URLs are redacted where taskq logs them.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from taskq.context import _current

TASK_FIELDS = ("task_id", "task_name", "attempt", "queue")
# Set by the executor for the asyncio task that handles one delivery: its own lines about
# the task carry the same fields as the task's code.
handling: ContextVar[dict[str, Any] | None] = ContextVar("taskq_handling", default=None)
# Extra fields taskq's own records carry, passed through to JSON lines.
_EXTRA_FIELDS = (*TASK_FIELDS, "trace_id", "span_id", "action", "worker_id", "blocked_by")


class Throttled:
    """Warnings that anyone on the vhost can provoke (forged events, forged cancels): the
    first is logged, then at most one per `interval` seconds, so a flood cannot flood logs."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self._logger = logger
        self._interval = interval
        self._logged_at = -interval

    def warning(self, message: str, *args: object) -> None:
        if time.monotonic() - self._logged_at >= self._interval:
            self._logged_at = time.monotonic()
            self._logger.warning(
                f"{message} (more in the next {self._interval:g} s are not logged)", *args
            )


class TaskFields(logging.Filter):
    """Adds the current task's fields and trace ids to every record (a handler filter)."""

    def filter(self, record: logging.LogRecord) -> bool:
        task = _current.get(None)
        if task is not None and getattr(record, "task_id", None) in (None, task.id):
            record.task_id = task.id
            record.task_name = task.name
            record.attempt = task.attempt
            record.queue = task.queue
            record.task_context = True  # (the text format adds these; taskq's own lines say them)
        elif (fields := handling.get()) is not None:
            for name, value in fields.items():
                if getattr(record, name, None) is None:
                    setattr(record, name, value)
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            record.trace_id = format(span.trace_id, "032x")
            record.span_id = format(span.span_id, "016x")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the fields above."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _EXTRA_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """The usual line, plus `[task name id attempt N queue Q]` for lines inside a task."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if getattr(record, "task_context", False):
            text += (
                f" [task {record.task_name} {record.task_id} attempt "  # type: ignore[attr-defined]
                f"{getattr(record, 'attempt', '?')} queue {getattr(record, 'queue', '?')}]"
            )
        return text


def configure(level: str, log_format: str = "text") -> None:
    """Root logging for taskq's processes: one stderr handler with the task fields."""
    if log_format not in ("text", "json"):
        raise ValueError(f"log format must be text or json, not {log_format!r}")
    handler = logging.StreamHandler()
    handler.addFilter(TaskFields())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("aio_pika", "aiormq"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
