"""The app `taskq worker tests.e2e.hooks_app:app` runs in the worker-hook end-to-end tests:
its hooks and its task write lines to E2E_HOOKS_FILE; its task runs until E2E_HOOKS_GO
exists; with E2E_HOOKS_FAIL set, its start hook raises."""

from __future__ import annotations

import os
import time
from pathlib import Path

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
def slow() -> None:
    """Runs (in a worker thread) until the file E2E_HOOKS_GO exists, which the test makes
    once SIGTERM has landed; at most a minute."""
    _note("task started")
    go, deadline = Path(os.environ["E2E_HOOKS_GO"]), time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    _note(f"task done (client {taskq.context().state.client})")
