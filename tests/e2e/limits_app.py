"""The app `taskq worker tests.e2e.limits_app:app` runs in the flow-control end-to-end tests:
every task writes its start and end to the table `e2e_ledger` in the store's database (by
the database's clock, the one all worker processes share), through a pool its worker opens
in `on_worker_start`."""

from __future__ import annotations

import asyncio
import os
import types
from typing import Any

import asyncpg

import taskq
from tests.e2e.processes import plain_postgres_url

app = taskq.App()

LEDGER = """CREATE TABLE IF NOT EXISTS e2e_ledger (
    task_id uuid, attempt int, label text, pid int, started float8, ended float8,
    PRIMARY KEY (task_id, attempt))"""


@app.on_worker_start
async def open_ledger(state: taskq.WorkerState) -> None:
    state.ledger = await asyncpg.create_pool(
        plain_postgres_url(os.environ["TASKQ_STORE_URL"]), min_size=1, max_size=4
    )


@app.on_worker_stop
async def close_ledger(state: taskq.WorkerState) -> None:
    await state.ledger.close()


async def _run(label: str, seconds: float) -> None:
    ctx = taskq.context()
    pool: Any = ctx.state.ledger
    await pool.execute(
        "INSERT INTO e2e_ledger VALUES ($1, $2, $3, $4, "
        "extract(epoch FROM clock_timestamp()), NULL)",
        ctx.id, ctx.attempt, label, os.getpid(),
    )  # fmt: skip
    await asyncio.sleep(seconds)
    await pool.execute(
        "UPDATE e2e_ledger SET ended = extract(epoch FROM clock_timestamp()) "
        "WHERE task_id = $1 AND attempt = $2",
        ctx.id, ctx.attempt,
    )  # fmt: skip


def register(app: taskq.App) -> types.SimpleNamespace:
    """The tasks, on `app` (the worker's, or the test's own with the same names)."""

    @app.task(name="limits.paced", rate_limit="20/s")
    async def paced() -> None:
        await _run("paced", 0.0)

    @app.task(name="limits.pair", concurrency_limit=2)
    async def pair(seconds: float) -> None:
        await _run("pair", seconds)

    @app.task(
        name="limits.per_customer", concurrency_limit=taskq.ConcurrencyLimit(1, key="customer")
    )
    async def per_customer(customer: str, seconds: float) -> None:
        await _run(customer, seconds)

    @app.task(name="limits.alone", concurrency_limit=1)
    async def alone(first: float) -> None:
        """Sleeps `first` s on its first attempt, 0.1 s on any later one."""
        await _run("alone", first if taskq.context().attempt == 1 else 0.1)

    return types.SimpleNamespace(paced=paced, pair=pair, per_customer=per_customer, alone=alone)


register(app)
