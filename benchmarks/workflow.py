"""A chord of N no-op members against N plain tasks through `submit_many`, end to end.

    .venv/bin/python benchmarks/workflow.py            # N = 10,000, each kind twice (~1 to 2 min)
    .venv/bin/python benchmarks/workflow.py --quick    # N = 500, once each (the smoke run)
    .venv/bin/python benchmarks/workflow.py --repeat 3 --no-celery

The issue's target (issue 18): a chord of 10,000 no-op members runs within 1.5x of the time
10,000 plain tasks take, on the same machine in the same run.

Each measurement gets a throwaway vhost and database (or the given ones) and ONE `taskq worker
benchmarks.workflow:app --concurrency 100` subprocess, the scheduler on (the default): a
chord's body is published by the leader once its members have ended, so the worker must be
able to lead; both kinds run with that same command. Once the worker leads, a warm-up (one
task's round trip and a chord of two) runs, then the timing starts:

- plain: `await noop.submit_many([(i,) for i in range(N)])`; the time runs to the last
  task's `finished_at` (its outcome durable), read from the rows once all N are `succeeded`
  (a poll every 0.1 s sees that; the figure itself comes from the rows, not the poll).
- chord: `handle = await chord(group(noop.s(i) for i in range(N)), collect.s()).submit()`,
  then `await handle.result()`; the time runs until `result()` returns. `collect` receives
  the list of the N members' values and returns `[len, sum]`, checked.

Printed per measurement: when submit returned, when the last member's outcome was durable,
the total (the figure compared), tasks/s (N / total), and the worker's and this process's
CPU seconds over the timed part; for the chord, when the body was released (its `run_at`,
set in the transaction that ended the last member), started and ended. Then the medians and
bests of each kind, and the ratio chord / plain (medians) against the 1.5x target: PASS or
MISS (a figure, not a failure). The kinds take turns (plain chord, chord plain, ...).

Celery's chord of the same size follows when the bench extra is installed (`pip install -e
'.[bench]'`): `celery worker -P prefork -c 2` as in peers.py, on a vhost of its own, with
the Redis result backend (Celery's `rpc://` backend cannot run chords); the same warm-up
chord of two, then `chord(noop.s(i) ..., collect.s())` applied, timed until its body's value
is stored (`celery_chord` says why not `.get()`). Without Celery, or without a Redis
answering at --redis-url, it prints why it did not run.

Exit code 0 unless a measurement went wrong (a task did not succeed, a wrong chord value,
a worker that died).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, only benchmarks/ is on sys.path: add the repository root, so that
# `benchmarks.*` names these modules here and in the worker subprocesses alike.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import AsyncIterator, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import asyncpg  # noqa: E402
import psutil  # noqa: E402

import taskq  # noqa: E402
from benchmarks import noop_app  # noqa: E402
from benchmarks.services import (  # noqa: E402
    add_service_options,
    asyncpg_url,
    clean_env,
    services,
    worker_process,
)

APP_SPEC = "benchmarks.workflow:app"
COLLECT_NAME = "bench.workflow.collect"
DEFAULT_TASKS = 10_000
QUICK_TASKS = 500
DEFAULT_REPEAT = 2
CONCURRENCY = 100  # the worker's --concurrency, as in drain.py and run.py
TARGET_RATIO = 1.5  # the chord's time within 1.5x the plain tasks'
KINDS = ("plain", "chord")
POLL = 0.1  # s between polls of the plain tasks' states
LEAD_WITHIN = 30.0  # s for the worker to register and take the lead

LOCAL_REDIS = "redis://127.0.0.1:6379/0"
CELERY_NOOP = "bench.workflow.celery.noop"
CELERY_COLLECT = "bench.workflow.celery.collect"
CELERY_ENV = ("WORKFLOW_CELERY_BROKER", "WORKFLOW_CELERY_BACKEND", "WORKFLOW_CELERY_PREFIX")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the worker's app -------------------------------------------------------------------------


async def collect(values: list[int]) -> list[int]:
    """The chord's body: it receives the list of the members' values."""
    return [len(values), sum(values)]


def build(broker_url: str | None = None, store_url: str | None = None) -> taskq.App:
    """noop_app's app (its no-op task, queue "drain") plus the chord's body, on that queue."""
    app = noop_app.build(broker_url, store_url)
    app.task(name=COLLECT_NAME, queue=noop_app.QUEUE)(collect)
    return app


app = build()  # what `taskq worker benchmarks.workflow:app` runs (URLs from its environment)


def worker_command(concurrency: int, profile: Path | None) -> list[str]:
    """`taskq worker benchmarks.workflow:app --concurrency C`, the scheduler on (the leader
    publishes a chord's body); with `profile`, under cProfile (see drain.py's wrapper)."""
    if profile is None:
        argv = ["worker", APP_SPEC, "--concurrency", str(concurrency)]
        return [sys.executable, "-m", "taskq", *argv]
    code = (
        "import cProfile, os\n"
        "profile = cProfile.Profile()\n"
        "leave = os._exit\n"
        "def dump_and_exit(code):\n"
        "    profile.disable()\n"
        f"    profile.dump_stats({str(profile)!r})\n"
        "    leave(code)\n"
        "os._exit = dump_and_exit\n"
        "from taskq import worker_entry\n"
        "command = worker_entry.Command(\n"
        f"    app={APP_SPEC!r}, concurrency={concurrency}, scheduler=True,\n"
        "    log_level=os.environ.get('TASKQ_LOG_LEVEL', 'INFO'),\n"
        ")\n"
        "profile.enable()\n"
        "try:\n"
        "    worker_entry.run(command)\n"
        "finally:\n"
        "    dump_and_exit(0)\n"
    )
    return [sys.executable, "-c", code]


def worker_env(broker_url: str, store_url: str) -> dict[str, str]:
    env = {
        **clean_env(),  # no OTEL_* variable: tracing off
        "TASKQ_BROKER_URL": broker_url,
        "TASKQ_STORE_URL": store_url,
        "TASKQ_LOG_LEVEL": "WARNING",
    }
    if key := os.environ.get("TASKQ_SIGNING_KEY"):  # (signed messages and events, both sides)
        env["TASKQ_SIGNING_KEY"] = key
    return env


@contextlib.asynccontextmanager
async def connected(store_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(asyncpg_url(store_url), timeout=10)
    try:
        yield connection
    finally:
        await connection.close()


async def wait_leading(store_url: str, process: subprocess.Popen[bytes]) -> bool:
    """Until the worker has registered and some running worker leads (this one, unless a
    shared database has another); → whether this one leads."""
    deadline = time.monotonic() + LEAD_WITHIN
    async with connected(store_url) as connection:
        while True:
            mine = await connection.fetchval(
                "SELECT bool_or(leader) FROM taskq_workers WHERE pid = $1 AND state = 'running'",
                process.pid,
            )
            if mine:
                return True
            if mine is not None and await connection.fetchval(
                "SELECT count(*) FROM taskq_workers WHERE leader AND state = 'running' "
                "AND pid <> $1 AND heartbeat_at > now() - interval '30 seconds'",
                process.pid,
            ):
                return False
            if process.poll() is not None:
                raise SystemExit(f"FAIL: the worker exited ({process.returncode}) at start")
            if time.monotonic() > deadline:
                raise SystemExit(f"FAIL: no worker registered and led within {LEAD_WITHIN:.0f} s")
            await asyncio.sleep(0.1)


# -- one measurement --------------------------------------------------------------------------


@dataclasses.dataclass
class Measurement:
    round: int
    kind: str  # "plain" or "chord"
    tasks: int
    submit: float  # s from the start until submit_many() / submit() returned
    members: float  # s from the start until the last member's (plain: task's) outcome was durable
    total: float  # s, end to end: plain = `members`; chord: until result() returned
    worker_cpu: float  # the worker's user + system s over the timed part
    client_cpu: float  # this process's, likewise
    released: float | None = None  # chord: s from the start to the body's run_at (due)
    body_started: float | None = None  # chord: to the body's started_at
    body_ended: float | None = None  # chord: to the body's finished_at
    led: bool = True  # this worker was the leader

    @property
    def rate(self) -> float:
        return self.tasks / self.total


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def measure(options: argparse.Namespace, round_number: int, kind: str) -> Measurement:
    n = options.tasks
    async with services(options.amqp_url, options.postgres_url) as (broker_url, store_url):
        client = build(broker_url, store_url)
        async with client:
            noop, body = client.tasks[noop_app.TASK_NAME], client.tasks[COLLECT_NAME]
            await client.declare(noop_app.QUEUE)
            profile = None
            if options.profile_worker is not None:
                profile = options.profile_worker / f"workflow-{kind}-{round_number}.prof"
            env = worker_env(broker_url, store_url)
            with (
                tempfile.TemporaryDirectory(prefix="taskq-workflow-") as tmp,
                worker_process(worker_command(options.concurrency, profile), env, Path(tmp)) as p,
            ):
                led = await wait_leading(store_url, p)
                # Warm-up, the same for both kinds: a round trip and a chord of two.
                await (await noop.submit(0)).result(timeout=60)
                warm = taskq.chord(taskq.group(noop.s(0), noop.s(1)), body.s())
                if await (await warm.submit()).result(timeout=60) != [2, 1]:
                    raise SystemExit("FAIL: the warm-up chord's value is wrong")
                worker = psutil.Process(p.pid)
                worker_before, client_before = cpu_seconds(worker), time.process_time()
                if kind == "plain":
                    m = await time_plain(store_url, noop, n, p)
                else:
                    m = await time_chord(store_url, noop, body, n)
                m.round, m.led = round_number, led
                m.worker_cpu = cpu_seconds(worker) - worker_before
                m.client_cpu = time.process_time() - client_before
    return m


async def time_plain(
    store_url: str, noop: taskq.Task[..., Any], n: int, process: subprocess.Popen[bytes]
) -> Measurement:
    started = time.time()
    batch = await noop.submit_many([(i,) for i in range(n)])
    submitted = time.time()
    within = 120 + n / 50  # a stuck run fails rather than hangs
    query = (
        "SELECT count(*) FILTER (WHERE state = 'succeeded' AND result IS NOT NULL) AS done, "
        "count(*) FILTER (WHERE state NOT IN ('scheduled', 'queued', 'running', 'succeeded')) "
        "AS other, max(finished_at) AS last FROM taskq_tasks WHERE batch_id = $1"
    )
    async with connected(store_url) as connection:
        while True:
            row = await connection.fetchrow(query, batch.id)
            if row["done"] == n:
                break
            if row["other"]:
                raise SystemExit(f"FAIL: plain: {row['other']} tasks did not succeed")
            if process.poll() is not None:
                raise SystemExit(f"FAIL: the worker exited ({process.returncode})")
            if time.time() - started > within:
                raise SystemExit(f"FAIL: plain: {n - row['done']} of {n} not done in {within} s")
            await asyncio.sleep(POLL)
    last = row["last"].timestamp() - started
    return Measurement(0, "plain", n, submitted - started, last, last, 0.0, 0.0)


async def time_chord(
    store_url: str, noop: taskq.Task[..., Any], body: taskq.Task[..., Any], n: int
) -> Measurement:
    started = time.time()
    handle = await taskq.chord(taskq.group(noop.s(i) for i in range(n)), body.s()).submit()
    submitted = time.time()
    value = await handle.result(timeout=120 + n / 50)
    ended = time.time()
    if value != [n, n * (n - 1) // 2]:
        raise SystemExit(f"FAIL: chord: the body returned {value!r}, not [{n}, {n * (n - 1) // 2}]")
    async with connected(store_url) as connection:
        members = await connection.fetchrow(
            "SELECT count(*) FILTER (WHERE state = 'succeeded') AS done, "
            "max(finished_at) AS last FROM taskq_tasks WHERE workflow_id = $1 AND name = $2",
            handle.id,
            noop_app.TASK_NAME,
        )
        step = await connection.fetchrow(
            "SELECT run_at, started_at, finished_at FROM taskq_tasks "
            "WHERE workflow_id = $1 AND name = $2",
            handle.id,
            COLLECT_NAME,
        )
    if members["done"] != n:
        raise SystemExit(f"FAIL: chord: {n - members['done']} of {n} members did not succeed")
    return Measurement(
        0,
        "chord",
        n,
        submitted - started,
        members["last"].timestamp() - started,
        ended - started,
        0.0,
        0.0,
        released=step["run_at"].timestamp() - started,
        body_started=step["started_at"].timestamp() - started,
        body_ended=step["finished_at"].timestamp() - started,
    )


# -- Celery's chord (the bench extra) ---------------------------------------------------------


def make_celery(broker: str, backend: str, prefix: str) -> Any:
    """A Celery app with its defaults (prefork, py-amqp, json) and the Redis result backend,
    its keys under `prefix`; the two tasks of the chord."""
    from celery import Celery

    celery = Celery(
        "bench_workflow", broker="pyamqp://" + broker.split("://", 1)[1], backend=backend
    )
    celery.conf.result_backend_transport_options = {"global_keyprefix": prefix}
    celery.conf.result_expires = 3600

    @celery.task(name=CELERY_NOOP)
    def noop(i: int) -> int:
        return i

    @celery.task(name=CELERY_COLLECT)
    def collect(values: list[int]) -> list[int]:
        return [len(values), sum(values)]

    return celery


def __getattr__(name: str) -> Any:
    """`celery -A benchmarks.workflow:celery_app worker`: built from WORKFLOW_CELERY_*, and
    only when asked for (importing this module does not need Celery)."""
    if name == "celery_app":
        return make_celery(*(os.environ[variable] for variable in CELERY_ENV))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def celery_chord(celery: Any, n: int, timeout: float) -> tuple[float, float]:
    """Apply the chord of n members, then poll until the body's value is stored; → (s until
    apply returned, s until the value was seen).

    `AsyncResult.ready()` reads the body's key (a GET) every 20 ms. `.get()` is not used: with
    the Redis backend the applying client subscribes to every member's result channel, and
    `.get()` drains those messages before it sees the body's (2,000 members: 15 s after the
    body ended; 10,000: not within 320 s on the development VM)."""
    from celery import chord

    noop, collect = celery.tasks[CELERY_NOOP], celery.tasks[CELERY_COLLECT]
    started = time.perf_counter()
    result = chord(noop.s(i) for i in range(n))(collect.s())
    applied = time.perf_counter() - started
    while not result.ready():
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"Celery's chord of {n} had no value after {timeout:.0f} s")
        time.sleep(0.02)
    total = time.perf_counter() - started
    value = celery.backend.get_task_meta(result.id)["result"]
    if value != [n, n * (n - 1) // 2]:
        raise RuntimeError(f"Celery's chord returned {value!r}")
    return applied, total


@dataclasses.dataclass
class CeleryFigures:
    versions: str
    runs: list[tuple[float, float]]  # (apply s, total s) each

    @property
    def median(self) -> float:
        return statistics.median(total for _, total in self.runs)


def celery_missing() -> list[str]:
    return [module for module in ("celery", "redis") if importlib.util.find_spec(module) is None]


async def measure_celery(options: argparse.Namespace, redis_url: str) -> CeleryFigures:
    from benchmarks import peers

    spec = peers.PeerSpec(
        name="celery",
        modules=("celery", "redis"),
        distributions=("celery", "kombu", "amqp", "redis"),
        worker=(
            "celery",
            "-A",
            "benchmarks.workflow:celery_app",
            "worker",
            "-P",
            "prefork",
            "-c",
            "2",
            "--loglevel",
            "WARNING",
        ),
        queue="celery",
        config={},
        results="redis",
    )
    prefix = f"taskq_bench_workflow_{uuid.uuid4().hex[:8]}:"
    amqp = options.amqp_url or peers.LOCAL_AMQP
    figures = CeleryFigures(peers.versions(spec), [])
    with tempfile.TemporaryDirectory(prefix="taskq-workflow-celery-") as tmp:
        async with peers.throwaway_vhost(amqp, "celery") as vhost:
            env = {
                key: value
                for key, value in os.environ.items()
                if not key.startswith(("TASKQ_", "PEERS_", "WORKFLOW_")) and key != "PYTHONPATH"
            }
            env.update(zip(CELERY_ENV, (vhost, redis_url, prefix), strict=True))
            env.update(PYTHONPATH=_ROOT, PYTHONUNBUFFERED="1")
            celery = make_celery(vhost, redis_url, prefix)
            try:
                async with peers.worker(spec, env, Path(tmp) / "celery-worker.log") as running:
                    try:
                        await asyncio.to_thread(celery_chord, celery, 2, 60)  # warm-up
                        for _ in range(options.repeat):
                            figures.runs.append(
                                await asyncio.to_thread(
                                    celery_chord, celery, options.tasks, 120 + options.tasks / 50
                                )
                            )
                    except Exception as error:
                        raise RuntimeError(f"{error}\nworker log:\n{running.tail()}") from None
            finally:
                await asyncio.to_thread(forget_keys, redis_url, prefix)
                celery.close()
    return figures


def forget_keys(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


# -- the report -------------------------------------------------------------------------------

HEADER = (
    "round", "kind", "tasks", "submit s", "members s", "total s", "tasks/s", "worker cpu s",
    "client cpu s",
)  # fmt: skip
WIDTHS = (6, 5, 6, 8, 9, 7, 8, 12, 12)


def line(cells: Sequence[str]) -> str:
    return "  ".join(f"{cell:>{width}}" for cell, width in zip(cells, WIDTHS, strict=True))


def figures_of(m: Measurement) -> tuple[float, ...]:
    return (m.submit, m.members, m.total, m.rate, m.worker_cpu, m.client_cpu)


def row(label: str, kind: str, tasks: int, figures: Sequence[float]) -> str:
    cells = [f"{f:,.1f}" if i == 3 else f"{f:.2f}" for i, f in enumerate(figures)]
    return line([label, kind, str(tasks), *cells])


def summary(results: list[Measurement], kind: str) -> tuple[tuple[float, ...], Measurement]:
    """→ (the median of each figure, the measurement with the shortest total)."""
    runs = [m for m in results if m.kind == kind]
    medians = tuple(statistics.median(c) for c in zip(*map(figures_of, runs), strict=True))
    return medians, min(runs, key=lambda m: m.total)


def report(
    options: argparse.Namespace,
    results: list[Measurement],
    load: tuple[float, float],
) -> None:
    n = options.tasks
    print(
        f"workflow: a chord of {n:,} no-op members + 1 body vs {n:,} plain tasks (submit_many); "
        f"1 `taskq worker {APP_SPEC} --concurrency {options.concurrency}` (scheduler on) per "
        f"measurement; RabbitMQ + PostgreSQL; {os.cpu_count()} CPUs, load average (1 min) "
        f"{load[0]:.2f} before, {load[1]:.2f} after"
    )
    print(line(HEADER))
    for m in results:
        print(row(str(m.round), m.kind, m.tasks, figures_of(m)))
    medians, bests = {}, {}
    for kind in KINDS:
        medians[kind], bests[kind] = summary(results, kind)
        print(row("median", kind, n, medians[kind]))
    for kind in KINDS:
        print(row("best", kind, n, figures_of(bests[kind])))
    for m in results:
        if m.kind == "chord" and m.released is not None:
            print(
                f"chord, round {m.round}: last member durable at {m.members:.2f} s, body due "
                f"(run_at) at {m.released:.2f} s, started {m.body_started:.2f} s, ended "
                f"{m.body_ended:.2f} s, result() returned {m.total:.2f} s"
            )
    if not all(m.led for m in results):
        print("note: in some measurement another process led (a shared database)")
    plain, chord = medians["plain"][2], medians["chord"][2]
    ratio = chord / plain
    best = bests["chord"].total / bests["plain"].total
    verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
    print(
        f"plain: {plain:.2f} s ({n / plain:,.1f} tasks/s); chord: {chord:.2f} s "
        f"({n / chord:,.1f} tasks/s) (medians)"
    )
    print(
        f"ratio: chord / plain = {ratio:.2f}x (target <= {TARGET_RATIO:g}x): {verdict} "
        f"(bests: {best:.2f}x)"
    )


def report_celery(figures: CeleryFigures, taskq_chord: float, n: int) -> None:
    runs = ", ".join(
        f"{total:.2f} s (applied in {applied:.2f} s)" for applied, total in figures.runs
    )
    print(
        f"celery chord: {n:,} members + 1 body, `celery worker -P prefork -c 2`, Redis result "
        f"backend ({figures.versions}): median {figures.median:.2f} s "
        f"({n / figures.median:,.1f} tasks/s); runs: {runs}"
    )
    print(
        f"celery chord vs taskq chord: {figures.median:.2f} s vs {taskq_chord:.2f} s: taskq "
        f"{figures.median / taskq_chord:.2f}x as fast"
    )


# -- the command ------------------------------------------------------------------------------


def plan(repeat: int) -> list[tuple[int, str]]:
    """(round, kind): plain chord, chord plain, ... so that neither always runs first."""
    rounds = []
    for number in range(1, repeat + 1):
        kinds = KINDS if number % 2 else KINDS[::-1]
        rounds += [(number, kind) for kind in kinds]
    return rounds


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--tasks", type=int, help=f"N (default {DEFAULT_TASKS:,}; {QUICK_TASKS} with --quick)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help=f"measurements of each kind, in turn (default {DEFAULT_REPEAT}; 1 with --quick)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=CONCURRENCY,
        help=f"the worker's --concurrency (default {CONCURRENCY})",
    )
    parser.add_argument("--quick", action="store_true", help=f"N = {QUICK_TASKS}, --repeat 1")
    parser.add_argument(
        "--celery",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Celery's chord too, when the bench extra is installed (default: yes)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("TASKQ_BENCH_REDIS_URL", LOCAL_REDIS),
        help="Redis for Celery's chord results (default TASKQ_BENCH_REDIS_URL, else "
        f"{LOCAL_REDIS})",
    )
    parser.add_argument(
        "--profile-worker",
        type=Path,
        default=None,
        metavar="DIR",
        help="run each taskq worker under cProfile, writing DIR/workflow-KIND-ROUND.prof",
    )
    add_service_options(parser, throwaway="per measurement")
    options = parser.parse_args()
    options.tasks = options.tasks or (QUICK_TASKS if options.quick else DEFAULT_TASKS)
    options.repeat = options.repeat or (1 if options.quick else DEFAULT_REPEAT)
    if options.tasks < 2 or options.repeat < 1 or options.concurrency < 1:
        parser.error("--tasks must be at least 2, --repeat and --concurrency at least 1")
    if options.profile_worker is not None:
        options.profile_worker.mkdir(parents=True, exist_ok=True)
    return options


async def main() -> int:
    options = parse_args()
    load_before = os.getloadavg()[0]
    results = []
    for round_number, kind in plan(options.repeat):
        log(f"round {round_number}: {kind}, {options.tasks:,} tasks ...")
        results.append(await measure(options, round_number, kind))
        m = results[-1]
        log(f"  {m.total:.2f} s ({m.rate:,.1f} tasks/s)")
    report(options, results, (load_before, os.getloadavg()[0]))

    taskq_chord = summary(results, "chord")[0][2]
    if not options.celery:
        print("celery chord: not run (--no-celery)")
        return 0
    if missing := celery_missing():
        print(
            f"celery chord: not run: {', '.join(missing)} not installed (the bench extra: "
            "pip install -e '.[bench]')"
        )
        return 0
    from benchmarks import peers

    if not options.redis_url or not peers.redis_answers(options.redis_url):
        print(
            f"celery chord: not run: no Redis answers at {peers.where(options.redis_url)}; "
            "Celery's rpc:// result backend cannot run chords, so it needs Redis here"
        )
        return 0
    log(f"celery chord of {options.tasks:,}, {options.repeat} times ...")
    try:
        figures = await measure_celery(options, options.redis_url)
    except (RuntimeError, OSError) as error:
        print(f"celery chord: FAILED: {error}")
        return 1
    report_celery(figures, taskq_chord, options.tasks)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
