"""taskq's performance in one command: drain, submit, round trip, worker memory (and peers).

    .venv/bin/python benchmarks/run.py               # the full run (about 2 to 3 minutes)
    .venv/bin/python benchmarks/run.py --flat        # also a 100,000-task drain (RSS flatness)
    .venv/bin/python benchmarks/run.py --flow-control  # also drains with rate/concurrency limits
    .venv/bin/python benchmarks/run.py --smoke       # small N, no peers (the test suite's run)
    .venv/bin/python benchmarks/run.py --no-peers    # skip the peers even if installed

Prints one table: each figure, its target and PASS or MISS (a miss is a figure, not a
failure: the exit code is non-zero only when a measurement went wrong). docs/performance.md
says what each row measures. Every measurement gets a throwaway vhost and database of its own
(drain.py's `services()`), unless TASKQ_BENCH_AMQP_URL / TASKQ_BENCH_POSTGRES_URL (or
--amqp-url / --postgres-url) name ones to share.

- drain: N no-op tasks queued with `submit_many` while no worker runs, then ONE
  `taskq worker benchmarks.noop_app:app --concurrency 100 --no-scheduler` subprocess, tracing
  off (drain.py's functions); N / (last finished_at - first started_at).
- submit: with no worker running, M tasks each way: sequential `await task.submit(i)`,
  100 asyncio tasks sharing one App each submitting M/100 sequentially, and one
  `submit_many` of M items; each timing ends when the last await returns (every row
  committed, every message confirmed).
- chord vs submit_many: workflow.py's measurements, once each: N no-op tasks through
  `submit_many`, then a chord of N no-op members and a body, each with a `taskq worker
  benchmarks.workflow:app --concurrency 100` of its own (scheduler on: the leader publishes
  the body); the chord's end-to-end time ÷ the plain tasks'.
- round trip: a `taskq worker` subprocess (the same command) runs; after 30 warm-up pairs,
  300 sequential `await (await task.submit(i)).result()`; p50 and p99, nearest rank, in ms.
- memory: the worker subprocess's RSS (psutil) idle (the round-trip worker once it has
  registered, before its first task) and right after the drain; with --flat, also after a
  drain of 100,000, which must stay within 10% of the N drain's.
- flow control (with --flow-control): flow_control.py's drains of N tasks with no limit, a
  rate limit never reached and a concurrency limit of 10 per key (100 keys), in turn
  (`--flow-rounds` rounds); each limited variant's median rate against the unlimited one's.
- peers (when the bench extra is installed, unless --no-peers): peers.py's `run_peers`,
  N drained and 300 round trips in each peer configuration (Celery prefork and solo,
  Dramatiq by default and with one process of 8 or 16 threads, Taskiq on a quorum and a
  classic queue), and its table with taskq ÷ peer ratios; the row to beat is the fastest
  drain per worker process (taskq's drain is one worker process).
"""

from __future__ import annotations

import sys
from pathlib import Path

# The scripts run as `python benchmarks/run.py`, which puts benchmarks/ (not the repository)
# first on sys.path. The worker subprocess imports `benchmarks.noop_app:app` (it runs with the
# repository as its working directory), so this process imports the same module by the same
# name: the repository root goes on sys.path here, once, before the benchmarks' imports.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import psutil  # noqa: E402

import taskq  # noqa: E402
from benchmarks import drain, flow_control, noop_app, peers, workflow  # noqa: E402
from benchmarks.services import add_service_options  # noqa: E402

DEFAULT_TASKS = 20_000
FLAT_TASKS = 100_000
DEFAULT_SUBMITS = 5_000
SUBMITTERS = 100
DEFAULT_PAIRS = 300
WARMUP = 30
SMOKE_TASKS = 200
SMOKE_SUBMITS = 200
SMOKE_PAIRS = 20
DEFAULT_WORKFLOW = 10_000  # chord members, and plain tasks to compare
SMOKE_WORKFLOW = 200
SMOKE_WARMUP = 5
CONCURRENCY = 100  # the worker's --concurrency, as in drain.py
MB = 1_000_000

