"""Celery, Dramatiq and Taskiq on the same RabbitMQ: drain and round trip, no-op tasks.

    .venv/bin/pip install -e '.[dev,bench]'          # the peers are an optional extra
    .venv/bin/python benchmarks/peers.py               # N = 20,000, 300 round trips (4-5 min)
    .venv/bin/python benchmarks/peers.py --smoke       # N = 200, 20 round trips
    .venv/bin/python benchmarks/peers.py --only 'celery,taskiq classic'

Without the `bench` extra it prints how to install it and exits 0 (CI installs only `.[dev]`).

Each peer runs in several configurations (CONFIGURATIONS: its documented defaults, and the
ones meant to show it at its best per process: Celery prefork and solo, Dramatiq with the
default processes and with one process of 8 or 16 threads, Taskiq on a quorum and on a
classic queue), each a row of the table, on a RabbitMQ vhost of its own made with
`rabbitmqctl` and deleted at the end. `--only` takes peer names (all their configurations)
and configuration names.

- **drain**: with no worker running, the peer's own enqueue call queues `mark("start")`,
  N no-op tasks and `mark("end")`; then ONE worker command starts. `mark` writes
  `time.time()` to a file, so drain/s = N / (end - start): from the first task's start to
  the last task's end, worker start-up excluded (reported apart). Once RabbitMQ holds no
  message of the queue (ready or unacked) the worker is stopped, and the queue must hold 0
  messages (every task taken and acked). drain/s per process = drain/s ÷ the worker
  processes that execute tasks; the fastest per process is the one taskq (one worker
  process) has to beat.
- **round trip**: a worker with the peer's result backend runs; after a warm-up, a driver
  process submits a no-op and waits for its result, 300 times in a row; p50 and p99 in ms.
  Celery: `rpc://`. Dramatiq: Redis (it has no PostgreSQL or RabbitMQ result backend; n/a
  without a reachable Redis). Taskiq: taskiq-postgres' AsyncpgResultBackend on PostgreSQL.
  Not in a configuration that says why (`no_round_trips`).

The enqueueing/round-trip side runs in its own process (`benchmarks/peer_apps/drive.py`), so
this one only waits. RabbitMQ is the server of `--amqp-url` (default TASKQ_BENCH_AMQP_URL,
else guest@127.0.0.1; its vhost is ignored: each configuration gets its own). PostgreSQL is
`--postgres-url` (default TASKQ_BENCH_POSTGRES_URL, else a throwaway local database); Taskiq
puts its results in a table of its own there, dropped at the end. Redis is `--redis-url`
(default TASKQ_BENCH_REDIS_URL, else redis://127.0.0.1:6379/0; '' for none).

`run_peers()` is the entry point for a runner that also measures taskq;
`fastest_per_process()` picks the configuration to beat; `format_report()` prints the table,
with taskq ÷ peer ratios when given taskq's own figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aio_pika
import asyncpg

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_TASKS = 20_000
DEFAULT_PAIRS = 300
WARMUP = 20
SMOKE_TASKS = 200
SMOKE_PAIRS = 20
INSTALL_HINT = "install the bench extra: pip install -e '.[bench]'"
CPUS = os.cpu_count() or 1


@dataclass(frozen=True)
class Peer:
    """One framework: its packages, queue, result backend, and what all its rows share."""

    name: str  # also its app module: benchmarks/peer_apps/{name}_app.py
    modules: tuple[str, ...]  # importable for the peer to run at all
    distributions: tuple[str, ...]  # whose versions the report names
    queue: str
    results: str  # "rpc", "redis" or "postgres": what PEERS_RESULTS is for round trips
    config: dict[str, str]  # the lines every configuration of this peer shares


@dataclass(frozen=True)
class PeerSpec:
    """One configuration of a peer, a row of the table: its worker command and what differs."""

    name: str  # the row's name, e.g. "celery solo"
    peer: Peer
    worker: tuple[str, ...]  # argv after the Python executable's directory
    processes: int  # worker processes that execute tasks: drain/s per process = drain/s / this
    config: dict[str, str]  # the lines of this configuration only
    variant: str = ""  # PEERS_VARIANT: what the app module needs to know (taskiq: queue type)
    no_round_trips: str = ""  # why round trips are not measured ("": they are)


CELERY = Peer(
    name="celery",
    modules=("celery",),
    distributions=("celery", "kombu", "amqp"),
    queue="celery",
    results="rpc",
    config={
        "acks": "before execution (acks_late=False, the default)",
        "broker": "kombu + py-amqp (pyamqp://); classic durable queue 'celery', persistent "
        "messages, no publisher confirms; json",
        "enqueue": "task.delay() in a loop",
        "drain results": "none (result_backend unset, the default)",
        "round-trip results": "result_backend='rpc://' (replies over RabbitMQ); AsyncResult.get()",
    },
)

DRAMATIQ = Peer(
    name="dramatiq",
    modules=("dramatiq", "pika"),
    distributions=("dramatiq", "pika"),
    queue="default",
    results="redis",
    config={
        "acks": "after execution (the default)",
        "broker": "RabbitmqBroker (pika BlockingConnection); classic durable queue 'default' "
        "(+ default.DQ, default.XQ), persistent messages, no publisher confirms "
        "(confirm_delivery=False, the default); json",
        "enqueue": "actor.send() in a loop",
        "drain results": "none (no Results middleware, the default)",
        "round-trip results": "Results(backend=RedisBackend): Dramatiq has no PostgreSQL or "
        "RabbitMQ result backend; message.get_result(block=True)",
    },
)

TASKIQ = Peer(
    name="taskiq",
    modules=("taskiq", "taskiq_aio_pika", "taskiq_pg"),
    distributions=("taskiq", "taskiq-aio-pika", "taskiq-postgres", "aio-pika"),
    queue="taskiq",
    results="postgres",
    config={
        "worker": "taskiq worker --workers 1: one worker process (the default is 2), async "
        "tasks, --max-async-tasks 100 (default); --log-level WARNING instead of the default "
        "INFO, which logs a line per task",
        "prefetch": "qos 10 (AioPikaBroker's default)",
        "acks": "when_saved, after the result is stored (the default)",
        "enqueue": "await asyncio.gather() of 500 task.kiq() at a time (each kiq() waits for "
        "its confirm, so one at a time would measure the confirm round trip)",
        "drain results": "none (no result backend, the default)",
        "round-trip results": "taskiq-postgres AsyncpgResultBackend (PostgreSQL table); "
        "wait_result() polls every check_interval=0.2 s (the default)",
    },
)

FRAMEWORKS = {peer.name: peer for peer in (CELERY, DRAMATIQ, TASKIQ)}
PEERS = tuple(FRAMEWORKS)


def celery_worker(*pool: str) -> tuple[str, ...]:
    app = "benchmarks.peer_apps.celery_app"
    return ("celery", "-A", app, "worker", *pool, "--loglevel", "WARNING")


def dramatiq_worker(processes: int, threads: int) -> tuple[str, ...]:
    app = "benchmarks.peer_apps.dramatiq_app"
    return ("dramatiq", app, "--processes", str(processes), "--threads", str(threads))


TASKIQ_WORKER = (
    "taskiq",
    "worker",
    "benchmarks.peer_apps.taskiq_app:broker",
    "--workers",
    "1",
    "--log-level",
    "WARNING",
)

CONFIGURATIONS = (
    PeerSpec(
        name="celery prefork -c 2",
        peer=CELERY,
        worker=celery_worker("-P", "prefork", "-c", "2"),
        processes=2,
        config={
            "worker": "celery worker -P prefork -c 2, the documented defaults: prefork is the "
            "default pool, and -c defaults to the CPU count (2 here); 1 parent + 2 child "
            "processes, the parent receives every message and hands it to a child over a pipe",
            "prefetch": "worker_prefetch_multiplier 4 x concurrency 2 = 8",
        },
    ),
    PeerSpec(
        name="celery solo",
        peer=CELERY,
        worker=celery_worker("-P", "solo"),
        processes=1,
        config={
            "worker": "celery worker -P solo: one process that receives and runs each task "
            "itself, one at a time (no pipe to a child)",
            "prefetch": "worker_prefetch_multiplier 4 x concurrency 2 (-c still defaults to the "
            "CPU count, though solo runs one task at a time) = 8",
        },
    ),
    PeerSpec(
        name=f"dramatiq {CPUS} processes 8 threads",
        peer=DRAMATIQ,
        worker=dramatiq_worker(CPUS, 8),
        processes=CPUS,
        config={
            "worker": f"dramatiq --processes {CPUS} --threads 8, the documented defaults "
            f"(--processes defaults to the CPU count, {CPUS} here)",
            "prefetch": "2 x threads = 16 per process (the default)",
        },
    ),
    PeerSpec(
        name="dramatiq 1 process 8 threads",
        peer=DRAMATIQ,
        worker=dramatiq_worker(1, 8),
        processes=1,
        config={
            "worker": "dramatiq --processes 1 --threads 8: one worker process with the default "
            "8 threads",
            "prefetch": "2 x threads = 16 (the default)",
        },
    ),
    PeerSpec(
        name="dramatiq 1 process 16 threads",
        peer=DRAMATIQ,
        worker=dramatiq_worker(1, 16),
        processes=1,
        config={
            "worker": "dramatiq --processes 1 --threads 16: one worker process, twice the "
            "default threads",
            "prefetch": "2 x threads = 32 (the default multiplier)",
        },
    ),
    PeerSpec(
        name="taskiq quorum",
        peer=TASKIQ,
        worker=TASKIQ_WORKER,
        processes=1,
        variant="quorum",
        config={
            "broker": "taskiq-aio-pika AioPikaBroker (aio-pika connect_robust); quorum durable "
            "queue 'taskiq' (+ taskiq.dead_letter), the default; persistent messages, "
            "publisher confirms on; json",
        },
    ),
    PeerSpec(
        name="taskiq classic",
        peer=TASKIQ,
        worker=TASKIQ_WORKER,
        processes=1,
        variant="classic",
        config={
            "broker": "as taskiq quorum but a classic durable queue 'taskiq': "
            "AioPikaBroker(task_queues=[Queue(type=QueueType.CLASSIC)]), taskiq-aio-pika's "
            "own option; everything else default (taskiq.dead_letter stays quorum)",
        },
        no_round_trips="not measured: with the default check_interval of 0.2 s each one "
        "is mostly a poll interval whatever the queue (taskiq quorum's p50 ~205 ms), and 300 of "
        "them would add over a minute to the run",
    ),
)

SPECS = {spec.name: spec for spec in CONFIGURATIONS}


@dataclass
class PeerResult:
    """One configuration's figures (None: not measured, `note` says why) and how it ran."""

    peer: str  # the framework: "celery", "dramatiq", "taskiq"
    name: str  # the configuration, the table's row: "celery solo"
    processes: int  # worker processes that execute tasks
    shared: dict[str, str]  # how every configuration of this peer runs (versions first)
    config: dict[str, str]  # how this configuration differs
    drain_per_s: float | None = None
    rtt_p50_ms: float | None = None
    rtt_p99_ms: float | None = None
    note: str = ""
    tasks: int = 0  # N of the drain
    pairs: int = 0  # round trips timed
    enqueue_per_s: float | None = None  # the fill, for information (not like-for-like)
    startup_s: float | None = None  # worker spawn → the first task's start
    extra: dict[str, float] = field(default_factory=dict)  # other figures, by name
    failed: bool = False  # a measurement went wrong (not: a peer or Redis missing)
    round_trips_skipped: bool = False  # not measured by design (the config says why)

    @property
    def drain_per_process(self) -> float | None:
        """drain/s ÷ worker processes: what one process does, as taskq's one worker."""
        return None if self.drain_per_s is None else self.drain_per_s / self.processes


