"""How late do delayed tasks start? 200 countdowns spread over 10 s, on RabbitMQ + PostgreSQL.

    .venv/bin/python benchmarks/delay_lateness.py            # 200 tasks over 10 s
    .venv/bin/python benchmarks/delay_lateness.py --smoke    # 20 tasks over 2 s

The services come from TASKQ_BENCH_AMQP_URL and TASKQ_BENCH_POSTGRES_URL (a migrated
database). Without them, a throwaway vhost (`rabbitmqctl`, local RabbitMQ as guest) and a
throwaway database (local PostgreSQL as postgres, `taskq db upgrade`) are made, and removed
at the end. One `taskq worker` subprocess leads and runs the tasks; each task appends its
start time to a file. Lateness is that start minus the task's due time (its row's run_at).
Exit code 0 only if every task ran exactly once and none ran early.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg

import taskq

# Run as a script, only benchmarks/ is on sys.path: add the repository root, so that
# `benchmarks.*` names these modules here and in the worker subprocesses alike.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks.services import (  # noqa: E402
    asyncpg_url,
    clean_env,
    services,
    worker_process,
)

APP_SPEC = "benchmarks.delay_lateness:app"
TASK_NAME = "bench.stamp"
CONCURRENCY = 20


async def stamp() -> None:
    """The benchmarked task: note when it started, as `task-id unix-time`."""
    started = time.time()
    line = f"{taskq.context().id} {started:.6f}\n"
    fd = os.open(os.environ["BENCH_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def build(broker_url: str | None = None, store_url: str | None = None) -> taskq.App:
    app = taskq.App(broker_url, store_url)
    app.task(name=TASK_NAME)(stamp)
    return app


app = build()  # what `taskq worker benchmarks.delay_lateness:app` runs (URLs from TASKQ_*)


@contextlib.asynccontextmanager
async def bench_services() -> AsyncIterator[tuple[str, str]]:
    """(broker URL, store URL): TASKQ_BENCH_AMQP_URL / TASKQ_BENCH_POSTGRES_URL, or throwaway."""
    given = os.environ.get("TASKQ_BENCH_AMQP_URL"), os.environ.get("TASKQ_BENCH_POSTGRES_URL")
    async with services(*given) as urls:
        yield urls


# -- the run ----------------------------------------------------------------------------------


async def fetch(store_url: str, query: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(asyncpg_url(store_url), timeout=10)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


async def poll(condition: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


@contextlib.contextmanager
def bench_worker(broker_url: str, store_url: str, log: Path, workdir: Path) -> Iterator[None]:
    command = [sys.executable, "-m", "taskq", "worker", APP_SPEC, "--concurrency", str(CONCURRENCY)]
    env = {
        **clean_env(),
        "TASKQ_BROKER_URL": broker_url,
        "TASKQ_STORE_URL": store_url,
        "TASKQ_LOG_LEVEL": "WARNING",
        "BENCH_LOG": str(log),
    }
    with worker_process(command, env, workdir, stop_within=20):
        yield


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted `values`."""
    return values[max(0, math.ceil(q * len(values)) - 1)]


async def measure(broker_url: str, store_url: str, count: int, spread: float) -> int:
    with tempfile.TemporaryDirectory(prefix="taskq-bench-") as tmp:
        workdir = Path(tmp)
        log = workdir / "starts.txt"
        bench = build(broker_url, store_url)
        task = bench.tasks[TASK_NAME]
        with bench_worker(broker_url, store_url, log, workdir):
            async with bench:
                # Ready: the worker leads (it publishes due tasks) and consumes (a task ran).
                async def leads() -> bool:
                    return bool(await fetch(store_url, "SELECT 1 FROM taskq_workers WHERE leader"))

                await poll(leads, within=30, what="the worker to lead")
                await (await task.submit()).result(timeout=30)

                handles = await asyncio.gather(
                    *(
                        task.options(countdown=spread * (i + 1) / count).submit()
                        for i in range(count)
                    )
                )
                ids = [handle.id for handle in handles]

                async def all_done() -> bool:
                    rows = await fetch(
                        store_url,
                        "SELECT count(*) AS n FROM taskq_tasks "
                        "WHERE id = ANY($1::uuid[]) AND state = 'succeeded'",
                        ids,
                    )
                    return bool(rows[0]["n"] == count)

                await poll(all_done, within=spread + 60, what=f"{count} tasks to succeed")
        rows = await fetch(
            store_url, "SELECT id, run_at FROM taskq_tasks WHERE id = ANY($1::uuid[])", ids
        )
        due = {str(row["id"]): row["run_at"].timestamp() for row in rows}
        starts = [line.split() for line in log.read_text().splitlines()]
    runs = Counter(task_id for task_id, _ in starts)
    lateness = sorted(
        (float(started) - due[task_id]) * 1000 for task_id, started in starts if task_id in due
    )
    ran_once = sum(1 for task_id in ids if runs[task_id] == 1)
    early = sum(1 for late in lateness if late < 0)
    print(
        f"delay lateness: {count} tasks, countdowns spread evenly over {spread:g} s, "
        f"1 taskq worker (concurrency {CONCURRENCY}), RabbitMQ + PostgreSQL"
    )
    header = ("count", "early", "p50 ms", "p90 ms", "p99 ms", "max ms")
    figures = [percentile(lateness, q) for q in (0.5, 0.9, 0.99, 1.0)]
    print("  ".join(f"{column:>8}" for column in header))
    print("  ".join([f"{len(lateness):>8}", f"{early:>8}", *(f"{f:>8.1f}" for f in figures)]))
    problems = []
    if ran_once != count:
        problems.append(f"{count - ran_once} of {count} tasks did not run exactly once")
    if early:
        problems.append(f"{early} tasks started before they were due")
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="20 tasks over 2 s")
    options = parser.parse_args()
    count, spread = (20, 2.0) if options.smoke else (200, 10.0)
    async with bench_services() as (broker_url, store_url):
        return await measure(broker_url, store_url, count, spread)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
