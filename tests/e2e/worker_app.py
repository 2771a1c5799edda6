"""The app that `taskq worker tests.e2e.worker_app:app` runs in the end-to-end tests.

The worker subprocess takes its URLs from TASKQ_BROKER_URL / TASKQ_STORE_URL; the test
process builds its own copy with `build(...)`, so both sides register the same task names.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path
from typing import Any

import taskq


async def noop(i: int) -> int:
    return i * 2


def record(label: str) -> None:
    """Append `label` to the file named by E2E_ORDER_FILE: one line per run, in run order."""
    with Path(os.environ["E2E_ORDER_FILE"]).open("a") as order:
        order.write(label + "\n")
        order.flush()


def append_line(path: str, line: str) -> None:
    """One write(2) with O_APPEND: lines from several processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


async def slow(seconds: float, marker: str) -> int:
    """Touch `marker`, then sleep: `seconds` on the first attempt, 0.1 s on any later one."""
    attempt = taskq.context().attempt
    await asyncio.to_thread(Path(marker).touch)
    await asyncio.sleep(seconds if attempt == 1 else 0.1)
    return attempt


async def steady(seconds: float) -> int:
    """Sleep `seconds` on every attempt; → the attempt."""
    await asyncio.sleep(seconds)
    return taskq.context().attempt


async def spin() -> None:
    """Never yields: only a hard limit, from outside the event loop, can end it."""
    while True:
        pass


async def hog(megabytes: int) -> None:
    """Take `megabytes` of memory, a MiB at a time, then hold it."""
    held = [bytearray(2**20) for _ in range(megabytes)]
    await asyncio.sleep(60)
    del held


async def poison(delay: float) -> None:
    """Kill the worker process `delay` s in, every time: a task that can never succeed."""
    await asyncio.sleep(delay)
    os._exit(1)


@dataclasses.dataclass(frozen=True)
class E2EApp:
    app: taskq.App
    noop: taskq.Task[[int], int]
    record: taskq.Task[[str], None]
    slow: taskq.Task[[float, str], int]
    steady: taskq.Task[[float], int]
    spin: taskq.Task[[], None]
    hog: taskq.Task[[int], None]
    poison: taskq.Task[[float], None]


def build(broker_url: str | None = None, store_url: str | None = None, **settings: Any) -> E2EApp:
    """An app with the three tasks under fixed names; URLs left as None come from TASKQ_*."""
    app = taskq.App(broker_url, store_url, **settings)
    return E2EApp(
        app=app,
        noop=app.task(name="e2e.noop")(noop),
        record=app.task(name="e2e.record")(record),
        slow=app.task(name="e2e.slow")(slow),
        steady=app.task(name="e2e.steady")(steady),
        spin=app.task(name="e2e.spin")(spin),
        hog=app.task(name="e2e.hog")(hog),
        poison=app.task(name="e2e.poison")(poison),
    )


app = build().app
