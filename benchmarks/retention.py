"""Does the leader's retention pruning slow a worker that drains at full speed?

    .venv/bin/python benchmarks/retention.py            # 100,000 old rows, N = 20,000, 2 rounds
    .venv/bin/python benchmarks/retention.py --quick    # 5,000 old rows, N = 2,000, 1 round
    .venv/bin/python benchmarks/retention.py --rows 200000 --tasks 40000 --repeat 3

One vhost and one migrated database for the whole run. Once: `--unfinished` rows (scheduled
a year ahead, queued, running: a third each) and a tenth as many dead-lettered ones (failed
and expired, finished), all created 40 days ago: retention must leave every one of them as
it was. Before each phase, `--rows` finished rows 40 days old (created_at and finished_at;
95% succeeded, 5% cancelled, none dead-lettered, one taskq_attempts row each) are inserted
with plain SQL if they are not there, and the two tables are VACUUM ANALYZEd. Then, as in
drain.py, N no-op tasks are queued with `submit_many` while no worker runs, and ONE
`taskq worker benchmarks.noop_app:app --concurrency 100` subprocess starts, the scheduler
on (the default), so that it leads and runs the leader's loops in both phases:

- "off": TASKQ_RETENTION=off; the old rows must all still be there after the drain;
- "30d": TASKQ_RETENTION unset (its default, 30d): the leader deletes the old rows, 1,000 a
  batch, 0.25 s apart, from its start, while the worker drains; the run waits until none is
  left (with a deadline) before it stops the worker.

The drain rate is N / (last finished_at - first started_at), from the rows (drain.py's
definition). Meanwhile the old rows are counted every 0.25 s (when the first went, when the
last did) and, until the drain ends, the database's active backends are sampled from
pg_stat_activity (what they wait on: none means on the CPU), and the CPU time of the worker,
of PostgreSQL's processes and of the whole machine is taken from spawn to the drain's end.
The phases take turns `--repeat` times (off 30d, 30d off, ...). Printed: a row per phase,
the medians, the rate with pruning against the rate without and PASS/MISS against the
issue's "within 10%" (a figure, not a failure: exit code 0), how long the pruning took and
how much of the drain it overlapped. Exit code 1 if a task did not succeed, the worker did
not lead, an old row survived "30d" (or went under "off"), an attempt outlived its task, or
any unfinished or dead-lettered row changed.

The services come from --amqp-url / --postgres-url (a migrated database), defaulting to
TASKQ_BENCH_AMQP_URL / TASKQ_BENCH_POSTGRES_URL. Without them, a throwaway vhost and database
are made for the run and removed at the end. A given database loses, like the benchmark's
rows, every finished task older than 30 days it holds: the "30d" worker prunes them.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import psutil

# Run as a script, only benchmarks/ is on sys.path: add the repository root, so that
# `benchmarks.*` names these modules here and in the worker subprocesses alike.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks.drain import fetch, prefill, wait_drained, worker_env  # noqa: E402
from benchmarks.noop_app import APP_SPEC  # noqa: E402
from benchmarks.retention_scale import (  # noqa: E402
    make_partitioned,
    time_queries,
    wait_detached_gone,
)
from benchmarks.services import (  # noqa: E402
    add_service_options,
    asyncpg_url,
    services,
    worker_process,
)

DEFAULT_ROWS = 100_000
DEFAULT_UNFINISHED = 1_000
DEFAULT_TASKS = 20_000
DEFAULT_REPEAT = 3
QUICK_ROWS = 5_000
QUICK_UNFINISHED = 100
QUICK_TASKS = 2_000
DEFAULT_CONCURRENCY = 100  # as in drain.py
TARGET = 10.0  # percent: the drain rate with pruning within this of the rate without
AGE = "40 days"  # of the old rows; retention's default period is 30 days
LEAD_WITHIN = 10.0  # seconds the worker may still take to lead once the drain is over
POLL = 0.25  # seconds between counts of the old rows (and samples of pg_stat_activity)
CPU_EVERY = 4  # polls between samples of PostgreSQL's processes' CPU times
OLD_NAME = "bench.retention.old"  # the finished rows that must go
KEEP_NAME = "bench.retention.keep"  # the unfinished and dead-lettered ones that must stay
GONE_WORKER = "bench-retention-gone"
# The phases: TASKQ_RETENTION for the worker (None: unset, the default 30d).
PHASES: dict[str, str | None] = {"off": "off", "30d": None}


# -- the rows ---------------------------------------------------------------------------------

# One statement: the old finished tasks, and an attempt for each. Spread over 10 ms apart.
INSERT_OLD = f"""
WITH new AS (
    INSERT INTO taskq_tasks (id, name, queue, priority, state, args, kwargs, result,
                             attempts, worker_id, created_at, started_at, finished_at)
    SELECT gen_random_uuid(), '{OLD_NAME}', 'retention_old', 0,
           CASE WHEN i % 20 = 0 THEN 'cancelled' ELSE 'succeeded' END,
           jsonb_build_array(i), '{{}}'::jsonb,
           CASE WHEN i % 20 = 0 THEN NULL ELSE to_jsonb(i) END,
           1, '{GONE_WORKER}', at.t, at.t + interval '1 ms', at.t + interval '6 ms'
    FROM generate_series(1, $1::int) AS i,
         LATERAL (SELECT now() - interval '{AGE}' - i * interval '10 ms' AS t) AS at
    RETURNING id, state, worker_id, started_at, finished_at
)
INSERT INTO taskq_attempts (task_id, attempt, worker_id, state, started_at, finished_at)
SELECT id, 1, worker_id, state, started_at, finished_at FROM new
"""

# The rows retention must not touch: unfinished ones (a third each: scheduled a year ahead,
# queued, running without a lease) and, $2 of them, dead-lettered finished ones (failed with
# an attempt, expired without), all created 40 days ago.
INSERT_KEEP = f"""
WITH unfinished AS (
    INSERT INTO taskq_tasks (id, name, queue, priority, state, args, kwargs, attempts,
                             worker_id, created_at, started_at, run_at)
    SELECT gen_random_uuid(), '{KEEP_NAME}', 'retention_keep', 0,
           (ARRAY['scheduled', 'queued', 'running'])[i % 3 + 1],
           jsonb_build_array(i), '{{}}'::jsonb, CASE WHEN i % 3 = 2 THEN 1 ELSE 0 END,
           CASE WHEN i % 3 = 2 THEN '{GONE_WORKER}' END,
           now() - interval '{AGE}',
           CASE WHEN i % 3 = 2 THEN now() - interval '{AGE}' END,
           CASE WHEN i % 3 = 0 THEN now() + interval '365 days' END
    FROM generate_series(1, $1::int) AS i
    RETURNING id
), dead AS (
    INSERT INTO taskq_tasks (id, name, queue, priority, state, args, kwargs, error, attempts,
                             worker_id, created_at, started_at, finished_at, dead_reason)
    SELECT gen_random_uuid(), '{KEEP_NAME}', 'retention_keep', 0,
           CASE WHEN i % 2 = 0 THEN 'failed' ELSE 'expired' END,
           jsonb_build_array(i), '{{}}'::jsonb,
           CASE WHEN i % 2 = 0
                THEN jsonb_build_object('type', 'Boom', 'message', 'dead-lettered') END,
           CASE WHEN i % 2 = 0 THEN 1 ELSE 0 END,
           CASE WHEN i % 2 = 0 THEN '{GONE_WORKER}' END,
           now() - interval '{AGE}',
           CASE WHEN i % 2 = 0 THEN now() - interval '{AGE}' END,
           now() - interval '{AGE}' + interval '1 s',
           CASE WHEN i % 2 = 0 THEN 'failed' ELSE 'expired' END
    FROM generate_series(1, $2::int) AS i
    RETURNING id, state, worker_id, started_at, finished_at
)
INSERT INTO taskq_attempts (task_id, attempt, worker_id, state, started_at, finished_at)
SELECT id, 1, worker_id, state, started_at, finished_at FROM dead WHERE state = 'failed'
"""

# Everything about the kept rows and their attempts, in one digest: unchanged means untouched.
KEEP_DIGEST = f"""
SELECT count(*) AS n, md5(coalesce(string_agg(row_to_json(t)::text, ',' ORDER BY t.id), ''))
       || '/' || (SELECT md5(coalesce(string_agg(row_to_json(a)::text, ',' ORDER BY a.task_id),
                                      ''))
                  FROM taskq_attempts a JOIN taskq_tasks k ON k.id = a.task_id
                  WHERE k.name = '{KEEP_NAME}') AS digest
