"""A reference to a submitted task: its status and, when it ends, its result."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from taskq import protocol
from taskq.broker import topology
from taskq.exceptions import TaskCancelled, TaskExpired, TaskFailed, TaskNotFound
from taskq.status import TaskStatus
from taskq.store import lifecycle

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

    async def cancel(self) -> bool:
        """Cancel the task; → False if it had already finished (then nothing changed).

        A `scheduled` or `queued` task never starts. A running one is cancelled on its
        worker within about a second (its code gets `CancelledError`, so its `finally`
        blocks run). Either way it ends `cancelled`, is never retried, and `result()`
        raises `TaskCancelled`.
        """
        app = self._app
        state = await app.store.run(lambda conn: lifecycle.request_cancel(conn, self.id))
        if state is None:
            await self.info()  # raises TaskNotFound if there is no such task
            return False
        if state is TaskStatus.CANCELLED:
            event = protocol.encode_event(self.id, state.value)
            await app.broker.publish_event(topology.event_key(self.id), event)
        else:
            await app.broker.publish_control(protocol.encode_control("cancel", self.id))
        return True

    async def attempts(self) -> list[dict[str, Any]]:
        """Every attempt so far: number, worker, state, start, end, error."""
        return await self._app.store.run(lambda conn: lifecycle.list_attempts(conn, self.id))

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
