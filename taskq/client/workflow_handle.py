"""A reference to a submitted workflow: its state as a whole, its value, its steps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from taskq.client import cancel
from taskq.client.events import TaskEvent
from taskq.client.handle import SeenEvents, TaskHandle, wait_for_change
from taskq.exceptions import TaskCancelled, TaskFailed
from taskq.status import TaskStatus
from taskq.store import workflows

if TYPE_CHECKING:
    from taskq.client.runtime import Runtime

# How long `result()` lets the ends of steps gather before it reads the store again.
_BURST = 0.02


class WorkflowHandle:
    """Returned by `wf.submit()` and `app.get_workflow(id)`; holds no connection."""

    def __init__(
        self,
        runtime: Runtime,
        workflow_id: str,
        output: Any,
        returns: Mapping[str, Any] | None = None,
    ) -> None:
        self._runtime = runtime
        self.id = workflow_id
        self._output = output  # (the shape of its value: a step number, or a list of shapes)
        # A task name → its return annotation: what `result()` rebuilds each value as.
        self._returns = returns or {}
        self._step_ids: list[str] | None = None

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.id}>"

    async def tasks(self) -> list[TaskHandle[Any]]:
        """A handle on every step, in step order (parents before their children)."""
        return [TaskHandle(self._runtime, task_id) for task_id in await self._ids()]

    async def status(self) -> TaskStatus:
        """`succeeded` once the steps that make its value have; `failed` once every step
        has ended and one failed; `cancelled` likewise if none failed; before that,
        `running` while a step runs, else `queued` or `scheduled`."""
        store = self._runtime.store
        # (Its steps all end before its value's do: the steps making it up wait for the rest.)
        counts = await store.workflow_states(self.id)
        if all(state.is_final for state in counts):
            outputs = workflows.steps_in(self._output)
            ended = await store.ended_steps(self.id, outputs)
            if len(ended) == len(set(outputs)) and all(
                end.state is TaskStatus.SUCCEEDED for end in ended.values()
            ):
                return TaskStatus.SUCCEEDED
            failed = counts.get(TaskStatus.FAILED) or counts.get(TaskStatus.EXPIRED)
            return TaskStatus.FAILED if failed else TaskStatus.CANCELLED
        for state in (TaskStatus.RUNNING, TaskStatus.QUEUED):
            if counts.get(state):
                return state
        return TaskStatus.SCHEDULED

    async def result(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 (public API)
        """Wait for the steps that make the workflow's value to end; → that value (the last
        step's; a group's: the list of its members'). Raises `TaskFailed` naming the step
        that failed, `TaskCancelled` if it was cancelled, `TimeoutError` past `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        outputs = workflows.steps_in(self._output)
        ids = await self._ids()
        waiter, store = self._runtime.waiter, self._runtime.store
        ended: dict[int, workflows.EndedStep] = {}
        pending = sorted(set(outputs))
        # Every step is watched: steps cancelled because another failed announce nothing,
        # but the failure does.
        async with waiter.watch(ids) as watch:
            while True:
                watch.may_have_ended.clear()  # (before the read: an end after it is heard)
                ended.update(await store.ended_steps(self.id, pending))
                pending = [step for step in pending if step not in ended]
                if not pending:
                    break
                if deadline is not None and deadline <= time.monotonic():
                    raise TimeoutError(f"workflow {self.id} has not ended after {timeout} s")
                await wait_for_change(waiter, watch, deadline, watch.may_have_ended)
                await asyncio.sleep(_BURST)  # (steps end in bursts: one read for each)
        if any(state is not TaskStatus.SUCCEEDED for state, *_ in ended.values()):
            raise await self._failure()
        load = self._runtime.serializer.load
        values = {
            step: load(end.result, self._returns.get(end.name, Any)) for step, end in ended.items()
        }
        return workflows.value_of(self._output, values)

    async def _failure(self) -> Exception:
        failed = await self._runtime.store.first_failure(self.id)
        if failed is None:
            return TaskCancelled(f"workflow {self.id} was cancelled")
        error_type = failed.error.type if failed.error else failed.state.value
        message = failed.error.message if failed.error else ""
        return TaskFailed(
            failed.id,
            error_type,
            f"workflow {self.id}: step {failed.step} (task {failed.name!r}) {failed.state.value}:"
            f" {message}",
            failed.error.traceback if failed.error else "",
        )

    async def cancel(self) -> bool:
        """Cancel every step not yet ended (running ones are told to stop); → whether any
        was."""
        cancelled = await cancel.cancel_many(self._runtime, await self._ids())
        return any(cancelled.values())  # (False for steps that had already ended)

    async def events(self) -> AsyncIterator[TaskEvent]:
        """Every step's state changes and progress as they happen (each step's current
        state first); ends once the workflow has ended, with each step's final state."""
        ids = await self._ids()
        waiter, load, store = (
            self._runtime.waiter,
            self._runtime.serializer.load,
            self._runtime.store,
        )
        seen: dict[str, SeenEvents] = {}  # per step: what was yielded, to drop stale events

        def fresh(event: TaskEvent) -> bool:
            return seen.setdefault(event.task_id, SeenEvents()).is_new(event)

        async with waiter.watch(ids, with_events=True) as watch:
            assert watch.events is not None
            for record in (await store.get_tasks(ids)).values():
                if fresh(current := TaskEvent.state_of(record)):
                    yield current
            while not (await self.status()).is_final:
                watch.changed.clear()
                if watch.events.empty():
                    await wait_for_change(waiter, watch, None)
                while not watch.events.empty():
                    wire = watch.events.get_nowait()  # (None: a hint to re-read)
                    if wire is not None and (event := TaskEvent.from_wire(wire, load)):
                        if fresh(event):
                            yield event
        # (The store may say "ended" before the last events arrive: its rows fill them in.)
        for record in (await store.get_tasks(ids)).values():
            if fresh(final := TaskEvent.state_of(record)):
                yield final

    async def _ids(self) -> list[str]:
        if self._step_ids is None:
            self._step_ids = await self._runtime.store.workflow_step_ids(self.id)
        return self._step_ids
