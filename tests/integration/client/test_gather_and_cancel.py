"""Waiting for many (`gather`, `as_completed`) and cancelling many (`cancel_many`)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import taskq
from tests.conftest import Backend
from tests.integration.client.helpers import (
    DEADLINE,
    Status,
)

# -- gather, as_completed ---------------------------------------------------------------------


async def test_gather_raises_the_failure_only_after_every_task_finished(backend: Backend) -> None:
    app = backend.app()
    release = asyncio.Event()

    @app.task(name="step")
    async def step(kind: str) -> str:
        if kind == "fail":
            raise ValueError("bad step")
        if kind == "held":
            await asyncio.wait_for(release.wait(), DEADLINE)
        return kind

    async with app, app.worker():
        handles = [await step.submit(kind) for kind in ("ok", "fail", "held")]
        gathering = asyncio.create_task(app.gather(handles, timeout=DEADLINE))
        # Given the failure is known while another task still runs
        with pytest.raises(taskq.TaskFailed):
            await handles[1].result(timeout=DEADLINE)
        assert not gathering.done()
        release.set()
        # Then gather raises that failure, once the held task has finished too
        with pytest.raises(taskq.TaskFailed) as caught:
            await gathering
        assert await handles[2].status() is Status.SUCCEEDED
    assert (caught.value.task_id, caught.value.error_type) == (handles[1].id, "ValueError")


async def test_gather_return_exceptions_puts_each_error_in_its_place(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="maybe")
    async def maybe(fail: bool) -> str:
        if fail:
            raise KeyError("missing")
        return "fine"

    async with app, app.worker():
        handles = [await maybe.submit(False), await maybe.submit(True), await maybe.submit(False)]
        results = await app.gather(handles, timeout=DEADLINE, return_exceptions=True)
    assert results[0] == "fine" and results[2] == "fine"
    assert isinstance(results[1], taskq.TaskFailed)
    assert (results[1].task_id, results[1].error_type) == (handles[1].id, "KeyError")


async def test_gather_and_as_completed_time_out_with_timeout_error(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="never_runs")
    async def never_runs() -> None:
        pass

    async with app:  # no worker: the task stays queued
        handle = await never_runs.submit()
        with pytest.raises(TimeoutError):
            await app.gather([handle], timeout=0.3)
        with pytest.raises(TimeoutError):
            async for _ in app.as_completed([handle], timeout=0.3):
                pass
        assert await handle.status() is Status.QUEUED


async def test_as_completed_yields_each_handle_once_in_finishing_order(backend: Backend) -> None:
    # Given three tasks, each held until the test releases it
    app = backend.app()
    gates = {label: asyncio.Event() for label in ("a", "b", "c")}

    @app.task(name="gated")
    async def gated(label: str) -> str:
        await asyncio.wait_for(gates[label].wait(), DEADLINE)
        return label

    async with app, app.worker(concurrency=3):
        handles = {label: await gated.submit(label) for label in gates}
        by_id = {handle.id: label for label, handle in handles.items()}
        # When they are released one at a time, the next once the previous was yielded
        release_order = ["c", "a", "b"]
        gates[release_order[0]].set()
        yielded = []
        async for handle in app.as_completed(handles.values(), timeout=DEADLINE):
            yielded.append(by_id[handle.id])
            if len(yielded) < len(release_order):
                gates[release_order[len(yielded)]].set()
    # Then they came in the order they finished, each once
    assert yielded == release_order


# -- cancel_many ------------------------------------------------------------------------------


async def test_cancel_many_cancels_waiting_tasks_and_reports_the_others(backend: Backend) -> None:
    app = backend.app()
    ran: list[str] = []

    @app.task(name="job")
    async def job(label: str) -> None:
        ran.append(label)

    async with app:
        async with app.worker():
            done = await job.submit("done")
            await done.result(timeout=DEADLINE)
        ran.clear()
        # Given three queued tasks (no worker runs), a finished one, and an unknown id
        waiting = [await job.submit(f"waiting {i}") for i in range(3)]
        unknown = str(uuid.uuid4())

        # When they are cancelled together
        answer = await app.cancel_many([h.id for h in waiting] + [done.id, unknown])

        # Then each waiting one was cancelled; the finished one and the unknown one were not
        assert answer == {**{h.id: True for h in waiting}, done.id: False, unknown: False}
        assert [await h.status() for h in waiting] == [Status.CANCELLED] * 3
        assert await done.status() is Status.SUCCEEDED
        # And an id that is not a UUID is refused
        with pytest.raises(taskq.TaskNotFound, match="not-a-uuid"):
            await app.cancel_many([waiting[0].id, "not-a-uuid"])
        # And a worker started now runs none of them
        behind = await job.submit("sentinel")
        async with app.worker(concurrency=1):
            await behind.result(timeout=DEADLINE)
    assert ran == ["sentinel"]


async def test_cancel_many_stops_a_running_task(backend: Backend) -> None:
    app = backend.app()
    started = asyncio.Event()

    @app.task(name="long")
    async def long() -> None:
        started.set()
        await asyncio.Event().wait()

    async with app, app.worker():
        handle = await long.submit()
        await asyncio.wait_for(started.wait(), DEADLINE)
        assert await app.cancel_many([handle.id]) == {handle.id: True}
        with pytest.raises(taskq.TaskCancelled):
            await handle.result(timeout=DEADLINE)
        assert await handle.status() is Status.CANCELLED