TARGET_DRAIN = 5_000.0  # tasks/s
TARGET_VS_PEER = 1.5  # x the fastest peer configuration's drain per worker process
TARGET_P50 = 2.0  # ms
TARGET_P99 = 5.0  # ms
TARGET_CONCURRENT = 4_000.0  # tasks/s, 100 concurrent submitters
TARGET_SUBMIT_MANY = 5_000.0  # tasks/s
TARGET_RSS_IDLE = 60.0  # MB
TARGET_FLAT = 10.0  # percent, RSS after FLAT_TASKS vs after N
TARGET_SEAM = 5.0  # percent of the drain rate, with SEAM_MIDDLEWARES no-op middlewares
TARGET_CHORD = workflow.TARGET_RATIO  # x the plain tasks' time, for a chord as many members
TARGET_FLOW = flow_control.TARGET  # percent of the drain rate a limit that holds nothing costs
SEAM_MIDDLEWARES = 3


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the worker subprocess --------------------------------------------------------------------


def rss(pid: int) -> int:
    """Resident bytes of the process and its children (`taskq worker` is one process unless a
    supervisor runs; counted in case one does)."""
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


@contextlib.contextmanager
def taskq_worker(
    broker_url: str, store_url: str, middlewares: int = 0
) -> Iterator[subprocess.Popen[bytes]]:
    """drain.py's worker: `taskq worker benchmarks.noop_app:app --concurrency 100 --no-scheduler`,
    no OTEL_* variable in its environment (tracing off); `middlewares` pass-through ones."""
    env = drain.worker_env(broker_url, store_url, None)
    env[noop_app.MIDDLEWARES_ENV] = str(middlewares)
    with (
        tempfile.TemporaryDirectory(prefix="taskq-run-") as tmp,
        drain.worker_process(drain.worker_command(CONCURRENCY, None), env, Path(tmp)) as process,
    ):
        yield process


async def wait_registered(store_url: str, process: subprocess.Popen[bytes]) -> None:
    """Until the worker's row is in taskq_workers (it has started and consumes)."""
    deadline = time.monotonic() + 60
    while True:
        rows = await drain.fetch(
            store_url,
            "SELECT count(*) AS n FROM taskq_workers WHERE pid = $1 AND role = 'worker'",
            process.pid,
        )
        if rows[0]["n"]:
            return
        if process.poll() is not None:
            raise SystemExit(f"FAIL: the worker exited ({process.returncode}) at start")
        if time.monotonic() > deadline:
            raise SystemExit("FAIL: the worker did not register within 60 s")
        await asyncio.sleep(0.2)


# -- drain ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Drain:
    tasks: int
    rate: float  # tasks/s, first started_at to last finished_at
    rss_after: int  # the worker's resident bytes once the last outcome is durable


async def measure_drain(options: argparse.Namespace, count: int, middlewares: int = 0) -> Drain:
    async with drain.services(options.amqp_url, options.postgres_url) as (broker, store):
        _, batches = await drain.prefill(broker, store, count)
        with taskq_worker(broker, store, middlewares) as process:
            await drain.wait_drained(store, batches, count, process)
            rss_after = rss(process.pid)
        rows = await drain.fetch(
            store,
            "SELECT min(started_at) AS first, max(finished_at) AS last "
            "FROM taskq_tasks WHERE batch_id = ANY($1::uuid[])",
            batches,
        )
    seconds = (rows[0]["last"] - rows[0]["first"]).total_seconds()
    return Drain(count, count / seconds, rss_after)


@dataclasses.dataclass
class Seam:
    none: list[float]  # drain rates without middleware, one per round
    three: list[float]  # with SEAM_MIDDLEWARES pass-through ones

    @property
    def cost(self) -> float:
        """Percent of the drain rate the middlewares cost (negative: they were faster)."""
        none, three = statistics.mean(self.none), statistics.mean(self.three)
        return (none - three) / none * 100


