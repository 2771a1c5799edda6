"""From how a task's code ended to the outcome stored: succeeded, retry, or failed."""

from __future__ import annotations

import traceback
from datetime import UTC, datetime, timedelta
from typing import Any

from taskq import protocol
from taskq.client.task import Task
from taskq.exceptions import InvalidArguments, PayloadTooLarge, SerializationError, TaskTimeout
from taskq.retry import Retry
from taskq.status import TaskStatus
from taskq.store import Claimed, Outcome, TaskError
from taskq.worker.running import Finished

MAX_TRACEBACK_CHARS = 32_768


def decide(
    task: Task[Any, Any],
    claimed: Claimed,
    finished: Finished,
    *,
    task_id: str,
    timeout: float | None,
    max_bytes: int,
    base: dict[str, Any],
) -> Outcome:
    """The outcome of one attempt. `base` holds the fields every outcome shares."""
    if finished.kind == "value":
        try:
            result = task.dump_result(finished.value)
            size = protocol.check_size(result, max_bytes=max_bytes, what=f"result of {task.name!r}")
        except (SerializationError, PayloadTooLarge) as exc:
            return failed(base, error_of(exc))
        return Outcome(**base, state=TaskStatus.SUCCEEDED, result=result, result_size=size)
    if finished.kind == "cancelled":
        error = TaskError("TaskCancelled", "cancelled on request")
        return Outcome(**base, state=TaskStatus.CANCELLED, error=error)
    if finished.kind == "timeout":
        cause: BaseException = TaskTimeout(f"task {task_id} ran past its timeout of {timeout} s")
        error = TaskError("TaskTimeout", str(cause))
    else:
        assert finished.error is not None
        cause, error = finished.error, error_of(finished.error)
    delay = retry_delay(task, claimed, cause)
    if delay is None:
        return failed(base, error)
    retry_at = datetime.now(UTC) + timedelta(seconds=delay)
    return Outcome(**base, state=TaskStatus.SCHEDULED, error=error, retry_at=retry_at)


def retry_delay(task: Task[Any, Any], claimed: Claimed, exc: BaseException) -> float | None:
    """Seconds until the retry, or None if this failure is final."""
    options = task.default_options
    if claimed.retries >= claimed.max_retries or isinstance(exc, InvalidArguments):
        return None  # (arguments that do not fit now never will)
    if isinstance(exc, Retry):
        return exc.delay if exc.delay is not None else options.backoff.delay(claimed.retries + 1)
    if isinstance(exc, options.retry_for):
        return options.backoff.delay(claimed.retries + 1)
    return None


def base_of(outcome: Outcome) -> dict[str, Any]:
    """The fields that every outcome of `outcome`'s attempt shares."""
    return {
        "task_id": outcome.task_id,
        "attempt": outcome.attempt,
        "worker_id": outcome.worker_id,
        "started_at": outcome.started_at,
        "in_workflow": outcome.in_workflow,
        "slot_key": outcome.slot_key,
    }


def failed(base: dict[str, Any], error: TaskError, reason: str = "failed") -> Outcome:
    """A final failure; its message goes to the dead-letter queue with `reason`."""
    return Outcome(**base, state=TaskStatus.FAILED, error=error, dead_reason=reason)


def too_many_deliveries(base: dict[str, Any], deliveries: int, limit: int) -> Outcome:
    """A task delivered again and again without an outcome: it kills its worker."""
    message = (
        f"delivered {deliveries} times without an outcome (max_deliveries={limit}): the task "
        "probably kills its worker (os._exit, out of memory, a crash in native code), so it "
        "is dead-lettered rather than run again"
    )
    return failed(base, TaskError("MaxDeliveriesExceeded", message), reason="max_deliveries")


def error_of(exc: BaseException) -> TaskError:
    cls = type(exc)
    module = cls.__module__
    name = cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
    text = "".join(traceback.format_exception(exc))
    return TaskError(name, str(exc), text[-MAX_TRACEBACK_CHARS:])
