"""The app `taskq worker tests.e2e.hooks_app:app` runs in the worker-hook end-to-end tests:
its hooks and its task write lines to E2E_HOOKS_FILE; with E2E_HOOKS_FAIL set, its start
hook raises."""

from __future__ import annotations

import asyncio
import os

import taskq

app = taskq.App()


def _note(line: str) -> None:
    with open(os.environ["E2E_HOOKS_FILE"], "a") as file:
        file.write(line + "\n")


@app.on_worker_start
async def open_client(state: taskq.WorkerState) -> None:
    if os.environ.get("E2E_HOOKS_FAIL"):
        raise RuntimeError("the payment gateway is unreachable")
    state.client = "open"
    _note("start")


@app.on_worker_stop
async def close_client(state: taskq.WorkerState) -> None:
    _note(f"stop (client {getattr(state, 'client', 'never opened')})")


@app.task(name="hooks.slow")
async def slow() -> None:
    _note("task started")
    await asyncio.sleep(1.0)
    _note(f"task done (client {taskq.context().state.client})")