async def measure_seam(options: argparse.Namespace, first: Drain) -> Seam:
    """Rounds of (none, three) and (three, none) in turn, so neither always runs first; the
    main drain is the first round's `none`."""
    seam = Seam([first.rate], [])
    for round_number in range(options.seam_rounds):
        order = (SEAM_MIDDLEWARES, 0) if round_number % 2 == 0 else (0, SEAM_MIDDLEWARES)
        for middlewares in order:
            if round_number == 0 and middlewares == 0:
                continue  # (the main drain)
            rate = (await measure_drain(options, options.tasks, middlewares)).rate
            (seam.three if middlewares else seam.none).append(rate)
    return seam


async def measure_flow_control(options: argparse.Namespace) -> dict[str, float]:
    """flow_control.py's drains, every variant `--flow-rounds` times in turn, on services of
    their own; → variant → median tasks/s."""
    settings = argparse.Namespace(
        tasks=options.tasks,
        repeat=options.flow_rounds,
        concurrency=CONCURRENCY,
        only=list(flow_control.VARIANTS),
        scheduler=False,
        amqp_url=options.amqp_url,
        postgres_url=options.postgres_url,
    )
    results = await flow_control.run_all(settings)
    return {
        variant: statistics.median(m.rate for m in results if m.variant == variant)
        for variant in settings.only
    }


# -- submit -----------------------------------------------------------------------------------


async def count_queued(store_url: str) -> int:
    rows = await drain.fetch(
        store_url,
        "SELECT count(*) AS n FROM taskq_tasks WHERE state = 'queued' AND name = $1",
        noop_app.TASK_NAME,
    )
    return int(rows[0]["n"])


async def time_submits(options: argparse.Namespace, way: str, count: int) -> float:
    """One way of submitting `count` tasks, on services of its own; → tasks/s."""
    async with drain.services(options.amqp_url, options.postgres_url) as (broker, store):
        before = await count_queued(store)
        bench = noop_app.build(broker, store)
        async with bench:
            task = bench.tasks[noop_app.TASK_NAME]
            # Outside the timing: the queue's declaration and the first store connection.
            await bench.declare(noop_app.QUEUE)
            await bench.list_tasks(limit=1)
            started = time.perf_counter()
            if way == "sequential":
                for i in range(count):
                    await task.submit(i)
            elif way == "concurrent":
                await asyncio.gather(
                    *(submitter(task, range(k, count, SUBMITTERS)) for k in range(SUBMITTERS))
                )
            else:
                await task.submit_many([(i,) for i in range(count)])
            elapsed = time.perf_counter() - started
        queued = await count_queued(store) - before
    if queued != count:
        raise SystemExit(f"FAIL: submit {way}: expected {count} more rows queued, found {queued}")
    return count / elapsed


async def submitter(task: taskq.Task[..., object], numbers: range) -> None:
    for i in numbers:
        await task.submit(i)


# -- chord vs submit_many ---------------------------------------------------------------------


@dataclasses.dataclass
class Chord:
    tasks: int
    plain: float  # s, submit_many's start to the last task's outcome durable
    chord: float  # s, submit()'s start to result() returning

    @property
    def ratio(self) -> float:
        return self.chord / self.plain


async def measure_chord(options: argparse.Namespace) -> Chord:
    """workflow.py's two measurements, once each, on services of their own."""
    settings = argparse.Namespace(
        tasks=options.workflow_tasks,
        concurrency=CONCURRENCY,
        profile_worker=None,
        amqp_url=options.amqp_url,
        postgres_url=options.postgres_url,
    )
    plain = await workflow.measure(settings, 1, "plain")
    chord = await workflow.measure(settings, 1, "chord")
    return Chord(settings.tasks, plain.total, chord.total)


# -- round trip and idle memory ---------------------------------------------------------------


@dataclasses.dataclass
class RoundTrip:
    pairs: int
    p50_ms: float
    p99_ms: float
    rss_idle: int  # the worker's resident bytes after it registered, before its first task


