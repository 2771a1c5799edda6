"""A reference to a submitted task: its status and, when it ends, its result."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from taskq.exceptions import TaskCancelled, TaskExpired, TaskFailed, TaskNotFound
from taskq.status import TaskStatus

if TYPE_CHECKING:
    from taskq.app import App
    from taskq.store import TaskRecord

R = TypeVar("R")

# Events are only hints; if one is ever lost, a waiter still re-reads the store this often,
# and much more often while the broker is unreachable and events cannot be subscribed.
_SAFETY_RECHECK = 30.0
_UNBOUND_RECHECK = 1.0


class TaskHandle(Generic[R]):
    """Returned by `submit()` and `app.get()`; cheap to create, holds no connection."""

    def __init__(self, app: App, task_id: str) -> None:
        self._app = app
        self.id = task_id

    def __repr__(self) -> str:
        return f"<TaskHandle {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    async def status(self) -> TaskStatus:
        return (await self.info()).state

    async def info(self) -> TaskRecord:
        """The task's whole row: state, timings, attempts, result or error."""
        record = await self._app.store.get_task(self.id)
        if record is None:
            raise TaskNotFound(f"no task with id {self.id}")
        return record

    async def result(self, timeout: float | None = None) -> R:  # noqa: ASYNC109 (public API)
        """Wait for the task to end and return its value.

        Raises `TaskFailed` (with the remote error), `TaskCancelled` or `TaskExpired`, and the
        built-in `TimeoutError` if `timeout` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter = self._app.waiter
        async with waiter.watch(self.id) as changed:
            while True:
                changed.clear()  # before the read, so a change after it is not missed
                record = await self.info()
                if record.state.is_final:
                    return _outcome(record)  # type: ignore[no-any-return]
                wait = _SAFETY_RECHECK if waiter.trusts_events(self.id) else _UNBOUND_RECHECK
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(
                            f"task {self.id} is still {record.state} after {timeout} s"
                        )
                    wait = min(wait, remaining)
                try:
                    async with asyncio.timeout(wait):
                        await changed.wait()
                except TimeoutError:
                    pass  # re-read the store; the deadline check above decides


def _outcome(record: TaskRecord) -> Any:
    if record.state is TaskStatus.SUCCEEDED:
        return record.result
    error = record.error or {}
    if record.state is TaskStatus.CANCELLED:
        raise TaskCancelled(f"task {record.id} was cancelled")
    if record.state is TaskStatus.EXPIRED:
        raise TaskExpired(f"task {record.id} expired before it ran")
    raise TaskFailed(
        record.id,
        error.get("type", "Unknown"),
        error.get("message", ""),
        error.get("traceback", ""),
    )
