"""A reference to a submitted task: its status and, when it ends, its result."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from taskq.client import cancel
from taskq.client.events import TaskEvent
from taskq.exceptions import TaskCancelled, TaskExpired, TaskFailed, TaskNotFound
from taskq.status import TaskStatus

if TYPE_CHECKING:
    from taskq.client.runtime import Runtime
    from taskq.client.waiter import Waiter, Watch
    from taskq.store import TaskRecord

R = TypeVar("R")

# Events are only hints; if one is ever lost, a waiter still re-reads the store this often,
# and much more often while the broker is unreachable and events cannot be subscribed.
_SAFETY_RECHECK = 30.0
_UNBOUND_RECHECK = 1.0


class TaskHandle(Generic[R]):
    """Returned by `submit()` and `app.get()`; cheap to create, holds no connection."""

    def __init__(
        self,
        runtime: Runtime,
        task_id: str,
        *,
        created_at: float | None = None,
        returns: Any = Any,
    ) -> None:
        self._runtime = runtime
        self.id = task_id
        # The task's return annotation: what `result()` rebuilds its value as.
        self._returns = returns
        # When this client began submitting the task (monotonic), if this handle made it.
        self._created_at = created_at

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
        record = await self._runtime.store.get_task(self.id)
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
        if (await cancel.cancel_many(self._runtime, [self.id]))[self.id]:
            return True
        await self.info()  # raises TaskNotFound if there is no such task
        return False

    async def attempts(self) -> list[dict[str, Any]]:
        """Every attempt so far: number, worker, state, start, end, error."""
        return await self._runtime.store.list_attempts(self.id)

    async def result(self, timeout: float | None = None) -> R:  # noqa: ASYNC109 (public API)
        """Wait for the task to end and return its value.

        Raises `TaskFailed` (with the remote error), `TaskCancelled` or `TaskExpired`, and the
        built-in `TimeoutError` if `timeout` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter = self._runtime.waiter
        async with waiter.watch([self.id]) as watch:
            created = self._created_at
            if created is not None and not waiter.may_have_ended_since(watch, created):
                # Its end cannot have passed unheard: wait for it before the first read.
                await wait_for_change(waiter, watch, deadline, watch.may_have_ended)
            while True:
                if (carried := watch.results.get(self.id)) is not None:
                    return self._value(carried[0])  # (sent once durable)
                watch.may_have_ended.clear()  # before the read, so an end after it is not missed
                record = await self.info()
                if record.state.is_final:
                    return self.value_from(record)
                if deadline is not None and deadline <= time.monotonic():
                    raise TimeoutError(f"task {self.id} is still {record.state} after {timeout} s")
                # (`running` and progress events need no re-read: only an end does.)
                await wait_for_change(waiter, watch, deadline, watch.may_have_ended)

    def _value(self, plain: Any) -> R:
        value: R = self._runtime.serializer.load(plain, self._returns)
        return value

    def value_from(self, record: TaskRecord) -> R:
        """The value of this task's final row, as its type (or the exception it ended with)."""
        return self._value(outcome_of(record))

    def result_sync(self, timeout: float | None = None) -> R:
        """`result()` for sync code, on the app's background loop (a handle from
        `submit_sync` or `app.get_sync`)."""
        return self._runtime.sync.call(lambda: self.result(timeout))

    async def events(self) -> AsyncIterator[TaskEvent]:
        """Each state change and progress update as it happens, ending at a final state.

        Starts with the task's current state (and latest progress) from the store, so a
        late subscriber misses nothing that matters; if events are lost (a reconnect), the
        states in between are filled in from the store, though progress may skip ahead.
        """
        waiter, load = self._runtime.waiter, self._runtime.serializer.load
        async with waiter.watch([self.id], with_events=True) as watch:
            assert watch.events is not None
            seen = SeenEvents()
            arrived: list[TaskEvent | None] = []
            reread = True
            while True:
                pending: list[TaskEvent | None] = []
                if reread:
                    record = await self.info()
                    progress = TaskEvent.progress_of(record, load)
                    pending += [TaskEvent.state_of(record), progress]
                for event in pending + arrived:
                    if event is not None and seen.is_new(event):
                        yield event
                        if event.is_final:
                            return
                watch.changed.clear()
                if watch.events.empty():  # (events that came while the caller had one wait)
                    await wait_for_change(waiter, watch, None)
                arrived = []
                while not watch.events.empty():
                    wire = watch.events.get_nowait()  # (None: an unsigned end, a hint)
                    arrived.append(None if wire is None else TaskEvent.from_wire(wire, load))
                # Silence until the re-check time, or a bare hint: look at the store.
                reread = not arrived or None in arrived


class SeenEvents:
    """What `events()` has yielded of one task, to drop repeats and events older than the
    store (the leader's `queued` may come after a worker's `running`)."""

    def __init__(self) -> None:
        self.state: TaskStatus | None = None
        self.attempt = 0
        self.progress = (0, 0)  # (attempt, seq) of the newest progress yielded

    def is_new(self, event: TaskEvent) -> bool:
        if event.attempt < self.attempt:
            # From before the latest attempt seen: events of different processes (the
            # submitter's `queued`, the worker's `running`) may arrive out of order.
            return False
        if event.kind == "progress":
            if self.state is not TaskStatus.RUNNING or (event.attempt, event.seq) <= self.progress:
                return False
            self.progress = (event.attempt, event.seq)
        elif event.state is self.state:
            return False
        self.state = event.state
        self.attempt = max(self.attempt, event.attempt)
        return True


async def wait_for_change(
    waiter: Waiter, watch: Watch, deadline: float | None, event: asyncio.Event | None = None
) -> None:
    """Until an event arrives (`event`: the watch's `changed` unless given), the deadline
    passes, or it is time to re-read the store."""
    wait = _SAFETY_RECHECK if waiter.trusts_events(watch) else _UNBOUND_RECHECK
    if deadline is not None:
        wait = max(min(wait, deadline - time.monotonic()), 0.0)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):
            await (watch.changed if event is None else event).wait()


def outcome_of(record: TaskRecord) -> Any:
    """The task's value, or the exception that stands for how it ended."""
    if record.state is TaskStatus.SUCCEEDED:
        return record.result
    if record.state is TaskStatus.CANCELLED:
        raise TaskCancelled(f"task {record.id} was cancelled")
    if record.state is TaskStatus.EXPIRED:
        raise TaskExpired(f"task {record.id} expired before it ran")
    raise TaskFailed(
        record.id,
        record.error.type if record.error else "Unknown",
        record.error.message if record.error else "",
        record.error.traceback if record.error else "",
    )