async def measure_round_trips(options: argparse.Namespace) -> RoundTrip:
    async with drain.services(options.amqp_url, options.postgres_url) as (broker, store):
        bench = noop_app.build(broker, store)
        async with bench:
            task = bench.tasks[noop_app.TASK_NAME]
            await bench.declare(noop_app.QUEUE)
            with taskq_worker(broker, store) as process:
                await wait_registered(store, process)
                await asyncio.sleep(1.0)  # let start-up settle
                rss_idle = rss(process.pid)
                for i in range(options.warmup):
                    await (await task.submit(i)).result(timeout=30)
                times = []
                for i in range(options.pairs):
                    started = time.perf_counter()
                    await (await task.submit(i)).result(timeout=30)
                    times.append((time.perf_counter() - started) * 1000)
    return RoundTrip(
        options.pairs, peers.percentile(times, 0.50), peers.percentile(times, 0.99), rss_idle
    )


# -- peers ------------------------------------------------------------------------------------


def installed_peers() -> list[str]:
    return [name for name, peer in peers.FRAMEWORKS.items() if not peers.missing_modules(peer)]


async def measure_peers(options: argparse.Namespace, names: list[str]) -> list[peers.PeerResult]:
    amqp = options.amqp_url or peers.LOCAL_AMQP
    redis = os.environ.get("TASKQ_BENCH_REDIS_URL", peers.LOCAL_REDIS) or None
    async with peers.postgres_database(options.postgres_url) as postgres_url:
        return await peers.run_peers(
            options.tasks, options.pairs, amqp, postgres_url, redis_url=redis, only=names
        )


# -- the table --------------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def table(rows: list[tuple[str, str, str, str, str]]) -> str:
    header = ("measurement", "figure", "unit", "target", "verdict")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i in (0, 2, 3) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in [header, *rows]
    )