@dataclass(frozen=True)
class TaskqFigures:
    """taskq's own figures from the same run, for the ratio columns."""

    drain_per_s: float | None = None
    rtt_p50_ms: float | None = None
    rtt_p99_ms: float | None = None


def fastest_per_process(results: Sequence[PeerResult]) -> PeerResult | None:
    """The configuration with the highest drain/s per process: the one taskq has to beat."""
    measured = [r for r in results if r.drain_per_process]
    return max(measured, key=lambda r: r.drain_per_process or 0.0, default=None)


def missing_modules(peer: Peer) -> list[str]:
    return [module for module in peer.modules if importlib.util.find_spec(module) is None]


def versions(peer: Peer) -> str:
    found = []
    for name in peer.distributions:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{name} {importlib.metadata.version(name)}")
    return ", ".join(found)


def select(names: Sequence[str]) -> list[PeerSpec]:
    """The configurations named, or all of a peer named, in the table's order."""
    unknown = set(names) - set(FRAMEWORKS) - set(SPECS)
    if unknown:
        known = ", ".join([*PEERS, *SPECS])
        raise ValueError(f"unknown peers or configurations: {sorted(unknown)}; known: {known}")
    return [spec for spec in CONFIGURATIONS if spec.name in names or spec.peer.name in names]


