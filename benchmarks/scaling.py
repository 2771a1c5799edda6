"""How does the drain rate grow with worker processes, and what does each task cost the
broker and the database? Figures for the model in docs/scaling.md.

    .venv/bin/python benchmarks/scaling.py               # N = 20,000; 1, 2, 4 workers; twice
    .venv/bin/python benchmarks/scaling.py --quick       # N = 1,000; 1 and 2 workers; once
    .venv/bin/python benchmarks/scaling.py --workers 1,2 --modes commands --repeat 3
    .venv/bin/python benchmarks/scaling.py --queue-type quorum --workers 1

Everything runs on a private RabbitMQ node and a private PostgreSQL cluster (fsync on),
started for the run and removed after it, so the CPU their processes spend (RabbitMQ's
beam.smp, the postmaster and every backend) is this benchmark's alone. Each measurement: a
fresh database; N no-op tasks queued with `submit_many` while no worker runs (the "prefill":
what a submit costs the broker and the database); then K worker processes start, either K
`taskq worker benchmarks.noop_app:app --concurrency C --no-scheduler` commands ("commands")
or one such command with `--processes K` ("--processes"), and drain the queue. Each command
runs in a session of its own, as a service manager starts it (the supervisor's children have
one each too): Linux's autogroup scheduler shares the CPU between sessions first. Read before
and after the drain: CPU seconds of the broker's, the database's and the workers' processes
(each worker from its registration on, so its start-up is left out), the machine's busy
share (from the first registration on), pg_stat_database's commits and rows inserted /
updated / deleted, WAL bytes, and the bytes the broker received and sent on the workers'
connections. The rate is N / (last finished_at -
first started_at), as in drain.py; "steady" counts only the tasks started once every worker
had started its first one. Exit code 0 only if every task of every measurement succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

# Run as a script, only benchmarks/ is on sys.path: add the repository root, so that
# `benchmarks.*` names these modules here and in the worker subprocesses alike.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks.drain import PREFILL_CHUNK, worker_command, worker_env  # noqa: E402
from benchmarks.noop_app import QUEUE, TASK_NAME, build  # noqa: E402
from benchmarks.scaling_report import Measurement, Phase, report  # noqa: E402
from benchmarks.scaling_servers import (  # noqa: E402
    DbCounters,
    Machine,
    Servers,
    WorkerCpu,
    connection_bytes,
    db_counters,
    fresh_database,
    private_servers,
    queue_messages,
)
from benchmarks.services import asyncpg_url, worker_process  # noqa: E402

DEFAULT_TASKS, QUICK_TASKS = 20_000, 1_000
POLL = 0.05  # seconds between reads of the workers' registrations, then of the drain
START_WITHIN = 90.0  # the workers registered by then, or the run fails
SETTLE_WITHIN = 30.0  # the queue holds no message by then after the drain, or the run fails


class Reader:
    """This script's one connection to the database: its queries are counted (each is a
    commit in pg_stat_database) and its backend's CPU left out of the database's."""

    def __init__(self, connection: asyncpg.Connection, backend: int) -> None:
        self.connection, self.backend, self.queries = connection, backend, 0

    @classmethod
    @contextlib.asynccontextmanager
    async def opened(cls, store_url: str) -> AsyncIterator[Reader]:
        connection = await asyncpg.connect(asyncpg_url(store_url), timeout=10)
        try:
            yield cls(connection, await connection.fetchval("SELECT pg_backend_pid()"))
        finally:
            await connection.close()

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        self.queries += 1
        return list(await self.connection.fetch(query, *args))

    async def counters(self) -> DbCounters:
        self.queries += 2  # (pg_stat_clear_snapshot, then the read)
        return await db_counters(self.connection)


async def prefill(servers: Servers, reader: Reader, store_url: str, count: int) -> Phase:
    """Queue `count` no-op tasks with submit_many, no worker running."""
    machine, before = Machine(), await reader.counters()
    broker, database = (
        servers.broker_cpu.read(),
        servers.database_cpu.read(leave_out=reader.backend),
    )
    client, started = time.process_time(), time.perf_counter()
    machine.start()
    bench = build(servers.broker_url, store_url)
    async with bench:
        await bench.declare(QUEUE)
        task = bench.tasks[TASK_NAME]
        for first in range(0, count, PREFILL_CHUNK):
            await task.submit_many([(i,) for i in range(first, min(count, first + PREFILL_CHUNK))])
    busy = machine.stop()
    seconds, client = time.perf_counter() - started, time.process_time() - client
    broker = servers.broker_cpu.read() - broker
    database = servers.database_cpu.read(leave_out=reader.backend) - database
    db = await reader.counters() - before
    return Phase(seconds, client, broker, database, busy, db)


def commands(workers: int, mode: str, concurrency: int) -> list[list[str]]:
    command = worker_command(concurrency, None)
    if mode == "--processes":
        return [[*command, "--processes", str(workers)]]
    return [command] * workers


async def drain(
    servers: Servers,
    reader: Reader,
    store_url: str,
    options: argparse.Namespace,
    key: tuple[int, str],
) -> tuple[Phase, float, WorkerCpu, tuple[int, int]]:
    """Start the workers, wait for the drain; → (the drain's phase, seconds until every worker
    registered, the workers' CPU, the broker's bytes)."""
    workers, mode = key
    env = worker_env(servers.broker_url, store_url, None, None)
    env["TASKQ_QUEUE_TYPE"] = options.queue_type
    machine, before = Machine(), await reader.counters()
    with (
        tempfile.TemporaryDirectory(prefix="taskq-scaling-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        broker = servers.broker_cpu.read()
        database = servers.database_cpu.read(leave_out=reader.backend)
        spawned = time.monotonic()
        processes = []
        for i, argv in enumerate(commands(workers, mode, options.concurrency)):
            workdir = Path(tmp) / str(i)
            workdir.mkdir()
            started = worker_process(argv, env, workdir, new_session=True)
            processes.append(stack.enter_context(started))
        cpu = WorkerCpu([p.pid for p in processes])
        up = await wait_registered(reader, cpu, machine, processes, workers, spawned)
        await wait_drained(reader, processes, options.tasks)
        busy = machine.stop()
        broker = servers.broker_cpu.read() - broker
        database = servers.database_cpu.read(leave_out=reader.backend) - database
        worker_cpu = cpu.spent()
        received, sent = connection_bytes(servers.node)  # (the workers' connections are open)
        stop(processes)
    db = await reader.counters() - before  # (the workers' backends have reported on exit)
    phase = Phase(0.0, worker_cpu, broker, database, busy, db)
    return phase, up, cpu, (received, sent)


async def wait_registered(
    reader: Reader,
    cpu: WorkerCpu,
    machine: Machine,
    processes: list[subprocess.Popen[bytes]],
    workers: int,
    spawned: float,
) -> float:
    """Poll taskq_workers until `workers` processes run, reading each one's CPU as it comes;
    the machine's busy share counts from the first (the drain starts then)."""
    first = True
    while True:
        rows = await reader.fetch(
            "SELECT pid FROM taskq_workers WHERE role = 'worker' AND state = 'running'"
        )
        registered = {row["pid"] for row in rows}
        if registered and first:
            machine.start()
            first = False
        cpu.mark(registered, everyone=len(registered) >= workers)
        if len(registered) >= workers:
            return time.monotonic() - spawned
        if any(p.poll() is not None for p in processes):
            raise SystemExit("FAIL: a worker exited before registering (its log is above)")
        if time.monotonic() - spawned > START_WITHIN:
            raise SystemExit(f"FAIL: {len(registered)} of {workers} workers registered")
        await asyncio.sleep(POLL)


