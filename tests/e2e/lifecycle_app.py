"""The app `taskq worker tests.e2e.lifecycle_app:app` runs in the lifecycle end-to-end tests.

Its tasks leave traces in files the test names (a marker, one line per run), so the test
process sees what ran in the worker's process and how often. The worker subprocess takes
its URLs, and TASKQ_LEASE_AFTER / TASKQ_LEASE_DURATION, from the environment; the test
process builds its own copy with `build(...)`, so both sides register the same task names.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

import taskq
from tests.e2e.worker_app import append_line, noop

POISON_MAX_DELIVERIES = 3


async def hold(seconds: float, started: str, cleaned: str) -> str:
    """Write `started`, then await for `seconds`; the `finally` writes `cleaned`, which is
    how the test sees that a cancel ran the task's own cleanup."""
    try:
        append_line(started, str(os.getpid()))
        await asyncio.sleep(seconds)
        return "finished"
    finally:
        append_line(cleaned, "finally ran")


def flag_is_up(flag: str) -> bool:
    return os.path.exists(flag)


async def poison(flag: str, runs: str) -> str:
    """While the file `flag` exists, kill the worker process at once (as a crash in native
    code or the OOM killer would): no outcome is ever stored. One line in `runs` per run."""
    append_line(runs, str(os.getpid()))
    if flag_is_up(flag):
        os._exit(1)
    return "survived"


async def long(seconds: float, runs: str) -> int:
    """One line in `runs` per execution; await `seconds` on attempt 1, 0.1 s on any later."""
    attempt = taskq.context().attempt
    append_line(runs, f"{os.getpid()} {attempt}")
    await asyncio.sleep(seconds if attempt == 1 else 0.1)
    return attempt


@dataclasses.dataclass(frozen=True)
class LifecycleApp:
    app: taskq.App
    noop: taskq.Task[[int], int]
    hold: taskq.Task[[float, str, str], str]
    poison: taskq.Task[[str, str], str]
    long: taskq.Task[[float, str], int]


def build(
    broker_url: str | None = None, store_url: str | None = None, **settings: Any
) -> LifecycleApp:
    """An app with these tasks under fixed names; URLs left as None come from TASKQ_*."""
    app = taskq.App(broker_url, store_url, **settings)
    return LifecycleApp(
        app=app,
        noop=app.task(name="e2e.noop")(noop),
        hold=app.task(name="lifecycle.hold")(hold),
        poison=app.task(name="lifecycle.poison", max_deliveries=POISON_MAX_DELIVERIES)(poison),
        long=app.task(name="lifecycle.long")(long),
    )


app = build().app
