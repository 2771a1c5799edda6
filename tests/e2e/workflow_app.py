"""The app that `taskq worker tests.e2e.workflow_app:app` runs in the workflow end-to-end
tests (tests/e2e/test_workflows_e2e.py).

The worker subprocesses take their URLs from TASKQ_BROKER_URL / TASKQ_STORE_URL; the test
process builds its own copy with `build(...)`, so both sides register the same task names.
A chord body that must run once writes a row to `wf_ledger` (which the test creates) in a
transaction of its own before it returns: the evidence of how often it ran.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

import asyncpg

import taskq

LEDGER_TABLE = """CREATE TABLE wf_ledger (
    task_id uuid NOT NULL, attempt int NOT NULL, pid int NOT NULL, members int NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp())"""


async def add(a: int, b: int) -> int:
    return a + b


async def square(x: int) -> int:
    return x * x


async def collect(values: list[Any]) -> list[Any]:
    return values


async def total(values: list[int]) -> int:
    return sum(values)


async def where(x: int, seconds: float) -> list[int]:
    """Sleep `seconds`; → [x, the pid of the worker process that ran it]."""
    await asyncio.sleep(seconds)
    return [x, os.getpid()]


async def member(i: int, seconds: float) -> int:
    """One member of a big fan-in: a little work, then its number squared."""
    await asyncio.sleep(seconds)
    return i * i


async def ledger_body(values: list[int]) -> list[int]:
    """A chord body that records each run in `wf_ledger`, then returns what it received."""
    ctx = taskq.context()
    url = os.environ["TASKQ_STORE_URL"].replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(url, timeout=10)
    try:
        await connection.execute(
            "INSERT INTO wf_ledger (task_id, attempt, pid, members) VALUES ($1, $2, $3, $4)",
            ctx.id,
            ctx.attempt,
            os.getpid(),
            len(values),
        )
    finally:
        await connection.close()
    return values


@dataclasses.dataclass(frozen=True)
class WorkflowApp:
    app: taskq.App
    add: taskq.Task[[int, int], int]
    square: taskq.Task[[int], int]
    collect: taskq.Task[[list[Any]], list[Any]]
    total: taskq.Task[[list[int]], int]
    where: taskq.Task[[int, float], list[int]]
    member: taskq.Task[[int, float], int]
    ledger_body: taskq.Task[[list[int]], list[int]]


def build(
    broker_url: str | None = None, store_url: str | None = None, **settings: Any
) -> WorkflowApp:
    """An app with these tasks under fixed names; URLs left as None come from TASKQ_*."""
    app = taskq.App(broker_url, store_url, **settings)
    return WorkflowApp(
        app=app,
        add=app.task(name="wfe.add")(add),
        square=app.task(name="wfe.square")(square),
        collect=app.task(name="wfe.collect")(collect),
        total=app.task(name="wfe.total")(total),
        where=app.task(name="wfe.where")(where),
        member=app.task(name="wfe.member")(member),
        ledger_body=app.task(name="wfe.ledger_body")(ledger_body),
    )


app = build().app