async def wait_drained(
    reader: Reader, processes: list[subprocess.Popen[bytes]], count: int
) -> None:
    within = 120 + count / 40
    deadline = time.monotonic() + within
    while True:
        rows = await reader.fetch(
            "SELECT count(*) FILTER (WHERE state = 'succeeded' AND result IS NOT NULL) AS done, "
            "count(*) FILTER (WHERE state NOT IN ('queued', 'running', 'succeeded')) AS other "
            "FROM taskq_tasks"
        )
        if rows[0]["done"] == count:
            return
        if rows[0]["other"]:
            raise SystemExit(f"FAIL: {rows[0]['other']} tasks did not succeed")
        if any(p.poll() is not None for p in processes):
            raise SystemExit("FAIL: a worker exited mid-drain (its log is above)")
        if time.monotonic() > deadline:
            raise SystemExit(f"FAIL: {count - rows[0]['done']} tasks not done after {within:.0f} s")
        await asyncio.sleep(POLL * 5)


def stop(processes: list[subprocess.Popen[bytes]], within: float = 60.0) -> None:
    """SIGTERM to every worker at once, then wait for each (worker_process kills stragglers)."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + within
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.1, deadline - time.monotonic()))


ROWS_SQL = (
    "SELECT min(started_at) AS first, max(finished_at) AS last, max(started_at) AS last_start, "
    "count(*) FILTER (WHERE state = 'succeeded') AS done FROM taskq_tasks"
)
PER_WORKER_SQL = (
    "SELECT worker_id, min(started_at) AS first, count(*) AS n FROM taskq_tasks GROUP BY worker_id"
)


async def timeline(reader: Reader, count: int) -> tuple[float, float | None, tuple[int, int]]:
    """From the rows: (drain seconds, steady rate or None, fewest and most tasks per worker)."""
    row = (await reader.fetch(ROWS_SQL))[0]
    if row["done"] != count:
        raise SystemExit(f"FAIL: {count - row['done']} of {count} tasks did not succeed")
    per_worker = await reader.fetch(PER_WORKER_SQL)
    all_up = max(r["first"] for r in per_worker)
    span = (row["last_start"] - all_up).total_seconds()
    steady = None
    if span > 0.5:
        started = await reader.fetch(
            "SELECT count(*) AS n FROM taskq_tasks WHERE started_at BETWEEN $1 AND $2",
            all_up,
            row["last_start"],
        )
        steady = started[0]["n"] / span
    counts = [r["n"] for r in per_worker]
    return (row["last"] - row["first"]).total_seconds(), steady, (min(counts), max(counts))


async def settled(servers: Servers, expected: int) -> int:
    """The queue's message count once it is `expected`, or as it is after SETTLE_WITHIN: a
    quorum queue's count, as rabbitmqctl reads it, trails its publishes and acks."""
    count, deadline = queue_messages(servers.node, QUEUE), time.monotonic() + SETTLE_WITHIN
    while count != expected and time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        count = queue_messages(servers.node, QUEUE)
    return count


