"""The app that the observability end-to-end tests run: `taskq worker tests.e2e.obs_app:app`.

The worker subprocess takes its URLs from TASKQ_BROKER_URL / TASKQ_STORE_URL; the test
process builds its own copy with `build(...)`, so both sides register the same names.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import taskq

TASK_LOGGER = "tests.e2e.obs_app.task"
REPORTS = "reports"  # a queue of its own, for `taskq queues`


async def child(seconds: float) -> None:
    """A little work, so that tasks overlap and both processes of a pool get some."""
    await asyncio.sleep(seconds)


async def chatty(marker: str) -> None:
    """Log a line from the task's own code."""
    logging.getLogger(TASK_LOGGER).info("the task says %s", marker)


async def report(n: int) -> int:
    return n


async def doomed() -> None:
    raise RuntimeError("this task always fails")


@dataclasses.dataclass(frozen=True)
class ObsApp:
    app: taskq.App
    child: taskq.Task[[float], None]
    fan_out: taskq.Task[[int, float], str]
    chatty: taskq.Task[[str], None]
    report: taskq.Task[[int], int]
    doomed: taskq.Task[[], None]


def build(broker_url: str | None = None, store_url: str | None = None, **settings: Any) -> ObsApp:
    """An app with the tests' tasks under fixed names; None URLs come from TASKQ_*."""
    app = taskq.App(broker_url, store_url, **settings)
    child_task = app.task(name="obs.child")(child)

    async def fan_out(count: int, seconds: float) -> str:
        """Submit `count` child tasks from inside the worker, so its metrics count them;
        → their batch id."""
        batch = await child_task.submit_many([(seconds,)] * count)
        return batch.id

    return ObsApp(
        app=app,
        child=child_task,
        fan_out=app.task(name="obs.fan_out")(fan_out),
        chatty=app.task(name="obs.chatty")(chatty),
        report=app.task(name="obs.report", queue=REPORTS)(report),
        doomed=app.task(name="obs.doomed", queue=REPORTS, max_retries=0)(doomed),
    )


app = build().app
