"""Many tasks at once: a submitted batch, waiting for many, cancelling many.

Waiting on N tasks costs one event binding (a wildcard, past a few tasks) and one store
query per wake-up for all of them, never a query or a binding per task.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from taskq import protocol
from taskq.events import announce
from taskq.exceptions import TaskNotFound
from taskq.handle import TaskHandle, outcome_of, wait_for_change
from taskq.status import TaskStatus

if TYPE_CHECKING:
    from taskq.app import App
    from taskq.store import TaskRecord

R = TypeVar("R")

_READ_CHUNK = 1_000  # ids per store query


class Batch(Sequence[TaskHandle[R]], Generic[R]):
    """The handles of one `submit_many`, in item order; `id` is recorded on every task
    (`taskq tasks --batch ID`, `app.list_tasks(batch=ID)`)."""

    def __init__(self, batch_id: str, handles: list[TaskHandle[R]]) -> None:
        self.id = batch_id
        self._handles = handles

    def __repr__(self) -> str:
        return f"<Batch {self.id} of {len(self._handles)} tasks>"

    @overload
    def __getitem__(self, index: int) -> TaskHandle[R]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[TaskHandle[R]]: ...

    def __getitem__(self, index: int | slice) -> TaskHandle[R] | Sequence[TaskHandle[R]]:
        return self._handles[index]

    def __len__(self) -> int:
        return len(self._handles)

    def __iter__(self) -> Iterator[TaskHandle[R]]:
        return iter(self._handles)


async def as_completed(
    app: App,
    handles: Iterable[TaskHandle[Any]],
    timeout: float | None = None,  # noqa: ASYNC109
) -> AsyncIterator[TaskHandle[Any]]:
    """Yield each handle as its task reaches a final state (in the order they finish)."""
    waiting = {handle.id: handle for handle in handles}
    deadline = None if timeout is None else time.monotonic() + timeout
    if not waiting:
        return
    async with app.waiter.watch(list(waiting)) as watch:
        while waiting:
            watch.changed.clear()  # before the read, so a change after it is not missed
            for task_id in await _finished(app, list(waiting)):
                yield waiting.pop(task_id)
            if not waiting:
                return
            if deadline is not None and deadline <= time.monotonic():
                raise TimeoutError(f"{len(waiting)} tasks still unfinished after {timeout} s")
            await wait_for_change(app.waiter, watch, deadline)


async def gather(
    app: App,
    handles: Iterable[TaskHandle[Any]],
    *,
    timeout: float | None = None,  # noqa: ASYNC109 (public API)
    return_exceptions: bool = False,
) -> list[Any]:
    """The results of all the tasks, in the order of `handles`.

    A task that failed, was cancelled or expired raises its exception here once all have
    finished; with `return_exceptions=True` the exception takes its place in the list.
    """
    ordered = list(handles)
    async for _ in as_completed(app, ordered, timeout):
        pass
    records = await _records(app, [handle.id for handle in ordered])
    results: list[Any] = []
    for handle in ordered:
        try:
            results.append(outcome_of(records[handle.id]))
        except Exception as exc:
            if not return_exceptions:
                raise
            results.append(exc)
    return results


async def cancel_many(app: App, task_ids: Iterable[str]) -> dict[str, bool]:
    """Cancel every task given; → for each id, whether it was cancelled (False: it had
    already finished, or there is no such task)."""
    ids = list(dict.fromkeys(task_ids))
    states = await app.store.cancel_many(ids)
    for task_id, (state, name, queue) in states.items():
        if state is TaskStatus.CANCELLED:
            event = protocol.Event(task_id=task_id, state=state.value, name=name, queue=queue)
            await announce(app.broker, event)
        else:  # running: its worker must be told
            await app.broker.publish_control(protocol.encode_control("cancel", task_id))
    return {task_id: task_id in states for task_id in ids}


async def _finished(app: App, task_ids: Sequence[str]) -> list[str]:
    finished = []
    for start in range(0, len(task_ids), _READ_CHUNK):
        chunk = task_ids[start : start + _READ_CHUNK]
        states = await app.store.get_states(chunk)
        missing = [task_id for task_id in chunk if task_id not in states]
        if missing:
            raise TaskNotFound(f"no task with id {missing[0]}")
        finished += [task_id for task_id in chunk if states[task_id].is_final]
    return finished


async def _records(app: App, task_ids: Sequence[str]) -> dict[str, TaskRecord]:
    return await app.store.get_tasks(task_ids)