async def measure(
    servers: Servers, options: argparse.Namespace, run: int, key: tuple[int, str]
) -> Measurement:
    name = f"taskq_scaling_{uuid.uuid4().hex[:8]}"
    async with fresh_database(servers, name) as store_url, Reader.opened(store_url) as reader:
        load = os.getloadavg()[0]
        filled = await prefill(servers, reader, store_url, options.tasks)
        ready = await settled(servers, options.tasks)
        if ready != options.tasks:
            raise SystemExit(
                f"FAIL: {ready} messages in {QUEUE} after the prefill, not {options.tasks}"
            )
        drained, up, cpu, broker_bytes = await drain(servers, reader, store_url, options, key)
        drained.seconds, steady, shares = await timeline(reader, options.tasks)
    left = await settled(servers, 0)
    if left != 0:
        raise SystemExit(
            f"FAIL: {left} messages left in {QUEUE} {SETTLE_WITHIN:g} s after the drain"
        )
    return Measurement(
        run,
        *key,
        options.tasks,
        filled,
        drained,
        steady,
        up,
        cpu.startup,
        broker_bytes,
        shares,
        load,
    )


def plan(workers: list[int], modes: list[str], repeat: int) -> list[tuple[int, tuple[int, str]]]:
    """(run, (workers, mode)) in order; each round starts one configuration later, so that
    none always runs first. One worker is one command whatever the mode."""
    keys = [(1, "commands")] if 1 in workers else []
    keys += [(k, mode) for k in workers if k > 1 for mode in modes]
    rounds = []
    for run in range(1, repeat + 1):
        shift = (run - 1) % len(keys)
        rounds += [(run, key) for key in keys[shift:] + keys[:shift]]
    return rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tasks", type=int, help=f"N (default {DEFAULT_TASKS:,})")
    parser.add_argument("--workers", default=None, help="worker processes (default 1,2,4)")
    parser.add_argument(
        "--modes", default="commands,--processes", help="for K > 1: K commands, --processes K"
    )
    parser.add_argument("--concurrency", type=int, default=100, help="per process (100)")
    parser.add_argument("--repeat", type=int, help="rounds (default 2)")
    parser.add_argument("--queue-type", choices=("classic", "quorum"), default="classic")
    parser.add_argument(
        "--quick", action="store_true", help=f"N = {QUICK_TASKS:,}, 1 and 2 workers, once"
    )
    options = parser.parse_args()
    options.tasks = options.tasks or (QUICK_TASKS if options.quick else DEFAULT_TASKS)
    options.repeat = options.repeat or (1 if options.quick else 2)
    workers = [
        int(k) for k in (options.workers or ("1,2" if options.quick else "1,2,4")).split(",")
    ]
    modes = options.modes.split(",")
    if not set(modes) <= {"commands", "--processes"} or min(workers) < 1:
        parser.error("--modes takes commands and --processes; --workers positive numbers")
    os.environ["TASKQ_QUEUE_TYPE"] = options.queue_type  # (the prefill's app)
    loads = f"{os.getloadavg()[0]:.2f}"
    results: list[Measurement] = []
    with private_servers() as servers:
        for run, key in plan(workers, modes, options.repeat):
            results.append(asyncio.run(measure(servers, options, run, key)))
            m = results[-1]
            print(f"  run {run} {m.label}: {m.rate:.0f} tasks/s", file=sys.stderr, flush=True)
    report(results, options, f"{loads} / {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