def rows_of(
    options: argparse.Namespace,
    drained: Drain,
    seam: Seam,
    flat: Drain | None,
    submits: dict[str, float],
    trip: RoundTrip,
    peer_results: list[peers.PeerResult] | None,
    chord: Chord,
    flow: dict[str, float] | None = None,
) -> list[tuple[str, str, str, str, str]]:
    n, m = f"{options.tasks:,}", f"{options.submits:,}"
    rows = [
        (
            f"drain ({n} tasks, 1 worker)",
            f"{drained.rate:,.1f}",
            "tasks/s",
            f">= {TARGET_DRAIN:,.0f}",
            verdict(drained.rate >= TARGET_DRAIN),
        )
    ]
    fastest = peers.fastest_per_process(peer_results or [])
    if fastest is not None:
        per_process = fastest.drain_per_process or 1.0
        times = drained.rate / per_process
        rows.append(
            (
                f"drain vs fastest peer per process ({fastest.name} {per_process:,.1f}/s)",
                f"{times:.3f}",  # (1.498 is a MISS that .2f would print as 1.50)
                "x",
                f">= {TARGET_VS_PEER:g}x",
                verdict(times >= TARGET_VS_PEER),
            )
        )
    else:
        why = "not run" if peer_results is None else "no figure"
        label = f"drain vs fastest peer per process ({why})"
        rows.append((label, "-", "x", f">= {TARGET_VS_PEER:g}x", "n/a"))
    rows.append(
        (
            f"drain, {SEAM_MIDDLEWARES} no-op middlewares ({seam.cost:+.1f}% vs none; means of "
            f"{len(seam.three)} and {len(seam.none)})",
            f"{statistics.mean(seam.three):,.1f}",
            "tasks/s",
            f"cost <= {TARGET_SEAM:g}%",
            verdict(seam.cost <= TARGET_SEAM),
        )
    )
    for variant, label in (
        ("rate", "drain, rate_limit never reached"),
        ("slots", "drain, concurrency_limit 10 per key"),
    ):
        target = f"cost <= {TARGET_FLOW:g}%"
        if flow is None:
            rows.append((f"{label} (--flow-control)", "-", "tasks/s", target, "n/a"))
            continue
        lost = flow_control.cost(flow["none"], flow[variant])
        rows.append(
            (
                f"{label} ({lost:+.1f}% vs none {flow['none']:,.1f}; medians of "
                f"{options.flow_rounds})",
                f"{flow[variant]:,.1f}",
                "tasks/s",
                target,
                verdict(lost <= TARGET_FLOW),
            )
        )
    rows += [
        (f"submit sequential ({m})", f"{submits['sequential']:,.1f}", "tasks/s", "-", "-"),
        (
            f"submit {SUBMITTERS} concurrent ({m})",
            f"{submits['concurrent']:,.1f}",
            "tasks/s",
            f">= {TARGET_CONCURRENT:,.0f}",
            verdict(submits["concurrent"] >= TARGET_CONCURRENT),
        ),
        (
            f"submit_many ({m})",
            f"{submits['submit_many']:,.1f}",
            "tasks/s",
            f">= {TARGET_SUBMIT_MANY:,.0f}",
            verdict(submits["submit_many"] >= TARGET_SUBMIT_MANY),
        ),
        (
            f"chord vs submit_many ({chord.tasks:,} tasks, {chord.chord:.2f} s / "
            f"{chord.plain:.2f} s)",
            f"{chord.ratio:.3f}",
            "x",
            f"<= {TARGET_CHORD:g}x",
            verdict(chord.ratio <= TARGET_CHORD),
        ),
        (
            f"round trip p50 ({trip.pairs} pairs)",
            f"{trip.p50_ms:.2f}",
            "ms",
            f"<= {TARGET_P50:g}",
            verdict(trip.p50_ms <= TARGET_P50),
        ),
        (
            f"round trip p99 ({trip.pairs} pairs)",
            f"{trip.p99_ms:.2f}",
            "ms",
            f"<= {TARGET_P99:g}",
            verdict(trip.p99_ms <= TARGET_P99),
        ),
        (
            "worker RSS idle",
            f"{trip.rss_idle / MB:.1f}",
            "MB",
            f"<= {TARGET_RSS_IDLE:g}",
            verdict(trip.rss_idle / MB <= TARGET_RSS_IDLE),
        ),
        (f"worker RSS after drain of {n}", f"{drained.rss_after / MB:.1f}", "MB", "-", "-"),
    ]
    label = f"worker RSS after drain of {FLAT_TASKS:,}"
    target = f"within {TARGET_FLAT:g}% of {n}'s"
    if flat is None:
        rows.append((f"{label} (--flat)", "-", "MB", target, "n/a"))
    else:
        growth = (flat.rss_after - drained.rss_after) / drained.rss_after * 100
        rows.append(
            (
                f"{label} ({growth:+.1f}%)",
                f"{flat.rss_after / MB:.1f}",
                "MB",
                target,
                verdict(abs(growth) <= TARGET_FLAT),
            )
        )
        rows.append(
            (f"drain ({FLAT_TASKS:,} tasks, 1 worker)", f"{flat.rate:,.1f}", "tasks/s", "-", "-")
        )
    return rows


