"""Retention at scale, the parts `benchmarks/retention.py` adds with `--partitioned` and big
`--rows`: making its database partitioned (with partitions for the old rows' weeks, as a
database that ran for 40 days has them), timing the dashboard's and `taskq tasks`' queries
on the big table, and waiting until a dropped partition's attempts are gone too.

Each query runs through the store, as the dashboard and the CLI call it: 2 warm-up runs,
then the median of `RUNS`, printed with PASS/MISS against the issue's 50 ms (a figure, not
a failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from taskq.status import TaskStatus
from taskq.store import PageMark, Store, partition_sql, partitions
from taskq.store.migrations import upgrade_database

RUNS = 7
TARGET_MS = 50.0
PAGE = 50  # the dashboard's page, `taskq tasks --limit`'s default


async def make_partitioned(store_url: str, age_days: int) -> str:
    """Convert the (empty) benchmark database, and make the partitions of the old rows'
    weeks (they are `age_days` old, spread over a little more than a day at 10M rows)."""
    done = await upgrade_database(store_url, partitioned=partitions.DAYS)
    store = Store(store_url)
    await store.open()
    try:
        old = datetime.now(UTC) - timedelta(days=age_days)
        made = await store._run(
            lambda conn: partitions.ensure(
                conn, old - timedelta(days=3), old + timedelta(days=1), partitions.DAYS
            )
        )
    finally:
        await store.close()
    return f"{done}; old rows' partitions: {', '.join(made)}"


async def detached_left(store_url: str) -> int:
    """Tables retention detached and has not dropped yet (their attempts still going)."""
    conn = await asyncpg.connect(store_url.replace("+asyncpg", ""))
    try:
        if not await conn.fetchval(partition_sql.IS_PARTITIONED):
            return 0
        return len(await conn.fetch(partition_sql.LIST_DETACHED))
    finally:
        await conn.close()


async def wait_detached_gone(store_url: str, within: float) -> float | None:
    """Seconds until no detached table is left (None: still some after `within`)."""
    started = time.perf_counter()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while True:
                if not await detached_left(store_url):
                    return time.perf_counter() - started
                await asyncio.sleep(0.5)
    return None


async def _median_ms(call: Callable[[], Awaitable[Any]]) -> float:
    for _ in range(2):
        await call()
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def time_queries(store_url: str, old_name: str, old_queue: str) -> list[str]:
    """The tasks page's and `taskq tasks`' queries on the table as it is; → printed lines."""
    store = Store(store_url)
    await store.open()
    try:
        newest = await store.find_tasks(limit=PAGE)
        old = await store.find_tasks(name=old_name, limit=PAGE)
        some_id = old[-1].id if old else newest[-1].id
        mark = PageMark(old[-1].created_at, old[-1].id) if old else None
        queries: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("tasks page, no filter", lambda: store.find_tasks(limit=PAGE)),
            (
                "--state failed",
                lambda: store.find_tasks(states=[TaskStatus.FAILED], limit=PAGE),
            ),
            (
                "--state succeeded",
                lambda: store.find_tasks(states=[TaskStatus.SUCCEEDED], limit=PAGE),
            ),
            ("--name (old rows')", lambda: store.find_tasks(name=old_name, limit=PAGE)),
            ("--queue (old rows')", lambda: store.find_tasks(queue=old_queue, limit=PAGE)),
            (
                "--name, next page",
                lambda: store.find_tasks(name=old_name, after=mark, limit=PAGE),
            ),
            (
                "--since 1h",
                lambda: store.find_tasks(since=datetime.now(UTC) - timedelta(hours=1), limit=PAGE),
            ),
            ("a task by id", lambda: store.get_task(some_id)),
            ("ids by prefix (search box)", lambda: store.ids_starting_with(some_id[:6], 20)),
            (
                "overview (last hour)",
                lambda: store.summarise(datetime.now(UTC) - timedelta(hours=1)),
            ),
        ]
        lines = []
        for label, call in queries:
            median = await _median_ms(call)
            verdict = "PASS" if median <= TARGET_MS else "MISS"
            lines.append(f"  {label:<28} {median:8.2f} ms  {verdict} (<= {TARGET_MS:.0f} ms)")
        return lines
    finally:
        await store.close()
