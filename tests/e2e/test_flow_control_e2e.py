"""Flow control across several `taskq worker` processes on RabbitMQ + PostgreSQL: the limits
hold cluster-wide, as a ledger the tasks write (by the database's clock) shows; a worker
killed while its task holds a slot loses nothing, and the slot comes back.

Figures the issue asks to see are logged: `pytest -o log_cli=true`.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

from tests.conftest import Backend
from tests.e2e import limits_app
from tests.e2e.processes import Workers, sql, wait_until
from tests.integration.test_flow_control import most_in_a_window, overlapping

logger = logging.getLogger(__name__)

APP = "tests.e2e.limits_app:app"


async def ledger(store_url: str, label: str | None = None) -> list[tuple[float, Any]]:
    rows = await sql(
        store_url,
        "SELECT started, ended FROM e2e_ledger"
        + ("" if label is None else f" WHERE label = '{label}'")
        + " ORDER BY started",
    )
    return [(row["started"], row["ended"]) for row in rows]


async def test_a_rate_limit_holds_across_three_worker_processes(
    production: Backend, workers: Workers
) -> None:
    # Given 3 worker processes and a task limited to 20 starts a second (burst 1)
    await sql(production.store_url, limits_app.LEDGER)
    for index in range(3):
        await workers.start(concurrency=10, app=APP, scheduler=index == 0)
    app = production.app()
    tasks = limits_app.register(app)
    async with app:
        # When 200 are submitted at once
        began = time.monotonic()
        batch = await tasks.paced.submit_many([()] * 200)
        await app.gather(list(batch), timeout=60)
        took = time.monotonic() - began
    starts = [start for start, _ in await ledger(production.store_url)]
    busiest = most_in_a_window(starts, 1.0)
    logger.info("rate 20/s, 3 workers, 200 tasks: %.2f s, busiest second %d starts", took, busiest)
    # Then no second held more than 20 + burst starts, and they took about 200/20 s
    assert len(starts) == 200
    gaps = [round((b - a) * 1000) for a, b in itertools.pairwise(starts)]
    logger.info("ms between starts: %s", gaps)
    assert busiest <= 21, busiest
    assert abs((starts[-1] - starts[0]) - 199 / 20) <= 0.15 * 10, starts[-1] - starts[0]


async def test_a_concurrency_limit_holds_across_three_worker_processes(
    production: Backend, workers: Workers
) -> None:
    # Given 3 workers of concurrency 10, a task limited to 2 running, one to 1 per customer
    await sql(production.store_url, limits_app.LEDGER)
    for index in range(3):
        await workers.start(concurrency=10, app=APP, scheduler=index == 0)
    app = production.app()
    tasks = limits_app.register(app)
    async with app:
        # When 30 tasks of 0.3 s are submitted, and 4 per customer for 3 customers
        pairs = await tasks.pair.submit_many([(0.3,)] * 30)
        customers = [
            await tasks.per_customer.submit(customer, 0.2) for customer in ("c1", "c2", "c3") * 4
        ]
        await app.gather([*pairs, *customers], timeout=60)
    # Then the ledger never shows more than 2 pairs running at once
    spans = await ledger(production.store_url, "pair")
    assert len(spans) == 30
    assert overlapping(spans) == 2
    # And one at a time per customer, the customers side by side
    by_customer = {c: await ledger(production.store_url, c) for c in ("c1", "c2", "c3")}
    assert [overlapping(s) for s in by_customer.values()] == [1, 1, 1]
    assert overlapping([s for spans in by_customer.values() for s in spans]) > 1


async def test_a_slot_held_by_a_killed_worker_comes_back_and_nothing_is_lost(
    production: Backend, workers: Workers
) -> None:
    # Given a task limited to one running, started on a worker, and another waiting for it
    await sql(production.store_url, limits_app.LEDGER)
    doomed = await workers.start(concurrency=4, app=APP, scheduler=False)
    app = production.app()
    tasks = limits_app.register(app)
    async with app:
        first = await tasks.alone.submit(60.0)
        await wait_until(
            lambda: _started(production.store_url),
            what="the first task running in the ledger",
            within=20,
        )
        await workers.start(concurrency=4, app=APP, scheduler=True)
        second = await tasks.alone.submit(0.1)
        await wait_until(
            lambda: _held(production.store_url, second.id),
            what="the second task waiting",
            within=20,
        )
        # When the worker running the first is killed with SIGKILL
        killed_at = time.monotonic()
        await workers.kill(doomed)
        # Then both end, the first run again elsewhere, the slot free for the second after it
        await app.gather([first, second], timeout=60)
        back_after = time.monotonic() - killed_at
        attempts = await first.info()
    spans = await ledger(production.store_url, "alone")
    logger.info("slot back %.2f s after the kill; runs %s", back_after, spans)
    assert attempts.attempts == 2
    assert len(spans) == 3  # the killed run (never ended), its rerun, the second
    killed = [(start, end) for start, end in spans if end is None]
    assert len(killed) == 1
    ended = [(start, end) for start, end in spans if end is not None]
    assert overlapping(ended) == 1
    assert min(start for start, _ in ended) > killed[0][0]


async def _started(store_url: str) -> bool:
    return bool(await ledger(store_url, "alone"))


async def _held(store_url: str, task_id: str) -> bool:
    rows = await sql(store_url, f"SELECT held_by FROM taskq_tasks WHERE id = '{task_id}'")
    return bool(rows) and rows[0]["held_by"] == "slots"
