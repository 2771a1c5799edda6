"""The benchmarks' taskq app: one no-op task, in a module of its own.

The worker imports this module (`taskq worker benchmarks.noop_app:app`), so it holds the app
and nothing else, as a user's tasks module would: its memory is measured too.
"""

from __future__ import annotations

import os
from typing import Any

import taskq
from taskq.middleware import RunNext, SubmitNext

APP_SPEC = "benchmarks.noop_app:app"
TASK_NAME = "bench.drain.noop"
QUEUE = "drain"
# How many pass-through middlewares the worker's app gets: what the seam itself costs.
MIDDLEWARES_ENV = "BENCH_NOOP_MIDDLEWARES"


class PassThrough(taskq.Middleware):
    """Does nothing on either side, but joins both chains (it overrides both methods)."""

    async def submit(self, submission: taskq.Submission, call_next: SubmitNext) -> str:
        return await call_next(submission)

    async def run(self, ctx: taskq.TaskContext, call_next: RunNext) -> Any:
        return await call_next(ctx)


async def noop(i: int) -> int:
    """The benchmarked task: as little as a task can do (its result is stored)."""
    return i


def build(
    broker_url: str | None = None, store_url: str | None = None, *, middlewares: int = 0
) -> taskq.App:
    app = taskq.App(broker_url, store_url, middleware=[PassThrough() for _ in range(middlewares)])
    app.task(name=TASK_NAME, queue=QUEUE)(noop)
    return app


app = build(middlewares=int(os.environ.get(MIDDLEWARES_ENV) or 0))  # what the worker runs