# -- services ---------------------------------------------------------------------------------


def plain_postgres(url: str) -> str:
    """asyncpg's form of a SQLAlchemy URL (`postgresql+asyncpg://` → `postgresql://`)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+')[0]}://{rest}"


def with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + path))


async def rabbitmqctl(*args: str) -> str:
    """Run `rabbitmqctl -q ARGS...` on this host; → its stdout."""
    completed = await asyncio.to_thread(
        subprocess.run,
        ["rabbitmqctl", "-q", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return completed.stdout


@contextlib.asynccontextmanager
async def throwaway_vhost(amqp_url: str, peer: str) -> AsyncIterator[str]:
    """A new vhost on amqp_url's server for this peer; → its URL. Deleted afterwards."""
    vhost = f"taskq_peers_{peer}_{uuid.uuid4().hex[:8]}"
    user = unquote(urlsplit(amqp_url).username or "guest")
    await rabbitmqctl("add_vhost", vhost)
    try:
        await rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield with_path(amqp_url, quote(vhost, safe=""))
    finally:
        await rabbitmqctl("delete_vhost", vhost)


@contextlib.asynccontextmanager
async def throwaway_database(admin_url: str) -> AsyncIterator[str]:
    name = f"taskq_peers_{uuid.uuid4().hex[:8]}"
    await execute(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield with_path(admin_url, name)
    finally:
        await execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def execute(postgres_url: str, statement: str) -> None:
    connection = await asyncpg.connect(plain_postgres(postgres_url), timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def queue_depth(vhost_url: str, queue: str) -> int:
    """Messages in the queue (ready ones: run with no consumer attached, that is all of them)."""
    connection = await aio_pika.connect(vhost_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count
        return int(count) if count is not None else 0


async def messages_held(vhost_url: str, queue: str) -> int:
    """Ready + unacknowledged messages in the queue (AMQP's passive declare counts the ready)."""
    vhost = unquote(urlsplit(vhost_url).path.lstrip("/"))
    listing = await rabbitmqctl(
        "list_queues", "-p", vhost, "--no-table-headers", "name", "messages"
    )
    for line in listing.splitlines():
        name, _, count = line.rpartition("\t")
        if name == queue:
            return int(count)
    raise RuntimeError(f"no queue {queue!r} in vhost {vhost!r}")


def where(url: str | None) -> str:
    """host:port of a URL, without its credentials."""
    if not url:
        return "(none given)"
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def redis_answers(url: str) -> bool:
    """Does a Redis server answer PING at url? (A plain socket: no client library needed.)"""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


# -- processes --------------------------------------------------------------------------------


def peer_env(
    spec: PeerSpec, vhost_url: str, mark_dir: Path, results: str | None, results_name: str
) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TASKQ_", "PEERS_")) and key != "PYTHONPATH"
    }
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        PEERS_AMQP_URL=vhost_url,
        PEERS_MARK_DIR=str(mark_dir),
        PEERS_RESULTS_NAME=results_name,
        PEERS_VARIANT=spec.variant,
        PYTHONUNBUFFERED="1",
    )
    if results is not None:
        env["PEERS_RESULTS"] = results
    return env


async def drive(peer: str, env: dict[str, str], *args: str, limit: float) -> dict[str, object]:
    """Run `python -m benchmarks.peer_apps.drive PEER ARGS...`; → its JSON answer."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.peer_apps.drive",
        peer,
        *args,
        cwd=REPO_ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(limit):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(
            f"{peer} driver {' '.join(args)} did not finish within {limit:.0f} s"
        ) from None
    if process.returncode != 0:
        tail = err.decode(errors="replace")[-3000:]
        raise RuntimeError(f"{peer} driver {' '.join(args)} exited {process.returncode}:\n{tail}")
    answer = json.loads(out.decode().strip().splitlines()[-1])
    assert isinstance(answer, dict)
    return answer


class Worker:
    """One peer worker command in a process group of its own; stop() ends all of it."""

    def __init__(self, spec: PeerSpec, env: dict[str, str], log: Path) -> None:
        self.spec = spec
        self.log = log
        bindir = Path(sys.executable).parent
        argv = [str(bindir / spec.worker[0]), *spec.worker[1:]]
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        self.started = time.time()

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.spec.name} worker exited {self.process.returncode}:\n{self.tail()}"
            )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    async def stop(self, grace: float = 30.0) -> None:
        """SIGTERM (each peer's graceful stop), then SIGKILL to the group if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.process.wait, grace)
        with contextlib.suppress(ProcessLookupError):  # children left behind, or a hang
            os.killpg(self.process.pid, signal.SIGKILL)
        await asyncio.to_thread(self.process.wait)


@contextlib.asynccontextmanager
async def worker(
    spec: PeerSpec, env: dict[str, str], log: Path, grace: float = 30.0
) -> AsyncIterator[Worker]:
    running = Worker(spec, env, log)
    try:
        yield running
    finally:
        await running.stop(grace)


def read_mark(path: Path) -> float | None:
    try:
        return float(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# -- measurements -----------------------------------------------------------------------------


async def wait_for_depth(vhost_url: str, queue: str, expected: int, within: float) -> int:
    """Poll until the queue holds `expected` messages (publishes without confirms land late)."""
    deadline = time.monotonic() + within
    while True:
        depth = await queue_depth(vhost_url, queue)
        if depth == expected or time.monotonic() > deadline:
            return depth
        await asyncio.sleep(0.2)


async def wait_until_taken(vhost_url: str, queue: str, within: float) -> None:
    """Poll until no message is left, ready or unacked: with more than one process (or thread)
    the end mark can run while others still finish their last prefetched tasks, which a stop
    would requeue."""
    deadline = time.monotonic() + within
    while True:
        if not await messages_held(vhost_url, queue) or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.2)


async def measure_drain(
    spec: PeerSpec, vhost_url: str, workdir: Path, count: int, result: PeerResult
) -> None:
    marks = workdir / "drain-marks"
    marks.mkdir()
    env = peer_env(spec, vhost_url, marks, None, "")
    queue = spec.peer.queue
    filled = await drive(spec.peer.name, env, "fill", str(count), limit=120 + count / 100)
    result.enqueue_per_s = count / float(filled["seconds"])  # type: ignore[arg-type]
    depth = await wait_for_depth(vhost_url, queue, count + 2, within=15)
    if depth != count + 2:
        raise RuntimeError(f"queue {queue!r} holds {depth} messages, not {count + 2}")

    within = 60 + count / 100
    async with worker(spec, env, workdir / "drain-worker.log") as running:
        while (end := read_mark(marks / "end")) is None:
            running.check_alive()
            if time.time() - running.started > within:
                raise RuntimeError(f"no end mark after {within:.0f} s:\n{running.tail()}")
            await asyncio.sleep(0.02)
        spawned = running.started
        await wait_until_taken(vhost_url, queue, within=15)
    start = read_mark(marks / "start")
    if start is None:
        raise RuntimeError("the end mark ran but the start mark did not")
    result.drain_per_s = count / (end - start)
    result.startup_s = start - spawned
    result.tasks = count
    left = await queue_depth(vhost_url, queue)
    if left:
        raise RuntimeError(f"{left} messages left in {queue!r} after the drain")


async def measure_round_trips(
    spec: PeerSpec,
    vhost_url: str,
    workdir: Path,
    pairs: int,
    warmup: int,
    results: str,
    results_name: str,
    result: PeerResult,
) -> None:
    marks = workdir / "rtt-marks"
    marks.mkdir()
    env = peer_env(spec, vhost_url, marks, results, results_name)
    await drive(spec.peer.name, env, "prepare", limit=60)
    # Nothing is checked after the round trips: a worker slow to stop (Taskiq's can take ~20 s
    # here) is killed sooner.
    async with worker(spec, env, workdir / "rtt-worker.log", grace=5) as running:
        try:
            answer = await drive(
                spec.peer.name, env, "rtt", str(pairs), str(warmup), limit=120 + pairs
            )
        except RuntimeError as error:
            raise RuntimeError(f"{error}\nworker log:\n{running.tail()}") from None
    series = answer["series"]
    assert isinstance(series, dict)
    for name, samples in series.items():
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        if name == "default":
            result.rtt_p50_ms, result.rtt_p99_ms = p50, p99
        else:
            result.extra[f"rtt p50 ms, {name}"] = p50
            result.extra[f"rtt p99 ms, {name}"] = p99
    result.pairs = pairs


def round_trip_backend(
    peer: Peer, postgres_url: str, redis_url: str | None
) -> tuple[str | None, str]:
    """PEERS_RESULTS for the peer's round trips (None: n/a) and a note for the report."""
    if peer.results == "rpc":
        return "rpc://", ""
    if peer.results == "postgres":
        return plain_postgres(postgres_url), ""
    if not redis_url or not redis_answers(redis_url):
        return None, (
            f"round trip n/a: no Redis answers at {where(redis_url)}, and "
            "Dramatiq has no PostgreSQL or RabbitMQ result backend"
        )
    if importlib.util.find_spec("redis") is None:
        return None, f"round trip n/a: the redis package is missing: {INSTALL_HINT}"
    return redis_url, "round-trip results in Redis, which taskq does not use"


def slug(name: str) -> str:
    """ "celery prefork -c 2" → "celery_prefork_c_2", for vhost and directory names."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def new_result(spec: PeerSpec) -> PeerResult:
    config = dict(spec.config)
    if spec.no_round_trips:
        config["round trips"] = spec.no_round_trips
    return PeerResult(
        peer=spec.peer.name,
        name=spec.name,
        processes=spec.processes,
        shared={"versions": versions(spec.peer), **spec.peer.config},
        config=config,
        round_trips_skipped=bool(spec.no_round_trips),
    )


async def run_peer(
    spec: PeerSpec,
    count: int,
    pairs: int,
    amqp_url: str,
    postgres_url: str,
    redis_url: str | None,
    warmup: int,
) -> PeerResult:
    """One configuration on a vhost of its own: the drain, then (unless skipped) round trips."""
    result = new_result(spec)
    missing = missing_modules(spec.peer)
    if missing:
        result.note = f"not installed ({', '.join(missing)}): {INSTALL_HINT}"
        return result
    results, note = (
        (None, "")
        if spec.no_round_trips
        else round_trip_backend(spec.peer, postgres_url, redis_url)
    )
    notes = [note] if note else []
    results_name = f"taskq_peers_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix=f"taskq-peers-{slug(spec.name)}-") as tmp:
        workdir = Path(tmp)
        try:
            async with throwaway_vhost(amqp_url, slug(spec.name)) as vhost_url:
                await measure_drain(spec, vhost_url, workdir, count, result)
                if results is not None:
                    try:
                        await measure_round_trips(
                            spec, vhost_url, workdir, pairs, warmup, results, results_name, result
                        )
                    finally:
                        if spec.peer.results == "postgres":
                            await execute(postgres_url, f'DROP TABLE IF EXISTS "{results_name}"')
        except (RuntimeError, OSError, subprocess.CalledProcessError) as error:
            result.failed = True
            notes.append(f"FAILED: {error}")
    result.note = "; ".join(notes)
    return result


async def run_peers(
    n: int,
    rtt_pairs: int,
    amqp_url: str,
    postgres_url: str,
    *,
    redis_url: str | None = LOCAL_REDIS,
    only: Sequence[str] = PEERS,
    warmup: int = WARMUP,
) -> list[PeerResult]:
    """Drain N no-ops (and time `rtt_pairs` round trips) in each configuration `only` names, one
    after another; `only` holds peer names (all of that peer's configurations) and/or
    configuration names.

    amqp_url names a RabbitMQ server (its vhost is ignored: each configuration gets a throwaway
    one, made with `rabbitmqctl` on this host); postgres_url a database Taskiq may put a result
    table in (dropped afterwards); redis_url the Redis for Dramatiq's round trips (None: n/a).
    A configuration whose packages are missing comes back with no figures and an install note.
    """
    return [
        await run_peer(spec, n, rtt_pairs, amqp_url, postgres_url, redis_url, warmup)
        for spec in select(only)
    ]


# -- the report -------------------------------------------------------------------------------


def figure(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None or denominator == 0:
        return "n/a"
    return f"{numerator / denominator:.2f}x"


COLUMNS = [
    "configuration",
    "processes",
    "tasks",
    "drain/s",
    "drain/s per process",
    "pairs",
    "rtt p50 ms",
    "rtt p99 ms",
    "enqueue/s",
]
RATIO_COLUMNS = ["taskq vs per process", "p50 vs taskq", "p99 vs taskq"]


def rtt_cells(r: PeerResult) -> list[str]:
    """pairs, p50, p99: "-" where round trips are skipped by design, "n/a" where they failed."""
    if r.round_trips_skipped:
        return ["-", "-", "-"]
    return [str(r.pairs or "-"), figure(r.rtt_p50_ms, 2), figure(r.rtt_p99_ms, 2)]


def table_row(r: PeerResult, taskq: TaskqFigures | None) -> list[str]:
    row = [
        r.name,
        str(r.processes),
        str(r.tasks or "-"),
        figure(r.drain_per_s),
        figure(r.drain_per_process),
        *rtt_cells(r),
        figure(r.enqueue_per_s),
    ]
    if taskq is not None:
        row += [
            ratio(taskq.drain_per_s, r.drain_per_process),
            "-" if r.round_trips_skipped else ratio(r.rtt_p50_ms, taskq.rtt_p50_ms),
            "-" if r.round_trips_skipped else ratio(r.rtt_p99_ms, taskq.rtt_p99_ms),
        ]
    return row


def taskq_row(taskq: TaskqFigures) -> list[str]:
    drain = figure(taskq.drain_per_s)
    p50, p99 = figure(taskq.rtt_p50_ms, 2), figure(taskq.rtt_p99_ms, 2)
    return ["taskq", "1", "", drain, drain, "", p50, p99, "", "1.00x", "1.00x", "1.00x"]


def aligned(rows: Sequence[list[str]]) -> list[str]:
    """The first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]


def configurations(results: Sequence[PeerResult]) -> list[str]:
    """Each peer's shared lines once, then each of its configurations' own lines and notes."""
    lines: list[str] = []
    peer = None
    for r in results:
        if r.peer != peer:
            peer = r.peer
            lines += ["", f"{peer}, every configuration:"]
            lines += [f"  {key}: {value}" for key, value in r.shared.items()]
        lines.append(f"  {r.name}:")
        lines += [f"    {key}: {value}" for key, value in r.config.items()]
        if r.startup_s is not None:
            lines.append(f"    worker start-up (spawn -> first task start): {r.startup_s:.2f} s")
        lines += [f"    {key}: {value:.2f}" for key, value in r.extra.items()]
        if r.note:
            lines.append(f"    note: {r.note}")
    return lines


def format_report(results: Sequence[PeerResult], taskq: TaskqFigures | None = None) -> str:
    """The table (one row per configuration), the fastest per process, then how each ran.

    With taskq's figures (one worker process), ratio columns say how many times faster taskq
    is: drain taskq/(the configuration's drain per process), round trip peer/taskq (above 1:
    taskq is better).
    """
    header = COLUMNS + (RATIO_COLUMNS if taskq is not None else [])
    rows = [table_row(r, taskq) for r in results]
    if taskq is not None:
        rows.append(taskq_row(taskq))
    lines = aligned([header, *rows])
    fastest = fastest_per_process(results)
    lines += [
        "",
        "fastest per process (the one to beat): "
        + (f"{fastest.name} {fastest.drain_per_process:,.1f}/s" if fastest else "none measured"),
        "",
        "drain/s: N no-op tasks / (last task's end - first task's start), one worker command "
        "on a pre-filled queue; processes: the worker processes that execute tasks, and drain/s "
        "per process = drain/s / processes (taskq's worker is one process); rtt: sequential "
        "submit -> result, nearest-rank percentiles; '-': not measured (the configuration "
        "says why)",
    ]
    return "\n".join(lines + configurations(results))


# -- the command ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def postgres_database(url: str | None) -> AsyncIterator[str]:
    """The given database, or a throwaway local one dropped afterwards."""
    if url is not None:
        yield url
        return
    async with throwaway_database(LOCAL_POSTGRES) as made:
        yield made


def parse_only(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FRAMEWORKS and name not in SPECS]
    if unknown or not names:
        choices = "; ".join([*PEERS, *SPECS])
        raise argparse.ArgumentTypeError(f"choose among {choices}; got {text!r}")
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tasks", type=int, help=f"N to drain (default {DEFAULT_TASKS:,})")
    parser.add_argument("--pairs", type=int, help=f"round trips (default {DEFAULT_PAIRS})")
    parser.add_argument(
        "--only",
        type=parse_only,
        default=list(PEERS),
        help="peers (each with all its configurations) and/or configurations, comma-separated: "
        "e.g. 'celery,taskiq classic' (default: all)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"small: {SMOKE_TASKS} tasks, {SMOKE_PAIRS} round trips (unless given)",
    )
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("TASKQ_BENCH_AMQP_URL", LOCAL_AMQP),
        help="the RabbitMQ server (default: TASKQ_BENCH_AMQP_URL, else guest@127.0.0.1); its "
        "vhost is ignored: each configuration runs in a throwaway one",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TASKQ_BENCH_POSTGRES_URL"),
        help="database for Taskiq's result table (default: TASKQ_BENCH_POSTGRES_URL, else a "
        "throwaway local one)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("TASKQ_BENCH_REDIS_URL", LOCAL_REDIS),
        help="Redis for Dramatiq's round trips ('' for none: then n/a); default "
        f"TASKQ_BENCH_REDIS_URL, else {LOCAL_REDIS}",
    )
    for name, what in (
        ("drain-per-s", "drain tasks/s"),
        ("rtt-p50-ms", "round trip p50"),
        ("rtt-p99-ms", "round trip p99"),
    ):
        parser.add_argument(
            f"--taskq-{name}", type=float, help=f"taskq's {what} from this run, for ratios"
        )
    options = parser.parse_args(argv)
    options.tasks = options.tasks or (SMOKE_TASKS if options.smoke else DEFAULT_TASKS)
    options.pairs = options.pairs or (SMOKE_PAIRS if options.smoke else DEFAULT_PAIRS)
    if options.tasks < 1 or options.pairs < 1:
        parser.error("--tasks and --pairs must be at least 1")
    return options


async def amain(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    chosen = {spec.peer.name: spec.peer for spec in select(options.only)}
    absent = [peer for peer in chosen.values() if missing_modules(peer)]
    for peer in absent:
        print(f"{peer.name}: not installed ({', '.join(missing_modules(peer))}): {INSTALL_HINT}")
    if len(absent) == len(chosen):
        print(f"peers not installed, nothing measured: {INSTALL_HINT}")
        return 0
    absent_names = {peer.name for peer in absent}
    warmup = min(WARMUP, options.pairs)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    async with postgres_database(options.postgres_url) as postgres_url:
        results = await run_peers(
            options.tasks,
            options.pairs,
            options.amqp_url,
            postgres_url,
            redis_url=options.redis_url or None,
            only=[spec.name for spec in select(options.only) if spec.peer.name not in absent_names],
            warmup=warmup,
        )
    taskq = None
    if any(
        v is not None
        for v in (options.taskq_drain_per_s, options.taskq_rtt_p50_ms, options.taskq_rtt_p99_ms)
    ):
        taskq = TaskqFigures(
            options.taskq_drain_per_s, options.taskq_rtt_p50_ms, options.taskq_rtt_p99_ms
        )
    print(
        f"peers: drain of {options.tasks:,} no-op tasks by one worker command, "
        f"{options.pairs} sequential round trips, per configuration; RabbitMQ at "
        f"{urlsplit(options.amqp_url).hostname}:{urlsplit(options.amqp_url).port or 5672}; "
        f"{time.monotonic() - started:.0f} s; "
        f"load average (1 min) {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print(format_report(results, taskq))
    return 1 if any(r.failed for r in results) else 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(amain(argv))


if __name__ == "__main__":
    sys.exit(main())
