"""The benchmarks' taskq app: one no-op task, in a module of its own.

The worker imports this module (`taskq worker benchmarks.noop_app:app`), so it holds the app
and nothing else, as a user's tasks module would: its memory is measured too.
"""

from __future__ import annotations

import taskq

APP_SPEC = "benchmarks.noop_app:app"
TASK_NAME = "bench.drain.noop"
QUEUE = "drain"


async def noop(i: int) -> int:
    """The benchmarked task: as little as a task can do (its result is stored)."""
    return i


def build(broker_url: str | None = None, store_url: str | None = None) -> taskq.App:
    app = taskq.App(broker_url, store_url)
    app.task(name=TASK_NAME, queue=QUEUE)(noop)
    return app


app = build()  # what the worker runs (URLs from TASKQ_*)
