"""A running task's progress reports: checked, kept for the store, announced, traced."""

from __future__ import annotations

import itertools
import time
from typing import Any

from taskq import protocol
from taskq.client.events import EventBatcher, task_event
from taskq.context import ProgressReporter
from taskq.status import TaskStatus
from taskq.store import Writer
from taskq.telemetry import tracing
from taskq.worker.instruments import Attempt


def reporter(
    attempt: Attempt, writer: Writer, events: EventBatcher, *, max_bytes: int
) -> ProgressReporter:
    """What `taskq.context().progress()` calls during this attempt. The row keeps only the
    latest report (the writer coalesces them); watchers see each one as an event."""
    envelope, number = attempt.envelope, attempt.claimed.attempt
    numbers = itertools.count(1)

    dump = attempt.task.serializer.dump

    async def report(fraction: float, message: str | None, data: dict[str, Any]) -> None:
        data = dump(data, "progress data")
        protocol.check_size(data, max_bytes=max_bytes, what="progress data")
        n, at = next(numbers), time.time()
        stored = {"fraction": fraction, "message": message, "data": data, "n": n, "at": at}
        writer.progress(envelope.id, number, stored)
        tracing.progress(attempt.span, fraction, message)
        details = {"progress": fraction, "message": message, "data": data or None, "seq": n}
        events.add(task_event(envelope, TaskStatus.RUNNING, attempt=number, at=at, **details))

    return report