# -- the command ------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--tasks", type=int, help=f"N to drain (default {DEFAULT_TASKS:,}; {SMOKE_TASKS} smoke)"
    )
    parser.add_argument(
        "--submits",
        type=int,
        help=f"tasks per submit way (default {DEFAULT_SUBMITS:,}; {SMOKE_SUBMITS} smoke)",
    )
    parser.add_argument(
        "--pairs", type=int, help=f"round trips (default {DEFAULT_PAIRS}; {SMOKE_PAIRS} smoke)"
    )
    parser.add_argument(
        "--workflow-tasks",
        type=int,
        help=f"chord members and plain tasks of the chord row (default {DEFAULT_WORKFLOW:,}; "
        f"{SMOKE_WORKFLOW} smoke)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="small N, few round trips, no peers unless --peers"
    )
    parser.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure the peers (default: when the bench extra is installed, except --smoke)",
    )
    parser.add_argument(
        "--seam-rounds",
        type=int,
        help=f"rounds of drains with and without {SEAM_MIDDLEWARES} no-op middlewares "
        "(default 2; 1 smoke)",
    )
    parser.add_argument(
        "--flat",
        action="store_true",
        help=f"also drain {FLAT_TASKS:,} tasks, for the RSS flatness target (adds 1 to 3 min)",
    )
    parser.add_argument(
        "--flow-control",
        action="store_true",
        help="also drain N tasks with a rate limit never reached and with a concurrency limit "
        "per key, against no limit (flow_control.py; adds 2 to 4 min)",
    )
    parser.add_argument(
        "--flow-rounds",
        type=int,
        help="rounds of the three --flow-control drains (default 2; 1 smoke)",
    )
    add_service_options(parser, throwaway="per measurement")
    options = parser.parse_args()
    options.tasks = options.tasks or (SMOKE_TASKS if options.smoke else DEFAULT_TASKS)
    options.submits = options.submits or (SMOKE_SUBMITS if options.smoke else DEFAULT_SUBMITS)
    options.pairs = options.pairs or (SMOKE_PAIRS if options.smoke else DEFAULT_PAIRS)
    options.workflow_tasks = options.workflow_tasks or (
        SMOKE_WORKFLOW if options.smoke else DEFAULT_WORKFLOW
    )
    options.seam_rounds = options.seam_rounds or (1 if options.smoke else 2)
    options.flow_rounds = options.flow_rounds or (1 if options.smoke else 2)
    options.warmup = min(SMOKE_WARMUP if options.smoke else WARMUP, options.pairs)
    if options.tasks < 1 or options.pairs < 1 or options.submits < SUBMITTERS:
        parser.error(f"--tasks and --pairs must be at least 1, --submits at least {SUBMITTERS}")
    if options.workflow_tasks < 2:
        parser.error("--workflow-tasks must be at least 2")
    return options


async def amain() -> int:
    options = parse_args()
    load_before = os.getloadavg()[0]
    log(f"drain of {options.tasks:,} ...")
    drained = await measure_drain(options, options.tasks)
    log(f"drains with and without {SEAM_MIDDLEWARES} no-op middlewares, in turn ...")
    seam = await measure_seam(options, drained)
    flat = None
    if options.flat:
        log(f"drain of {FLAT_TASKS:,} (--flat) ...")
        flat = await measure_drain(options, FLAT_TASKS)
    flow = None
    if options.flow_control:
        log(f"drains of {options.tasks:,} with and without flow-control limits, in turn ...")
        flow = await measure_flow_control(options)
    submits = {}
    for way in ("sequential", "concurrent", "submit_many"):
        log(f"submit {way}, {options.submits:,} tasks ...")
        submits[way] = await time_submits(options, way, options.submits)
    log(f"chord vs submit_many, {options.workflow_tasks:,} tasks ...")
    chord = await measure_chord(options)
    log(f"round trips: {options.warmup} warm-up, {options.pairs} timed ...")
    trip = await measure_round_trips(options)

    want_peers = options.peers if options.peers is not None else not options.smoke
    peer_results = None
    peer_line = "peers: not run (--no-peers)" if not want_peers else ""
    if want_peers:
        names = installed_peers()
        if names:
            log(f"peers: {', '.join(names)} ...")
            peer_results = await measure_peers(options, names)
        else:
            peer_line = f"peers: none installed, not run: {peers.INSTALL_HINT}"

    print(
        f"taskq benchmarks: RabbitMQ + PostgreSQL, tracing off, worker = `taskq worker "
        f"{noop_app.APP_SPEC} --concurrency {CONCURRENCY} --no-scheduler`; Python "
        f"{platform.python_version()}; {os.cpu_count()} CPUs, "
        f"load average (1 min) {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print(table(rows_of(options, drained, seam, flat, submits, trip, peer_results, chord, flow)))
    print()
    if peer_results is None:
        print(peer_line)
        return 0
    print(
        f"peers: drain of {options.tasks:,} no-op tasks, {options.pairs} round trips, per "
        "configuration; taskq's drain is one worker process"
    )
    print(
        peers.format_report(
            peer_results, peers.TaskqFigures(drained.rate, trip.p50_ms, trip.p99_ms)
        )
    )
    return 1 if any(r.failed for r in peer_results) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(amain()))
