"""How much faster is `submit_many` than one `submit()` per task? On RabbitMQ + PostgreSQL.

    .venv/bin/python benchmarks/submit_many.py                # 10,000 tasks each way
    .venv/bin/python benchmarks/submit_many.py --tasks 200    # the CI smoke run

Times (a) N sequential `await task.submit(i)` and (b) one `await task.submit_many(...)` of
N items, with no worker running: each timing ends when the await returns, that is once
every row is committed and every message confirmed by RabbitMQ. Prints tasks/s for each
and the ratio against the 5x target (PASS/MISS: a figure, not an error). Then one
in-process worker runs all 2N tasks; exit code 0 only if every one of them succeeded.

The services come from --amqp-url / --postgres-url (a migrated database), defaulting to
TASKQ_BENCH_AMQP_URL / TASKQ_BENCH_POSTGRES_URL. Without them, a throwaway vhost
(`rabbitmqctl`, local RabbitMQ as guest) and a throwaway database (local PostgreSQL as
postgres, `taskq db upgrade`) are made, and removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import asyncpg

import taskq

# Run as a script, only benchmarks/ is on sys.path: add the repository root, so that
# `benchmarks.*` names these modules here and in the worker subprocesses alike.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks.noop_app import QUEUE, TASK_NAME, build  # noqa: E402
from benchmarks.services import (  # noqa: E402
    add_service_options,
    asyncpg_url,
    services,
)

TARGET_RATIO = 5.0
DEFAULT_TASKS = 10_000
DEFAULT_CONCURRENCY = 50


# -- the run ----------------------------------------------------------------------------------


async def states(store_url: str, ids: list[str]) -> dict[str, int]:
    """How many of these tasks are in each state."""
    connection = await asyncpg.connect(asyncpg_url(store_url), timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT state, count(*) AS n FROM taskq_tasks "
            "WHERE id = ANY($1::uuid[]) GROUP BY state",
            ids,
        )
    finally:
        await connection.close()
    return {row["state"]: row["n"] for row in rows}


async def time_submits(bench: taskq.App, count: int) -> tuple[float, float, list[str]]:
    """→ (seconds for N sequential submits, seconds for one submit_many of N, all ids)."""
    task = bench.tasks[TASK_NAME]
    # Outside the timings: the queue's declaration and the first store connection.
    await bench.declare(QUEUE)
    await bench.list_tasks(limit=1)

    started = time.perf_counter()
    handles = [await task.submit(i) for i in range(count)]
    sequential = time.perf_counter() - started

    started = time.perf_counter()
    batch = await task.submit_many([(i,) for i in range(count)])
    batched = time.perf_counter() - started

    return sequential, batched, [h.id for h in handles] + [h.id for h in batch]


async def run_all(
    bench: taskq.App, store_url: str, ids: list[str], concurrency: int
) -> tuple[float, dict[str, int]]:
    """Start a worker and wait for every task to finish; → (seconds, count by state)."""
    within = 60 + len(ids) / 50  # generous: a stuck run fails rather than hangs
    started = time.perf_counter()
    async with bench.worker(concurrency=concurrency):
        while True:
            counts = await states(store_url, ids)
            unfinished = len(ids) - sum(
                n for state, n in counts.items() if taskq.TaskStatus(state).is_final
            )
            if unfinished == 0:
                break
            if time.perf_counter() - started > within:
                print(f"FAIL: {unfinished} tasks unfinished after {within:.0f} s", file=sys.stderr)
                break
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - started
    return elapsed, counts


async def measure(broker_url: str, store_url: str, count: int, concurrency: int) -> int:
    bench = build(broker_url, store_url)
    async with bench:
        sequential, batched, ids = await time_submits(bench, count)
        stored = await states(store_url, ids)
        completion, finished = await run_all(bench, store_url, ids, concurrency)

    print(f"submit_many vs sequential submit: {count} tasks each way, RabbitMQ + PostgreSQL")
    print(f"{'way':>12}  {'tasks':>8}  {'seconds':>9}  {'tasks/s':>9}")
    for way, seconds in (("sequential", sequential), ("submit_many", batched)):
        print(f"{way:>12}  {count:>8}  {seconds:>9.3f}  {count / seconds:>9.1f}")
    ratio = sequential / batched
    verdict = "PASS" if ratio >= TARGET_RATIO else "MISS"
    print(f"ratio: {ratio:.1f}x (target >= {TARGET_RATIO:g}x): {verdict}")
    succeeded = finished.get(taskq.TaskStatus.SUCCEEDED.value, 0)
    print(
        f"completion: {succeeded} of {len(ids)} tasks succeeded in {completion:.2f} s "
        f"({len(ids) / completion:.1f} tasks/s), 1 in-process worker (concurrency {concurrency})"
    )

    problems = []
    if stored != {taskq.TaskStatus.QUEUED.value: len(ids)}:
        problems.append(f"after submitting, expected {len(ids)} rows queued, found {stored}")
    if succeeded != len(ids):
        problems.append(f"{len(ids) - succeeded} of {len(ids)} tasks did not succeed: {finished}")
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tasks", type=int, default=DEFAULT_TASKS, help=f"N, each way (default {DEFAULT_TASKS})"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"of the worker that runs them all afterwards (default {DEFAULT_CONCURRENCY})",
    )
    add_service_options(parser, throwaway="for the run")
    options = parser.parse_args()
    if options.tasks < 1 or options.concurrency < 1:
        parser.error("--tasks and --concurrency must be at least 1")
    async with services(options.amqp_url, options.postgres_url) as (broker_url, store_url):
        return await measure(broker_url, store_url, options.tasks, options.concurrency)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
