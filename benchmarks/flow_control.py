"""What do flow-control checks cost a worker that drains at full speed (issue 19)?

    .venv/bin/python benchmarks/flow_control.py            # N = 20,000, 3 rounds of 3 variants
    .venv/bin/python benchmarks/flow_control.py --quick    # N = 1,000, 1 round (the smoke run)
    .venv/bin/python benchmarks/flow_control.py --repeat 5 --only none,slots

Three variants of the same no-op task (`benchmarks/flow_control_app.py`, `(i, customer)`):

- "none": no limit (the baseline);
- "rate": `rate_limit=RateLimit("1000000/s", burst=1000000)`, one cluster-wide key that is
  never reached: every claim takes its token from the GCRA row under the key's lock;
- "slots": `concurrency_limit=ConcurrencyLimit(10, key="customer")`, task i for customer
  i % 100: 100 keys, each claim counts its key's running rows under the key's lock, and
  each outcome releases waiters of its key.

Each measurement is drain.py's: N tasks of one variant queued with `submit_many` while no
worker runs, then ONE `taskq worker benchmarks.flow_control_app:app --concurrency 100
--no-scheduler` subprocess (tracing off) runs them; the rate is N / (last finished_at - first
started_at), from the rows once every one is `succeeded`. Every measurement gets a throwaway
vhost and database (so every drain starts from empty tables) unless --amqp-url /
--postgres-url name ones to share. The variants take turns `--repeat` times, each round
starting one variant later (none rate slots, rate slots none, ...).

Held back: a held task's `held_by` is cleared when it is finally claimed, so the rows cannot
tell afterwards. So before the prefill the benchmark adds a trigger to `taskq_tasks` (dropped
again afterwards) that writes a ledger row each time a row's `held_by` is set (a claim put
off by a limit: "rate" or "slots"); the count is exact, for every variant and round. (The
metric `taskq_rate_limited_total` counts rate holds only, and only in a worker with metrics
on.) With --no-scheduler nothing would publish a held task again, so a held task ends the
run with a FAIL that says so; `--scheduler` runs every worker with the scheduler on instead.

Printed: a row per measurement (tasks/s, drain, wall from spawn, the worker's CPU, the CPU of
PostgreSQL's processes over the drain, holds, the prefill's time), the medians, and each
limited variant's cost against "none" (medians, and each round against its own "none") with
PASS/MISS against the issue's target, within 20% of the unlimited drain (a figure, not a
failure: exit code 0). Exit code 1 if a task did not succeed or a row lacks its limits.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import psutil

# Run as a script, only benchmarks/ is on sys.path: add the repository root, so that
# `benchmarks.*` names these modules here and in the worker subprocesses alike.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks.drain import fetch, wait_drained, worker_env  # noqa: E402
from benchmarks.flow_control_app import (  # noqa: E402
    APP_SPEC,
    CUSTOMERS,
    QUEUE,
    SLOTS_PER_CUSTOMER,
    TASKS,
    build,
)
from benchmarks.retention import PostgresCpu  # noqa: E402
from benchmarks.services import (  # noqa: E402
    add_service_options,
    asyncpg_url,
    services,
    worker_process,
)

DEFAULT_TASKS = 20_000
QUICK_TASKS = 1_000
DEFAULT_REPEAT = 3
DEFAULT_CONCURRENCY = 100  # as in drain.py
TARGET = 20.0  # percent: a limited drain within this of the unlimited one
PREFILL_CHUNK = 5_000
VARIANTS = {
    "none": "no limit",
    "rate": 'rate_limit=RateLimit("1000000/s", burst=1000000), never reached',
    "slots": f'concurrency_limit=ConcurrencyLimit({SLOTS_PER_CUSTOMER}, key="customer"), '
    f"{CUSTOMERS} customers",
}

# The holds ledger: a row each time a task's held_by is set (a claim a limit put off).
LEDGER = "bench_flow_holds"
INSTALL_LEDGER = f"""
CREATE TABLE IF NOT EXISTS {LEDGER} (task_id uuid NOT NULL, reason text NOT NULL,
                                     at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION {LEDGER}_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {LEDGER} (task_id, reason) VALUES (NEW.id, NEW.held_by);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS {LEDGER}_note ON taskq_tasks;
CREATE TRIGGER {LEDGER}_note AFTER UPDATE OF held_by ON taskq_tasks FOR EACH ROW
    WHEN (NEW.held_by IS NOT NULL AND NEW.held_by IS DISTINCT FROM OLD.held_by)
    EXECUTE FUNCTION {LEDGER}_note();
"""
DROP_LEDGER = f"""
DROP TRIGGER IF EXISTS {LEDGER}_note ON taskq_tasks;
DROP FUNCTION IF EXISTS {LEDGER}_note();
DROP TABLE IF EXISTS {LEDGER};
"""


async def execute(store_url: str, statements: str) -> None:
    connection = await asyncpg.connect(asyncpg_url(store_url), timeout=10)
    try:
        await connection.execute(statements)
    finally:
        await connection.close()


# -- one measurement --------------------------------------------------------------------------


@dataclasses.dataclass
class Measurement:
    run: int
    variant: str
    tasks: int
    prefill: float  # seconds for the submit_many calls
    drain: float  # last finished_at - first started_at
    wall: float  # worker spawned → last finished_at
    cpu: float  # the worker's user + system CPU seconds, spawn to exit
    postgres_cpu: float | None  # PostgreSQL's processes', spawn to the drain's end
    holds: dict[str, int]  # reason → times a row's held_by was set
    held_tasks: int  # distinct tasks held at least once

    @property
    def rate(self) -> float:
        return self.tasks / self.drain

    @property
    def held(self) -> int:
        return sum(self.holds.values())


async def prefill(
    broker_url: str, store_url: str, variant: str, count: int
) -> tuple[float, list[str]]:
    """Queue `count` tasks of the variant, task i for customer i % CUSTOMERS, with
    submit_many (no worker runs); check their rows carry their limits; → (seconds, batches)."""
    bench = build(broker_url, store_url)
    async with bench:
        await bench.declare(QUEUE)
        task = bench.tasks[TASKS[variant]]
        started = time.perf_counter()
        batches = []
        for first in range(0, count, PREFILL_CHUNK):
            items = [(i, i % CUSTOMERS) for i in range(first, min(count, first + PREFILL_CHUNK))]
            batches.append((await task.submit_many(items)).id)
        elapsed = time.perf_counter() - started
    rows = await fetch(
        store_url,
        "SELECT count(*) FILTER (WHERE state = 'queued') AS queued, "
        "count(rate_key) AS rate_keys, count(slot_key) AS slot_keys, "
        "count(DISTINCT slot_key) AS customers "
        "FROM taskq_tasks WHERE batch_id = ANY($1::uuid[])",
        batches,
    )
    found = dict(rows[0])
    expected = {
        "queued": count,
        "rate_keys": count if variant == "rate" else 0,
        "slot_keys": count if variant == "slots" else 0,
        "customers": min(count, CUSTOMERS) if variant == "slots" else 0,
    }
    if found != expected:
        raise SystemExit(f"FAIL: after the {variant} prefill, expected {expected}, found {found}")
    return elapsed, batches


# Why a task waiting `scheduled` fails a run without --scheduler.
HELD = (
    "were held back by their limit: they wait `scheduled` for the leader, and the worker "
    "runs with --no-scheduler (rerun with --scheduler)"
)


def worker_command(concurrency: int, scheduler: bool) -> list[str]:
    """drain.py's worker command, with this benchmark's app."""
    command = [sys.executable, "-m", "taskq", "worker", APP_SPEC, "--concurrency", str(concurrency)]
    return command if scheduler else [*command, "--no-scheduler"]


async def measure(options: argparse.Namespace, run: int, variant: str) -> Measurement:
    count = options.tasks
    async with services(options.amqp_url, options.postgres_url) as (broker_url, store_url):
        await execute(store_url, INSTALL_LEDGER)
        try:
            prefilled, batches = await prefill(broker_url, store_url, variant, count)
            env = worker_env(broker_url, store_url, None)
            command = worker_command(options.concurrency, options.scheduler)
            postgres = PostgresCpu()
            with tempfile.TemporaryDirectory(prefix="taskq-flow-") as tmp:
                # The only child reaped meanwhile is the worker: the difference is its CPU.
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                postgres.start()
                spawned = time.time()
                with worker_process(command, env, Path(tmp)) as process:
                    await wait_drained(
                        store_url, batches, count, process, held=None if options.scheduler else HELD
                    )
                    postgres.sample()  # (the worker's backends are still there)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
            rows = await fetch(
                store_url,
                "SELECT min(started_at) AS first, max(finished_at) AS last, "
                "count(*) FILTER (WHERE state = 'succeeded' AND result IS NOT NULL) AS done "
                "FROM taskq_tasks WHERE batch_id = ANY($1::uuid[])",
                batches,
            )
            holds = await fetch(
                store_url,
                f"SELECT h.reason, count(*) AS n, count(DISTINCT h.task_id) AS tasks "
                f"FROM {LEDGER} h JOIN taskq_tasks t ON t.id = h.task_id "
                "WHERE t.batch_id = ANY($1::uuid[]) GROUP BY h.reason",
                batches,
            )
        finally:
            await execute(store_url, DROP_LEDGER)
    first, last, done = rows[0]["first"], rows[0]["last"], rows[0]["done"]
    if done != count:
        raise SystemExit(f"FAIL: {count - done} of {count} tasks lost their outcome")
    return Measurement(
        run=run,
        variant=variant,
        tasks=count,
        prefill=prefilled,
        drain=(last - first).total_seconds(),
        wall=last.timestamp() - spawned,
        cpu=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        postgres_cpu=postgres.seconds if postgres.seen else None,
        holds={row["reason"]: row["n"] for row in holds},
        held_tasks=sum(row["tasks"] for row in holds),
    )


# -- the report -------------------------------------------------------------------------------

HEADER = (
    "run",
    "variant",
    "tasks",
    "tasks/s",
    "drain s",
    "wall s",
    "worker cpu s",
    "pg cpu s",
    "held",
    "prefill s",
)
WIDTHS = (6, 7, 7, 9, 8, 7, 12, 8, 6, 9)
FORMATS = ("{:.1f}", "{:.2f}", "{:.2f}", "{:.2f}", "{:.2f}", "{:.0f}", "{:.2f}")


def line(cells: tuple[str, ...]) -> str:
    return "  ".join(f"{cell:>{width}}" for cell, width in zip(cells, WIDTHS, strict=True))


def figures_of(m: Measurement) -> tuple[float | None, ...]:
    return (m.rate, m.drain, m.wall, m.cpu, m.postgres_cpu, m.held, m.prefill)


def cells_of(run: str, variant: str, tasks: int, figures: tuple[float | None, ...]) -> str:
    shown = tuple(
        "-" if f is None else form.format(f) for f, form in zip(figures, FORMATS, strict=True)
    )
    return line((run, variant, str(tasks), *shown))


def median_of(figures: list[tuple[float | None, ...]]) -> tuple[float | None, ...]:
    columns = []
    for column in zip(*figures, strict=True):
        known = [f for f in column if f is not None]
        columns.append(statistics.median(known) if known else None)
    return tuple(columns)


def cost(unlimited: float, limited: float) -> float:
    """The limited drain's rate lost, in percent of the unlimited one's."""
    return (unlimited - limited) / unlimited * 100


def paired_costs(results: list[Measurement], variant: str) -> list[float]:
    """Each round's cost of `variant` against that round's "none" (a slow spell of the
    machine then weighs on both sides), for the rounds that ran both."""
    rates = {(m.run, m.variant): m.rate for m in results}
    return [
        cost(rates[run, "none"], rates[run, variant])
        for run in sorted({m.run for m in results})
        if (run, "none") in rates and (run, variant) in rates
    ]


def report(results: list[Measurement], options: argparse.Namespace, load: str) -> None:
    scheduler = "" if options.scheduler else " --no-scheduler"
    print(
        f"flow control: {options.tasks:,} no-op tasks queued (submit_many), then 1 taskq worker "
        f"(--concurrency {options.concurrency}{scheduler}) drains them; RabbitMQ + PostgreSQL, "
        f"{psutil.cpu_count()} CPUs, load average {load}"
    )
    for variant in options.only:
        print(f"  {variant}: {VARIANTS[variant]}")
    print(line(HEADER))
    for m in results:
        print(cells_of(str(m.run), m.variant, m.tasks, figures_of(m)))
    medians: dict[str, float] = {}
    for variant in options.only:
        runs = [figures_of(m) for m in results if m.variant == variant]
        if runs:
            figures = median_of(runs)
            print(cells_of("median", variant, options.tasks, figures))
            assert figures[0] is not None
            medians[variant] = figures[0]
    print(
        "(worker cpu: spawn to exit; pg cpu: PostgreSQL's processes, spawn to the drain's end; "
        "held: times a limit put a claim off, counted by a trigger on held_by)"
    )
    for variant in options.only:
        ran = [m for m in results if m.variant == variant]
        held = sum(m.held for m in ran)
        reasons = {reason for m in ran for reason in m.holds}
        detail = ", ".join(
            f"{reason} {sum(m.holds.get(reason, 0) for m in ran):,}" for reason in sorted(reasons)
        )
        tasks = sum(m.held_tasks for m in ran)
        print(
            f"held back, {variant}: {held:,} times over {len(ran)} drain(s) of "
            f"{options.tasks:,}"
            + (f" ({detail}; {tasks:,} distinct tasks)" if held else " (no task ever held)")
        )
    if "none" not in medians:
        return
    for variant in ("rate", "slots"):
        if variant not in medians:
            continue
        lost = cost(medians["none"], medians[variant])
        verdict = "PASS" if lost <= TARGET else "MISS"
        print(
            f"cost of {variant}: {lost:+.1f}% of the unlimited rate ({medians[variant]:.1f} "
            f"tasks/s against {medians['none']:.1f}, medians; target: within {TARGET:g}%): "
            f"{verdict}"
        )
        if paired := paired_costs(results, variant):
            print(
                f"  {variant} against none of the same round: median "
                f"{statistics.median(paired):+.1f}% (rounds: "
                f"{', '.join(f'{p:+.1f}%' for p in paired)})"
            )


def plan(variants: list[str], repeat: int) -> list[tuple[int, str]]:
    """(run, variant) in order: each variant in turn, `repeat` times, each round starting one
    variant later (none rate slots, rate slots none, ...), so that none always runs first."""
    rounds = []
    for run in range(1, repeat + 1):
        shift = (run - 1) % len(variants)
        rounds += [(run, variant) for variant in variants[shift:] + variants[:shift]]
    return rounds


def variants(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in VARIANTS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"{text!r}: name variants among {', '.join(VARIANTS)}, comma-separated"
        )
    return [name for name in VARIANTS if name in chosen]  # (in the usual order)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--tasks",
        type=int,
        default=None,
        help=f"N per drain (default {DEFAULT_TASKS:,}; {QUICK_TASKS:,} --quick)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help=f"rounds of every variant, alternating (default {DEFAULT_REPEAT}; 1 --quick)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"the worker's --concurrency (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--only",
        type=variants,
        default=list(VARIANTS),
        help=f"variants to run, comma-separated (default {','.join(VARIANTS)})",
    )
    parser.add_argument(
        "--scheduler",
        action="store_true",
        help="run the workers with the scheduler on (a held task is then published again by "
        "the leader; by default --no-scheduler, as drain.py, and a held task is a FAIL)",
    )
    parser.add_argument("--quick", action="store_true", help="the small run (the smoke test's)")
    add_service_options(parser, throwaway="per measurement")
    options = parser.parse_args(argv)
    if options.tasks is None:
        options.tasks = QUICK_TASKS if options.quick else DEFAULT_TASKS
    if options.repeat is None:
        options.repeat = 1 if options.quick else DEFAULT_REPEAT
    if min(options.tasks, options.repeat, options.concurrency) < 1:
        parser.error("--tasks, --repeat and --concurrency must be at least 1")
    return options


async def run_all(options: argparse.Namespace) -> list[Measurement]:
    """Every (round, variant) of the plan, in order; progress on stderr."""
    results = []
    for run, variant in plan(options.only, options.repeat):
        m = await measure(options, run, variant)
        results.append(m)
        print(
            f"  run {run} {variant}: {m.rate:.1f} tasks/s (drain {m.drain:.2f} s), held {m.held}",
            file=sys.stderr,
            flush=True,
        )
    return results


async def main() -> int:
    options = parse_args()
    load = f"{psutil.getloadavg()[0]:.2f}"
    results = await run_all(options)
    load += f" / {psutil.getloadavg()[0]:.2f}"
    report(results, options, load)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
