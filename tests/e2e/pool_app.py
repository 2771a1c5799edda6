"""The app that the worker-pool end-to-end tests run: tasks that say which process ran them.

`taskq worker tests.e2e.pool_app:app` takes its URLs from TASKQ_BROKER_URL / TASKQ_STORE_URL;
the test process builds its own copy with `build(...)`, so both sides register the same
names. A task that must be seen starting appends `TASK_ID PID ATTEMPT` to the file it is
given (one O_APPEND write, so lines from several processes never interleave).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from typing import Any

import taskq
from tests.e2e.worker_app import append_line

# What `hog` allocated stays here until the process exits: a leak, as the limit expects.
_kept: list[bytearray] = []


def started(path: str) -> int:
    """Append `TASK_ID PID ATTEMPT` to `path`; → this process's pid."""
    ctx = taskq.context()
    append_line(path, f"{ctx.id} {os.getpid()} {ctx.attempt}")
    return os.getpid()


async def nap(first: float, then: float, log: str) -> int:
    """Say we started, then sleep `first` s on attempt 1 and `then` s on later ones; → pid."""
    pid = await asyncio.to_thread(started, log)
    await asyncio.sleep(first if taskq.context().attempt == 1 else then)
    return pid


def doze(first: float, then: float, log: str) -> int:
    """`nap` as a plain def: it runs in the worker's thread pool, where nothing can cancel it."""
    pid = started(log)
    time.sleep(first if taskq.context().attempt == 1 else then)
    return pid


async def pid(seconds: float) -> int:
    """Sleep `seconds`; → the pid of the worker process that ran this."""
    await asyncio.sleep(seconds)
    return os.getpid()


def hog(megabytes: int, hold: float, log: str) -> int:
    """A plain def that allocates `megabytes` MB, touches every page and keeps it, then
    sleeps `hold` s; → pid."""
    started(log)
    block = bytearray(megabytes * 10**6)
    for offset in range(0, len(block), 4096):  # resident only once written
        block[offset] = 1
    _kept.append(block)
    time.sleep(hold)
    return os.getpid()


async def block_loop(seconds: float) -> None:
    """Block the event loop (the mistake the watchdog exists to name)."""
    time.sleep(seconds)  # noqa: ASYNC251


@dataclasses.dataclass(frozen=True)
class PoolApp:
    app: taskq.App
    nap: taskq.Task[[float, float, str], int]
    doze: taskq.Task[[float, float, str], int]
    pid: taskq.Task[[float], int]
    hog: taskq.Task[[int, float, str], int]
    block_loop: taskq.Task[[float], None]


def build(broker_url: str | None = None, store_url: str | None = None, **settings: Any) -> PoolApp:
    """An app with the pool tests' tasks under fixed names; None URLs come from TASKQ_*."""
    app = taskq.App(broker_url, store_url, **settings)
    return PoolApp(
        app=app,
        nap=app.task(name="pool.nap")(nap),
        doze=app.task(name="pool.doze")(doze),
        pid=app.task(name="pool.pid")(pid),
        hog=app.task(name="pool.hog")(hog),
        block_loop=app.task(name="pool.block_loop")(block_loop),
    )


app = build().app
