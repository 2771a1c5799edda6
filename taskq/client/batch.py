"""Many tasks at once: a submitted batch, waiting for many, cancelling many.

Waiting on N tasks costs one event binding (a wildcard, past a few tasks) and one store
query per wake-up for all of them, never a query or a binding per task.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from taskq.client.handle import TaskHandle, wait_for_change
from taskq.exceptions import TaskNotFound

if TYPE_CHECKING:
    from taskq.client.runtime import Runtime
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
    runtime: Runtime,
    handles: Iterable[TaskHandle[Any]],
    timeout: float | None = None,  # noqa: ASYNC109
) -> AsyncIterator[TaskHandle[Any]]:
    """Yield each handle as its task reaches a final state (in the order they finish)."""
    waiting = {handle.id: handle for handle in handles}
    deadline = None if timeout is None else time.monotonic() + timeout
    if not waiting:
        return
    async with runtime.waiter.watch(list(waiting)) as watch:
        while waiting:
            watch.changed.clear()  # before the read, so a change after it is not missed
            for task_id in await _finished(runtime, list(waiting)):
                yield waiting.pop(task_id)
            if not waiting:
                return
            if deadline is not None and deadline <= time.monotonic():
                raise TimeoutError(f"{len(waiting)} tasks still unfinished after {timeout} s")
            await wait_for_change(runtime.waiter, watch, deadline)


async def gather(
    runtime: Runtime,
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
    async for _ in as_completed(runtime, ordered, timeout):
        pass
    records = await _records(runtime, [handle.id for handle in ordered])
    results: list[Any] = []
    for handle in ordered:
        try:
            results.append(handle.value_from(records[handle.id]))
        except Exception as exc:
            if not return_exceptions:
                raise
            results.append(exc)
    return results


async def _finished(runtime: Runtime, task_ids: Sequence[str]) -> list[str]:
    finished = []
    for start in range(0, len(task_ids), _READ_CHUNK):
        chunk = task_ids[start : start + _READ_CHUNK]
        states = await runtime.store.get_states(chunk)
        missing = [task_id for task_id in chunk if task_id not in states]
        if missing:
            raise TaskNotFound(f"no task with id {missing[0]}")
        finished += [task_id for task_id in chunk if states[task_id].is_final]
    return finished


async def _records(runtime: Runtime, task_ids: Sequence[str]) -> dict[str, TaskRecord]:
    return await runtime.store.get_tasks(task_ids)