FROM taskq_tasks t WHERE t.name = '{KEEP_NAME}'
"""

COUNT_OLD = f"SELECT count(*) FROM taskq_tasks WHERE name = '{OLD_NAME}'"
ORPHANS = (
    "SELECT count(*) FROM taskq_attempts a "
    "WHERE NOT EXISTS (SELECT 1 FROM taskq_tasks t WHERE t.id = a.task_id)"
)
# What the database's other active backends (the worker's) wait on; NULL: on the CPU.
WAITS = (
    "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') AS wait, count(*) AS n "
    "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND state = 'active' GROUP BY 1"
)


@contextlib.asynccontextmanager
async def connected(store_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(asyncpg_url(store_url), timeout=10)
    try:
        yield connection
    finally:
        await connection.close()


async def keep_rows(store_url: str, unfinished: int) -> tuple[int, str, dict[str, int]]:
    """Insert the rows that must stay; → (how many, their digest, count by state)."""
    async with connected(store_url) as connection:
        await connection.execute(INSERT_KEEP, unfinished, max(unfinished // 10, 2))
        row = await connection.fetchrow(KEEP_DIGEST)
        states = await connection.fetch(
            "SELECT state, count(*) AS n FROM taskq_tasks WHERE name = $1 GROUP BY state",
            KEEP_NAME,
        )
    return row["n"], row["digest"], {r["state"]: r["n"] for r in states}


async def old_rows(store_url: str, rows: int) -> float:
    """Make sure the `rows` old finished rows are there (insert them if none is), then
    VACUUM ANALYZE both tables; → seconds taken by the insert (0 if none was needed)."""
    async with connected(store_url) as connection:
        present = await connection.fetchval(COUNT_OLD)
        took = 0.0
        if present == 0:
            started = time.perf_counter()
            await connection.execute(INSERT_OLD, rows)
            took = time.perf_counter() - started
        elif present != rows:
            raise SystemExit(f"FAIL: {present} old rows before a phase, neither 0 nor {rows}")
        await connection.execute("VACUUM ANALYZE taskq_tasks, taskq_attempts")
    return took


# -- watching a phase -------------------------------------------------------------------------


class PostgresCpu:
    """CPU seconds (user + system) of the PostgreSQL server's processes since `start()`:
    each process is sampled now and then; one born meanwhile counts from zero, one gone
    counts as of its last sample (so a little is missed: at most a sample interval's)."""

    def __init__(self) -> None:
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self.seen = True

    def _sample(self) -> dict[int, float]:
        found = {}
        for process in psutil.process_iter(["name"]):
            if process.info["name"] != "postgres":
                continue
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                found[process.pid] = times.user + times.system
        return found

    def start(self) -> None:
        self._first = self._sample()
        self._last = dict(self._first)
        self.seen = bool(self._first)  # (a PostgreSQL on another host: nothing to see)

    def sample(self) -> None:
        self._last.update(self._sample())

    @property
    def seconds(self) -> float:
        return sum(cpu - self._first.get(pid, 0.0) for pid, cpu in self._last.items())


class Machine:
    """The whole machine's CPU: busy share of all cores between `start()` and `stop()`."""

    def start(self) -> None:
        self._before = psutil.cpu_times()
        self.busy = 0.0

    def stop(self) -> None:
        after = psutil.cpu_times()
        total = sum(after) - sum(self._before)
        idle = (after.idle - self._before.idle) + (
            getattr(after, "iowait", 0.0) - getattr(self._before, "iowait", 0.0)
        )
        self.busy = 1 - idle / total if total > 0 else 0.0


@dataclasses.dataclass
class Watch:
    """Polls the old rows (and, until the drain ends, what the backends wait on) while a
    worker runs; times are seconds from the worker's spawn."""

    store_url: str
    process: subprocess.Popen[bytes]
    spawned: float
    rows: int
    draining: bool = True
    leader_at: float | None = None  # the worker was first seen leading
    first_gone: float | None = None  # the first old row was seen gone
    all_gone: float | None = None  # no old row left
    left: int = -1  # old rows at the last count
    waits: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    samples: int = 0
    postgres: PostgresCpu = dataclasses.field(default_factory=PostgresCpu)
    # Set once no old row is left, or the worker has exited.
    over: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    led: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def run(self) -> None:
        self.postgres.start()
        polls = 0
        async with connected(self.store_url) as connection:
            while True:
                self.left = await connection.fetchval(COUNT_OLD)
                seen = time.time() - self.spawned
                if self.left < self.rows and self.first_gone is None:
                    self.first_gone = seen
                if self.left == 0 and self.all_gone is None:
                    self.all_gone = seen
                if self.left == 0 or self.process.poll() is not None:
                    self.over.set()
                if self.leader_at is None and await connection.fetchval(
                    "SELECT leader FROM taskq_workers WHERE pid = $1 AND state = 'running' "
                    "ORDER BY started_at DESC LIMIT 1",
                    self.process.pid,
                ):
                    self.leader_at = seen
                    self.led.set()
                if self.draining:
                    self.samples += 1
                    for row in await connection.fetch(WAITS):
                        self.waits[row["wait"]] += row["n"]
                    polls += 1
                    if polls % CPU_EVERY == 0:
                        self.postgres.sample()
                await asyncio.sleep(POLL)


# -- one phase --------------------------------------------------------------------------------


@dataclasses.dataclass
class Phase:
    run: int
    mode: str  # "off" or "30d"
    tasks: int
    inserted: float  # seconds to insert the old rows before it (0: they were there)
    prefill: float
    drain: float  # last finished_at - first started_at
    drain_from: float  # first started_at, seconds from the worker's spawn
    drain_to: float  # last finished_at, likewise
    worker_cpu: float  # the worker's user + system seconds, spawn to the drain's end
    postgres_cpu: float | None  # PostgreSQL's, likewise (None: not visible from here)
    busy: float  # share of the machine's CPUs busy, likewise
    leader_at: float | None  # seconds from the spawn to the worker first seen leading
    old_before: int
    old_at_drain_end: int
    old_after: int  # old rows left at the phase's end (30d: once none is, or at the deadline)
    first_gone: float | None
    all_gone: float | None
    waits: dict[str, float]  # wait → active backends on average while draining
    attempts_pending: bool = False  # a dropped partition's attempts still being deleted
    kept_left: int = -1  # the unfinished and dead-lettered rows after the phase (`check`)
    kept_intact: bool = False  # ... all there, and they and their attempts unchanged

    @property
    def rate(self) -> float:
        return self.tasks / self.drain

    @property
    def overlap(self) -> float:
        """Share of the drain during which old rows were being deleted."""
        if self.first_gone is None:
            return 0.0
        end = self.all_gone if self.all_gone is not None else self.drain_to
        both = min(end, self.drain_to) - max(self.first_gone, self.drain_from)
        return max(both, 0.0) / (self.drain_to - self.drain_from)


def worker_command(concurrency: int) -> list[str]:
    """drain.py's worker, but standing for leadership (the scheduler is on by default)."""
    return [sys.executable, "-m", "taskq", "worker", APP_SPEC, "--concurrency", str(concurrency)]


async def measure(
    options: argparse.Namespace, broker_url: str, store_url: str, run: int, mode: str
) -> Phase:
    inserted = await old_rows(store_url, options.rows)
    prefilled, batches = await prefill(broker_url, store_url, options.tasks)
    env = worker_env(broker_url, store_url, None)
    if (retention := PHASES[mode]) is not None:
        env["TASKQ_RETENTION"] = retention
    machine = Machine()
    with tempfile.TemporaryDirectory(prefix="taskq-retention-") as tmp:
        machine.start()
        spawned = time.time()
        with worker_process(worker_command(options.concurrency), env, Path(tmp)) as process:
            watch = Watch(store_url, process, spawned, options.rows)
            watching = asyncio.create_task(watch.run())
            try:
                await wait_drained(store_url, batches, options.tasks, process)
                machine.stop()
                watch.draining = False
                watch.postgres.sample()
                times = psutil.Process(process.pid).cpu_times()
                worker_cpu = times.user + times.system
                old_at_drain_end = await count_old(store_url)
                with contextlib.suppress(TimeoutError):  # (to tell "late" from "never")
                    async with asyncio.timeout(LEAD_WITHIN):
                        await watch.led.wait()
                attempts_pending = False
                if mode != "off":
                    await wait_pruned(watch, options.rows)
                    if options.partitioned:  # (a dropped partition's attempts, in batches)
                        within = options.attempts_within
                        within = 120 + options.rows / 2_000 if within is None else within
                        gone = await wait_detached_gone(store_url, within)
                        attempts_pending = gone is None
                        shown = (
                            f"not within {within:g} s (still being deleted)"
                            if gone is None
                            else f"{gone:.1f} s after its rows"
                        )
                        print(f"  attempts of dropped partitions gone: {shown}", file=sys.stderr)
                old_after = await count_old(store_url)
            finally:
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
    rows = await fetch(
        store_url,
        "SELECT min(started_at) AS first, max(finished_at) AS last, "
        "count(*) FILTER (WHERE state = 'succeeded' AND result IS NOT NULL) AS done "
        "FROM taskq_tasks WHERE batch_id = ANY($1::uuid[])",
        batches,
    )
    first, last, done = rows[0]["first"], rows[0]["last"], rows[0]["done"]
    if done != options.tasks:
        raise SystemExit(
            f"FAIL: {options.tasks - done} of {options.tasks} tasks lost their outcome"
        )
    samples = max(watch.samples, 1)
    return Phase(
        run=run,
        mode=mode,
        tasks=options.tasks,
        inserted=inserted,
        prefill=prefilled,
        drain=(last - first).total_seconds(),
        drain_from=first.timestamp() - spawned,
        drain_to=last.timestamp() - spawned,
        worker_cpu=worker_cpu,
        postgres_cpu=watch.postgres.seconds if watch.postgres.seen else None,
        busy=machine.busy,
        leader_at=watch.leader_at,
        old_before=options.rows,
        old_at_drain_end=old_at_drain_end,
        old_after=old_after,
        first_gone=watch.first_gone,
        all_gone=watch.all_gone,
        waits={wait: n / samples for wait, n in watch.waits.most_common()},
        attempts_pending=attempts_pending,
    )


async def count_old(store_url: str) -> int:
    async with connected(store_url) as connection:
        return int(await connection.fetchval(COUNT_OLD))


async def wait_pruned(watch: Watch, rows: int) -> None:
    """Until the watch sees no old row left, the worker exits, or the deadline passes (then
    the phase's check reports the rows left)."""
    within = 60 + rows / 200  # 1,000 a batch, 0.25 s apart: ~3.5 batches/s at best
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            await watch.over.wait()


async def check(store_url: str, phase: Phase, kept: tuple[int, str]) -> list[str]:
    """What must hold after a phase; → the problems (none: fine)."""
    what = f"run {phase.run} {phase.mode}"
    problems = []
    if phase.leader_at is None:
        problems.append(f"{what}: the worker never led, so the leader's loops did not run")
    if phase.mode == "off" and phase.old_after != phase.old_before:
        gone = phase.old_before - phase.old_after
        problems.append(f"{what}: retention off, yet {gone} old rows went")
    if phase.mode != "off" and phase.old_after:
        problems.append(f"{what}: {phase.old_after} of {phase.old_before} old rows still there")
    async with connected(store_url) as connection:
        row = await connection.fetchrow(KEEP_DIGEST)
        # (while a dropped partition's attempts are still being deleted, they have no task)
        orphans = 0 if phase.attempts_pending else await connection.fetchval(ORPHANS)
    phase.kept_left = row["n"]
    phase.kept_intact = (row["n"], row["digest"]) == kept
    if not phase.kept_intact:
        problems.append(
            f"{what}: the unfinished and dead-lettered rows changed ({row['n']} of {kept[0]} "
            "left, or their contents or attempts differ)"
        )
    if orphans:
        problems.append(f"{what}: {orphans} attempts outlived their task")
    return problems


# -- the report -------------------------------------------------------------------------------

HEADER = (
    "run",
    "retention",
    "tasks",
    "tasks/s",
    "drain s",
    "worker cpu s",
    "pg cpu s",
    "busy %",
    "old left",
    "pruned at s",
    "prefill s",
)
WIDTHS = (6, 9, 7, 9, 8, 12, 8, 6, 8, 11, 9)


def line(cells: tuple[str, ...]) -> str:
    return "  ".join(f"{cell:>{width}}" for cell, width in zip(cells, WIDTHS, strict=True))


def figures_of(p: Phase) -> tuple[float | None, ...]:
    return (
        p.rate,
        p.drain,
        p.worker_cpu,
        p.postgres_cpu,
        p.busy * 100,
        p.old_at_drain_end,
        p.all_gone if p.mode != "off" else None,
        p.prefill,
    )


def cells_of(run: str, mode: str, tasks: int, figures: tuple[float | None, ...]) -> str:
    formats = ("{:.1f}", "{:.2f}", "{:.2f}", "{:.2f}", "{:.0f}", "{:.0f}", "{:.2f}", "{:.2f}")
    shown = tuple(
        "-" if f is None else form.format(f) for f, form in zip(figures, formats, strict=True)
    )
    return line((run, mode, str(tasks), *shown))


def median_of(figures: list[tuple[float | None, ...]]) -> tuple[float | None, ...]:
    columns = []
    for column in zip(*figures, strict=True):
        known = [f for f in column if f is not None]
        columns.append(statistics.median(known) if known else None)
    return tuple(columns)


def report(
    results: list[Phase], options: argparse.Namespace, kept: dict[str, int], load: str
) -> None:
    unfinished = sum(n for state, n in kept.items() if state in ("scheduled", "queued", "running"))
    dead = sum(kept.values()) - unfinished
    print(
        f"retention: {options.rows:,} finished tasks {AGE} old (one attempt each), "
        f"{unfinished:,} unfinished and {dead:,} dead-lettered ones as old; each phase: "
        f"{options.tasks:,} no-op tasks queued (submit_many), then 1 taskq worker "
        f"(--concurrency {options.concurrency}, scheduler on: it leads) drains them; "
        f"RabbitMQ + PostgreSQL, {psutil.cpu_count()} CPUs, load average {load}"
    )
    print(line(HEADER))
    for p in results:
        print(cells_of(str(p.run), p.mode, p.tasks, figures_of(p)))
    medians = {}
    for mode in PHASES:
        runs = [figures_of(p) for p in results if p.mode == mode]
        if runs:
            medians[mode] = median_of(runs)
            print(cells_of("median", mode, options.tasks, medians[mode]))
    print(
        "(cpu and busy: from the worker's spawn to the drain's end; busy: share of all CPUs; "
        "old left: old rows at the drain's end; pruned at: none left, seconds from the spawn)"
    )
    pruning = [p for p in results if p.mode != "off"]
    for p in pruning:
        if p.all_gone is not None and p.first_gone is not None:
            print(
                f"pruned, run {p.run}: {p.old_before:,} old rows and their attempts, the first "
                f"seen gone {p.first_gone:.2f} s after the worker's spawn, the last "
                f"{p.all_gone:.2f} s: {p.all_gone - p.first_gone:.2f} s "
                f"({p.old_before / max(p.all_gone - p.first_gone, POLL):,.0f} rows/s); the drain "
                f"ran from {p.drain_from:.2f} s to {p.drain_to:.2f} s: pruning overlapped "
                f"{p.overlap * 100:.0f}% of it"
            )
        else:
            print(f"pruned, run {p.run}: NOT all: {p.old_at_drain_end:,} left at the drain's end")
    if "off" in medians and "30d" in medians:
        off, on = medians["off"][0], medians["30d"][0]
        assert off is not None and on is not None
        change = (on - off) / off * 100
        verdict = "PASS" if change >= -TARGET else "MISS"
        print(
            f"drain rate with pruning: {on:.1f} tasks/s against {off:.1f} without (medians): "
            f"{change:+.1f}% (target: within {TARGET:g}%): {verdict}"
        )
        paired = paired_changes(results)
        print(
            "  30d against off of the same round: "
            + ", ".join(f"{c:+.1f}%" for c in paired)
            + f" (rate ratios {', '.join(f'{c / 100 + 1:.3f}' for c in paired)})"
        )
    for mode in PHASES:
        waits: collections.Counter[str] = collections.Counter()
        phases = [p for p in results if p.mode == mode]
        for p in phases:
            waits.update(p.waits)
        if phases:
            shown = ", ".join(f"{w} {n / len(phases):.2f}" for w, n in waits.most_common(6))
            print(f"waiting backends while draining, {mode} (mean active, by wait): {shown}")
    led = ", ".join(
        f"{p.run} {p.mode} {p.leader_at:.2f}" if p.leader_at is not None else f"{p.run} {p.mode} -"
        for p in results
    )
    print(f"led (seen leading, seconds from the spawn; the poll's resolution is {POLL} s): {led}")
    late = [
        f"{p.run} {p.mode}" for p in results if p.leader_at is not None and p.leader_at > p.drain_to
    ]
    if late:
        print(f"note: in {', '.join(late)} the worker was seen leading only after the drain")
    kept_states = ", ".join(f"{state} {n:,}" for state, n in sorted(kept.items()))
    changed = [f"run {p.run} {p.mode} ({p.kept_left:,} left)" for p in results if not p.kept_intact]
    print(
        f"untouched: the {unfinished + dead:,} unfinished and dead-lettered rows ({kept_states}) "
        "and their attempts, as inserted, after every phase: "
        + (f"NO: changed after {', '.join(changed)}" if changed else "yes")
    )


def paired_changes(results: list[Phase]) -> list[float]:
    """Each round's change of the rate with pruning against that round's without."""
    rates = {(p.run, p.mode): p.rate for p in results}
    return [
        (rates[run, "30d"] - rates[run, "off"]) / rates[run, "off"] * 100
        for run in sorted({p.run for p in results})
        if (run, "off") in rates and (run, "30d") in rates
    ]


def plan(repeat: int) -> list[tuple[int, str]]:
    """(run, mode) in order: off 30d, 30d off, ... so that neither always goes first."""
    modes = list(PHASES)
    return [(run, mode) for run in range(1, repeat + 1) for mode in modes[:: 1 if run % 2 else -1]]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help=f"old finished rows to prune (default {DEFAULT_ROWS:,}; {QUICK_ROWS:,} --quick)",
    )
    parser.add_argument(
        "--unfinished",
        type=int,
        default=None,
        help=f"old unfinished rows that must stay (default {DEFAULT_UNFINISHED:,}; "
        f"{QUICK_UNFINISHED} --quick), and a tenth as many dead-lettered ones",
    )
    parser.add_argument(
        "--tasks",
        type=int,
        default=None,
        help=f"N drained in each phase (default {DEFAULT_TASKS:,}; {QUICK_TASKS:,} --quick)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help=f"rounds of both phases, alternating (default {DEFAULT_REPEAT}; 1 --quick)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"the worker's --concurrency (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--partitioned",
        action="store_true",
        help="make the database's taskq_tasks partitioned first (taskq db upgrade --partitioned)",
    )
    parser.add_argument(
        "--queries",
        action="store_true",
        help="time the dashboard's and `taskq tasks`' queries with the old rows in (50 ms)",
    )
    parser.add_argument(
        "--attempts-within",
        type=float,
        default=None,
        help="--partitioned: seconds to wait for a dropped partition's attempts, deleted in "
        "batches after the drain (default 120 + rows / 2,000; 0: do not wait, the database "
        "is dropped with them)",
    )
    parser.add_argument("--quick", action="store_true", help="the small run (the smoke test's)")
    add_service_options(parser, throwaway="for the run")
    options = parser.parse_args()
    for name, full, quick in (
        ("rows", DEFAULT_ROWS, QUICK_ROWS),
        ("unfinished", DEFAULT_UNFINISHED, QUICK_UNFINISHED),
        ("tasks", DEFAULT_TASKS, QUICK_TASKS),
        ("repeat", DEFAULT_REPEAT, 1),
    ):
        if getattr(options, name) is None:
            setattr(options, name, quick if options.quick else full)
    if min(options.rows, options.unfinished, options.tasks, options.repeat) < 1:
        parser.error("--rows, --unfinished, --tasks and --repeat must be at least 1")

    load = f"{psutil.getloadavg()[0]:.2f}"
    results: list[Phase] = []
    problems: list[str] = []
    async with services(options.amqp_url, options.postgres_url) as (broker_url, store_url):
        if options.partitioned:
            print(await make_partitioned(store_url, 40), file=sys.stderr, flush=True)
        count, digest, kept = await keep_rows(store_url, options.unfinished)
        if options.queries:
            took = await old_rows(store_url, options.rows)
            print(f"  {options.rows:,} old rows inserted in {took:.1f} s", file=sys.stderr)
            timings = await time_queries(store_url, OLD_NAME, "retention_old")
            print("queries on the big table (median of 7, warm):", file=sys.stderr)
            print("\n".join(timings), file=sys.stderr, flush=True)
        for run, mode in plan(options.repeat):
            phase = await measure(options, broker_url, store_url, run, mode)
            results.append(phase)
            problems += await check(store_url, phase, (count, digest))
            pruned = "-" if phase.all_gone is None else f"{phase.all_gone:.2f} s"
            print(
                f"  run {run} {mode}: {phase.rate:.1f} tasks/s (drain {phase.drain:.2f} s), "
                f"old rows all gone at {pruned}",
                file=sys.stderr,
                flush=True,
            )
    load += f" / {psutil.getloadavg()[0]:.2f}"
    report(results, options, kept, load)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
