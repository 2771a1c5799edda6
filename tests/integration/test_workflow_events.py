"""A workflow's events(): no step goes back to an earlier state, whatever order events of
different processes arrive in (the leader's `queued` may come after a worker's `running`);
on the embedded default and on RabbitMQ + PostgreSQL."""

from __future__ import annotations

import asyncio

import taskq
from taskq import chain
from taskq.client import events
from tests.conftest import Backend
from tests.support import eventually

Status = taskq.TaskStatus


async def test_workflow_events_never_show_a_step_going_back_to_an_earlier_state(
    backend: Backend,
) -> None:
    # Given a chain whose second step is running (held at a gate), its workflow watched
    app = backend.app()
    gate = asyncio.Event()

    @app.task(name="bug.add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="bug.gated")
    async def gated(x: int) -> int:
        await gate.wait()
        return x

    async with app:
        handle = await chain(add.s(1, 2), gated.s()).submit()
        step = (await handle.tasks())[1].id
        seen: list[taskq.TaskEvent] = []

        async def watch() -> None:
            async for event in handle.events():
                seen.append(event)

        async with app.worker():
            watcher = asyncio.create_task(watch())
            await eventually(
                lambda: asyncio.sleep(0, [e.state for e in seen if e.task_id == step]),
                lambda states: Status.RUNNING in states,
                what="the gated step's running event",
            )
            # When the leader's `queued` for that step arrives only now (the leader announces
            # it after its commit, scheduler/loops.py: a worker may claim the step and
            # announce `running` first), followed by a progress report of the running step
            late = [
                events.event(step, Status.QUEUED, name="bug.gated", queue="default", attempt=0),
                events.event(
                    step, Status.RUNNING, name="bug.gated", queue="default", attempt=1,
                    progress=0.5, message="half", data={}, seq=1,
                ),
            ]  # fmt: skip
            await events.announce_many(app.broker, late, app.runtime.event_signer)
            await eventually(
                lambda: asyncio.sleep(0, [e.kind for e in seen if e.task_id == step]),
                lambda kinds: "progress" in kinds,
                what="the progress report",
            )
            gate.set()
            await asyncio.wait_for(watcher, 10)
    # Then the stale `queued` was dropped, as a task's own events() drops it (attempt 0 is
    # older than the running attempt 1); observed: [scheduled, queued, running, queued, ...]
    states = [e.state.value for e in seen if e.task_id == step and e.kind == "state"]
    assert "queued" not in states[states.index("running") :], states
