"""Worker hooks in a real `taskq worker` process (issue 23): SIGTERM drains the running task,
then the stop hook runs; a failing start hook ends the process with one clear line."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import taskq
from tests.conftest import Backend
from tests.e2e.processes import Workers, wait_until

APP = "tests.e2e.hooks_app:app"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_sigterm_drains_the_task_then_runs_the_stop_hook(
    production: Backend, workers: Workers, tmp_path: Path
) -> None:
    # Given a worker whose start hook opened a client, running a task that uses it
    notes, go = tmp_path / "hooks.txt", tmp_path / "go"
    env = {"E2E_HOOKS_FILE": str(notes), "E2E_HOOKS_GO": str(go)}
    worker = await workers.start(concurrency=2, app=APP, env=env)
    client = taskq.App(production.broker_url, production.store_url)
    slow = client.task(name="hooks.slow")(_slow_stub)
    async with client:
        handle = await slow.submit()

        async def started() -> bool:
            return "task started" in lines(notes)

        await wait_until(started, within=30, what="the task started")
        # When the worker gets SIGTERM mid-task, and the task then finishes
        worker.process.send_signal(signal.SIGTERM)

        async def draining() -> bool:
            return "SIGTERM: finishing running tasks" in worker.output()

        await wait_until(draining, within=30, what="the worker to start draining")
        go.touch()
        await asyncio.to_thread(worker.process.wait, 30)
        record = await handle.info()
    # Then the task finished with the client open, and only then the stop hook closed it
    assert lines(notes) == [
        "start", "task started", "task done (client open)", "stop (client open)"
    ]  # fmt: skip
    assert record.state is taskq.TaskStatus.SUCCEEDED
    assert worker.process.returncode == 0


async def test_a_failing_start_hook_ends_the_worker_with_one_clear_line(
    workers: Workers, tmp_path: Path
) -> None:
    # Given a worker whose start hook raises
    notes = tmp_path / "hooks.txt"
    env = {"E2E_HOOKS_FILE": str(notes), "E2E_HOOKS_FAIL": "1"}
    worker = await workers.spawn(concurrency=1, app=APP, env=env)
    # When it starts, then it exits 1 ...
    deadline = time.monotonic() + 60
    while worker.process.poll() is None:
        assert time.monotonic() < deadline, "the worker did not exit"
        await asyncio.sleep(0.1)
    assert worker.process.returncode == 1
    # ... saying which hook failed and why; its stop hook ran
    output = worker.output()
    assert "worker start hook tests.e2e.hooks_app.open_client failed" in output
    assert "the payment gateway is unreachable" in output
    assert lines(notes) == ["stop (client never opened)"]


async def _slow_stub() -> None:
    """The client's declaration of `hooks.slow` (the worker runs the real one)."""
