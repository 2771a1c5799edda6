"""Worker lifecycle hooks on both backends (issue 23, worker lifecycle): start hooks open what
tasks share on `taskq.context().state`, before the first task; stop hooks run once the
worker drained; a failing start hook stops the worker with its error and runs no task."""

from __future__ import annotations

import asyncio

import pytest

import taskq
from tests.conftest import Backend

DEADLINE = 15.0


async def test_tasks_share_what_start_hooks_opened_and_stop_hooks_close_it(
    backend: Backend,
) -> None:
    # Given start and stop hooks that open and close a shared resource, and tasks using it
    app = backend.app()
    order: list[str] = []

    @app.on_worker_start
    async def open_pool(state: taskq.WorkerState) -> None:
        order.append("start")
        state.pool = {"opened": True, "used": 0}

    @app.on_worker_stop
    async def close_pool(state: taskq.WorkerState) -> None:
        order.append(f"stop after {state.pool['used']} uses")
        state.pool["opened"] = False

    @app.task(name="hooks.use")
    async def use(n: int) -> bool:
        pool = taskq.context().state.pool
        pool["used"] += 1
        await asyncio.sleep(0.05)
        order.append(f"task {n}")
        return bool(pool["opened"])

    @app.task(name="hooks.use_in_thread")
    def use_in_thread() -> bool:
        return bool(taskq.context().state.pool["opened"])

    async with app:
        handles = [await use.submit(n) for n in range(3)]
        threaded = await use_in_thread.submit()
        # When a worker runs them and then stops
        async with app.worker():
            assert [await h.result(timeout=DEADLINE) for h in handles] == [True, True, True]
            assert await threaded.result(timeout=DEADLINE) is True
            assert order[0] == "start"
    # Then the start hook ran before every task (async and threaded saw the same state), and
    # the stop hook after all of them
    assert order[0] == "start"
    assert sorted(order[1:4]) == ["task 0", "task 1", "task 2"]
    assert order[-1] == "stop after 3 uses"  # (the threaded task only read it)


async def test_a_failing_start_hook_stops_the_worker_before_any_task(backend: Backend) -> None:
    # Given a start hook that fails, and a task waiting
    app = backend.app()
    stopped: list[str] = []

    @app.on_worker_start
    async def connect(state: taskq.WorkerState) -> None:
        raise ConnectionRefusedError("the cache at 127.0.0.1:1 refused")

    @app.on_worker_stop
    async def disconnect(state: taskq.WorkerState) -> None:
        stopped.append("stop ran")

    @app.task(name="hooks.waiting")
    async def waiting() -> None:
        pass

    async with app:
        handle = await waiting.submit()
        # When a worker starts, then it fails with the hook's error, naming the hook
        with pytest.raises(taskq.WorkerStartError) as caught:
            async with app.worker():
                pass
        # And it took no task; stop hooks still ran
        assert await handle.status() is taskq.TaskStatus.QUEUED
    assert "connect" in str(caught.value) and "refused" in str(caught.value)
    assert stopped == ["stop ran"]


def test_a_hook_must_be_an_async_function() -> None:
    app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:")

    def not_async(state: taskq.WorkerState) -> None:
        pass

    with pytest.raises(taskq.ConfigurationError):
        app.on_worker_start(not_async)  # type: ignore[arg-type]


async def test_state_outside_a_worker_says_so() -> None:
    with pytest.raises(taskq.TaskqError):
        taskq.TaskContext("id", "name", "queue", 1).state  # noqa: B018
