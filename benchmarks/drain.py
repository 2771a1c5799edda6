"""How fast does one `taskq worker` drain a full queue of no-op tasks, with and without tracing?

    .venv/bin/python benchmarks/drain.py                 # N = 20,000: off, traces, on; twice
    .venv/bin/python benchmarks/drain.py --smoke         # N = 200, each mode once
    .venv/bin/python benchmarks/drain.py --tracing off --repeat 3
    .venv/bin/python benchmarks/drain.py --tracing off --repeat 1 --profile-worker /tmp/prof

Each measurement: N no-op tasks are queued with `submit_many` while no worker runs; then ONE
`taskq worker APP --concurrency C --no-scheduler` subprocess starts and runs them. The drain
rate is N / (last finished_at - first started_at), read from the tasks' rows in PostgreSQL once
every row is `succeeded` with its result stored; the wall time runs from the worker's start
(the subprocess is spawned) to the last finished_at. finished_at is stamped in the transaction
that stores the outcome, so it is when the outcome became durable (to a round trip). Also
printed: the worker process's CPU time (user + system, all threads, from spawn to exit: it
includes about half a second of start-up) and how long the prefill took.

Three modes. "off": the worker's environment has no OTEL_* variable at all. "on": the worker
gets OTEL_EXPORTER_OTLP_ENDPOINT, pointing at a sink this script serves itself, so `taskq
worker` exports spans and metrics over OTLP/HTTP. "traces": the same with
OTEL_METRICS_EXPORTER=none, spans only. In both, the prefill's `send` spans go from this
process to the same sink (a TracerProvider with a BatchSpanProcessor and an
OTLPSpanExporter). The sink answers 200 and counts requests, bytes and spans; a run whose
worker exported no span fails (the comparison would be meaningless). The modes take turns
`--repeat` times, each round starting one mode later; the medians give the overheads: tracing's
("traces" against "off", PASS or MISS against the 15% target: a figure, not a failure), and
that of spans and metrics together ("on").
`--profile-worker DIR` runs each worker under cProfile (a wrapper: `python -m cProfile -m
taskq worker` writes nothing, since the worker ends with os._exit).

The services come from --amqp-url / --postgres-url (a migrated database), defaulting to
TASKQ_BENCH_AMQP_URL / TASKQ_BENCH_POSTGRES_URL. Without them, every measurement gets a
throwaway vhost (`rabbitmqctl`, local RabbitMQ as guest) and a throwaway database (local
PostgreSQL as postgres, `taskq db upgrade`), removed afterwards. Exit code 0 only if every
task of every measurement succeeded (and every traced run's worker exported spans).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gzip
import http.server
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg

# Run as a script, only benchmarks/ is on sys.path: add the repository root, so that
# `benchmarks.*` names these modules here and in the worker subprocesses alike.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks.noop_app import APP_SPEC, QUEUE, TASK_NAME, build  # noqa: E402
from benchmarks.services import (  # noqa: E402
    add_service_options,
    asyncpg_url,
    clean_env,
    services,
    worker_process,
)

DEFAULT_TASKS = 20_000
SMOKE_TASKS = 200
DEFAULT_CONCURRENCY = 100
DEFAULT_REPEAT = 2
TARGET_OVERHEAD = 15.0  # percent of the untraced drain rate
# The worker's OTEL_* variables besides the endpoint, per mode ("off": no OTEL_* at all).
MODES: dict[str, dict[str, str]] = {
    "off": {},
    "traces": {"OTEL_METRICS_EXPORTER": "none"},  # spans only: what the target is about
    "on": {},  # the endpoint alone: spans and metrics
}
PREFILL_CHUNK = 5_000
WORKER_SERVICE = "taskq-bench-drain-worker"
PRODUCER_SERVICE = "taskq-bench-drain-producer"


# -- the OTLP/HTTP sink -----------------------------------------------------------------------


class Sink:
    """A local OTLP/HTTP endpoint: answers 200 to every POST and keeps the bodies.

    Bodies are only kept while the run goes on; their spans are decoded afterwards
    (`Exported.of`), so that the sink takes as little CPU as possible meanwhile.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bodies: list[tuple[str, bytes]] = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                sink.received(self.path, body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def received(self, path: str, body: bytes) -> None:
        with self._lock:
            self._bodies.append((path, body))

    def take(self) -> list[tuple[str, bytes]]:
        """Every body received since the last `take()`, as (path, body)."""
        with self._lock:
            bodies, self._bodies = self._bodies, []
        return bodies

    def __enter__(self) -> Sink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclasses.dataclass
class Exported:
    """What reached the sink during one measurement."""

    trace_requests: int = 0
    trace_bytes: int = 0
    metric_requests: int = 0
    spans: dict[str, int] = dataclasses.field(default_factory=dict)  # service.name → spans

    @classmethod
    def of(cls, bodies: list[tuple[str, bytes]]) -> Exported:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        exported = cls()
        for path, body in bodies:
            if path.endswith("/v1/metrics"):
                exported.metric_requests += 1
                continue
            if not path.endswith("/v1/traces"):
                continue
            exported.trace_requests += 1
            exported.trace_bytes += len(body)
            for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "?",
                )
                count = sum(len(scope.spans) for scope in resource_spans.scope_spans)
                exported.spans[service] = exported.spans.get(service, 0) + count
        return exported


class ProducerTracing:
    """The prefill's tracing: one TracerProvider for the whole process (one can be set only
    once), exporting to the sink, whose sampler is switched on for traced prefills only, so
    "off" prefills make no span and put no trace context in the messages."""

    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint
        self._provider: Any = None
        self.recording = False

    def switch(self, on: bool) -> None:
        if on and self._provider is None:
            self._provider = self._install()
        self.recording = on

    def flush(self) -> None:
        if self._provider is not None:
            self._provider.force_flush()

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()

    def _install(self) -> Any:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler

        switch = self

        class Switched(Sampler):
            def should_sample(self, *args: Any, **kwargs: Any) -> Any:
                chosen = ALWAYS_ON if switch.recording else ALWAYS_OFF
                return chosen.should_sample(*args, **kwargs)

            def get_description(self) -> str:
                return "SwitchedByTheBenchmark"

        provider = TracerProvider(
            resource=Resource.create({"service.name": PRODUCER_SERVICE}), sampler=Switched()
        )
        exporter = OTLPSpanExporter(endpoint=f"{self._endpoint}/v1/traces")
        # The default queue (2048 spans) overflows: one submit_many of PREFILL_CHUNK items
        # starts that many send spans at once, and the SDK would drop the excess.
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=2 * PREFILL_CHUNK))
        trace.set_tracer_provider(provider)
        return provider


# -- one measurement --------------------------------------------------------------------------


@dataclasses.dataclass
class Measurement:
    run: int
    mode: str
    tasks: int
    prefill: float  # seconds for the submit_many calls
    drain: float  # last finished_at - first started_at
    wall: float  # worker spawned → last finished_at
    cpu: float  # the worker process's user + system CPU seconds, spawn to exit
    exported: Exported | None = None  # traced modes only

    @property
    def rate(self) -> float:
        return self.tasks / self.drain


async def fetch(store_url: str, query: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(asyncpg_url(store_url), timeout=10)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


async def prefill(broker_url: str, store_url: str, count: int) -> tuple[float, list[str]]:
    """Queue `count` tasks with submit_many (no worker runs); → (seconds, batch ids)."""
    bench = build(broker_url, store_url)
    async with bench:
        await bench.declare(QUEUE)
        task = bench.tasks[TASK_NAME]
        started = time.perf_counter()
        batches = []
        for first in range(0, count, PREFILL_CHUNK):
            items = [(i,) for i in range(first, min(count, first + PREFILL_CHUNK))]
            batches.append((await task.submit_many(items)).id)
        elapsed = time.perf_counter() - started
    rows = await fetch(
        store_url,
        "SELECT state, count(*) AS n FROM taskq_tasks WHERE batch_id = ANY($1::uuid[]) "
        "GROUP BY state",
        batches,
    )
    found = {row["state"]: row["n"] for row in rows}
    if found != {"queued": count}:
        raise SystemExit(f"FAIL: after the prefill, expected {count} rows queued, found {found}")
    return elapsed, batches


def worker_command(concurrency: int, profile: Path | None) -> list[str]:
    argv = ["worker", APP_SPEC, "--concurrency", str(concurrency), "--no-scheduler"]
    if profile is None:
        return [sys.executable, "-m", "taskq", *argv]
    # `python -m cProfile -m taskq worker` writes nothing: the worker leaves with os._exit()
    # (see taskq/worker_entry.py), past cProfile's own dump. So dump from os._exit itself.
    # And `taskq worker` execs the worker process (taskq.worker_entry) once it has read its
    # options: this process runs that one's `run()` itself, with the same options.
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
        f"    app={APP_SPEC!r}, concurrency={concurrency}, scheduler=False,\n"
        "    log_level=os.environ.get('TASKQ_LOG_LEVEL', 'INFO'),\n"
        ")\n"
        "profile.enable()\n"
        "try:\n"
        "    worker_entry.run(command)\n"
        "finally:\n"
        "    dump_and_exit(0)\n"
    )
    return [sys.executable, "-c", code]


def worker_env(
    broker_url: str, store_url: str, sink: str | None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The worker's environment; `sink` (tracing on): the OTLP endpoint, and `extra`."""
    env = {
        **clean_env(),  # no OTEL_* variable at all unless tracing is on
        "TASKQ_BROKER_URL": broker_url,
        "TASKQ_STORE_URL": store_url,
        "TASKQ_LOG_LEVEL": "WARNING",
    }
    if key := os.environ.get("TASKQ_SIGNING_KEY"):  # (signed messages and events, both sides)
        env["TASKQ_SIGNING_KEY"] = key
    if sink is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink
        env["OTEL_SERVICE_NAME"] = WORKER_SERVICE
        env.update(extra or {})
    return env


async def wait_drained(
    store_url: str,
    batches: list[str],
    count: int,
    process: subprocess.Popen[bytes],
    *,
    held: str | None = None,
) -> None:
    """Poll the rows until every one is `succeeded` with its result stored; fail loudly on
    a task that ended otherwise, a worker that died, or the deadline. A task waiting
    `scheduled` fails the run too, saying `held` if given (flow_control.py's limits)."""
    within = 120 + count / 40  # a stuck run fails rather than hangs
    deadline = time.monotonic() + within
    query = (
        "SELECT count(*) FILTER (WHERE state = 'succeeded' AND result IS NOT NULL) AS done, "
        "count(*) FILTER (WHERE state = 'scheduled') AS held, "
        "count(*) FILTER (WHERE state NOT IN ('queued', 'running', 'succeeded')) AS other "
        "FROM taskq_tasks WHERE batch_id = ANY($1::uuid[])"
    )
    connection = await asyncpg.connect(asyncpg_url(store_url), timeout=10)
    try:
        while True:
            row = await connection.fetchrow(query, batches)
            if row["done"] == count:
                return
            if row["held"] and held is not None:
                raise SystemExit(f"FAIL: {row['held']} tasks {held}")
            if row["other"]:
                states = await connection.fetch(
                    "SELECT state, count(*) AS n FROM taskq_tasks "
                    "WHERE batch_id = ANY($1::uuid[]) GROUP BY state",
                    batches,
                )
                found = {r["state"]: r["n"] for r in states}
                raise SystemExit(f"FAIL: tasks did not all succeed: {found}")
            if process.poll() is not None:
                raise SystemExit(
                    f"FAIL: the worker exited ({process.returncode}) with "
                    f"{count - row['done']} of {count} tasks not done"
                )
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"FAIL: {count - row['done']} of {count} tasks not succeeded "
                    f"after {within:.0f} s"
                )
            await asyncio.sleep(0.5)
    finally:
        await connection.close()


async def measure(
    options: argparse.Namespace,
    run: int,
    mode: str,
    sink: Sink,
    producer: ProducerTracing,
) -> Measurement:
    count, tracing = options.tasks, mode != "off"
    async with services(options.amqp_url, options.postgres_url) as (broker_url, store_url):
        producer.switch(tracing)
        sink.take()  # forget whatever an earlier run left behind
        prefilled, batches = await prefill(broker_url, store_url, count)
        producer.flush()  # the send spans reach the sink before the worker starts
        profile = None
        if options.profile_worker is not None:
            profile = options.profile_worker / f"drain-{mode}-{run}.prof"
        extra = {**MODES[mode], **options.otel_env}
        env = worker_env(broker_url, store_url, sink.endpoint if tracing else None, extra)
        with tempfile.TemporaryDirectory(prefix="taskq-drain-") as tmp:
            # The only child reaped meanwhile is the worker: the difference is its CPU time.
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            spawned = time.time()
            with worker_process(
                worker_command(options.concurrency, profile), env, Path(tmp)
            ) as process:
                await wait_drained(store_url, batches, count, process)
            # The worker has stopped: it flushed its last spans and metrics on the way out.
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
        rows = await fetch(
            store_url,
            "SELECT min(started_at) AS first, max(finished_at) AS last, "
            "count(*) FILTER (WHERE state = 'succeeded' AND result IS NOT NULL) AS done "
            "FROM taskq_tasks WHERE batch_id = ANY($1::uuid[])",
            batches,
        )
    first, last, done = rows[0]["first"], rows[0]["last"], rows[0]["done"]
    if done != count:
        raise SystemExit(f"FAIL: {count - done} of {count} tasks lost their outcome")
    exported = Exported.of(sink.take()) if tracing else None
    return Measurement(
        run=run,
        mode=mode,
        tasks=count,
        prefill=prefilled,
        drain=(last - first).total_seconds(),
        wall=last.timestamp() - spawned,
        cpu=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        exported=exported,
    )


# -- the report -------------------------------------------------------------------------------

HEADER = ("run", "mode", "tasks", "tasks/s", "drain s", "wall s", "cpu s", "prefill s")
WIDTHS = (6, 6, 7, 9, 9, 8, 7, 10)


def row(run: str, mode: str, tasks: int, figures: tuple[float, ...]) -> str:
    """One line of the table: figures are tasks/s, drain s, wall s, cpu s, prefill s."""
    cells = [
        run,
        mode,
        str(tasks),
        *(f"{f:.1f}" if i == 0 else f"{f:.2f}" for i, f in enumerate(figures)),
    ]
    return "  ".join(f"{cell:>{width}}" for cell, width in zip(cells, WIDTHS, strict=True))


def figures_of(m: Measurement) -> tuple[float, ...]:
    return (m.rate, m.drain, m.wall, m.cpu, m.prefill)


def report(results: list[Measurement], options: argparse.Namespace) -> None:
    print(
        f"drain: {options.tasks} no-op tasks queued first, then 1 taskq worker "
        f"(--concurrency {options.concurrency} --no-scheduler) runs them; RabbitMQ + PostgreSQL"
    )
    print("  ".join(f"{column:>{width}}" for column, width in zip(HEADER, WIDTHS, strict=True)))
    for m in results:
        print(row(str(m.run), m.mode, m.tasks, figures_of(m)))
    medians: dict[str, tuple[float, ...]] = {}
    for mode in MODES:
        runs = [figures_of(m) for m in results if m.mode == mode]
        if runs:
            medians[mode] = tuple(statistics.median(column) for column in zip(*runs, strict=True))
            print(row("median", mode, options.tasks, medians[mode]))
    for m in results:
        if m.exported is not None:
            e = m.exported
            spans = ", ".join(f"{service} {n}" for service, n in sorted(e.spans.items()))
            print(
                f"sink, run {m.run} {m.mode}: {e.trace_requests} trace export requests, "
                f"{e.trace_bytes} bytes, spans: {spans or 'none'}; "
                f"{e.metric_requests} metric export requests"
            )
    if "off" not in medians:
        return
    off = medians["off"]
    for mode, what in (("traces", "tracing (spans)"), ("on", "spans and metrics")):
        if mode not in medians:
            continue
        on = medians[mode]
        overhead = (off[0] - on[0]) / off[0] * 100
        target = ""
        if mode == "traces":
            verdict = "PASS" if overhead < TARGET_OVERHEAD else "MISS"
            target = f" (target < {TARGET_OVERHEAD:g}%): {verdict}"
        print(
            f"{what} on: {overhead:.1f}% of the drain rate, medians {off[0]:.1f} off vs "
            f"{on[0]:.1f} {mode}{target}; worker CPU per task {off[3] / options.tasks * 1000:.3f}"
            f" ms off, {on[3] / options.tasks * 1000:.3f} ms {mode}"
        )
        if paired := paired_overheads(results, mode):
            print(
                f"  {mode} against off of the same round: median {statistics.median(paired):.1f}%"
                f" (rounds: {', '.join(f'{p:.1f}' for p in paired)})"
            )


def paired_overheads(results: list[Measurement], mode: str) -> list[float]:
    """Each round's overhead of `mode` against that round's `off` (a slow spell of the
    machine then weighs on both sides), for the rounds that ran both."""
    rates = {(m.run, m.mode): m.rate for m in results}
    return [
        (rates[run, "off"] - rates[run, mode]) / rates[run, "off"] * 100
        for run in sorted({m.run for m in results})
        if (run, "off") in rates and (run, mode) in rates
    ]


def check_exports(results: list[Measurement], otel_env: dict[str, str]) -> list[str]:
    """Every traced run must have reached the sink, from the worker and from the producer
    (from the producer only if --otel-env switched the worker's traces off)."""
    services = [PRODUCER_SERVICE]
    if otel_env.get("OTEL_TRACES_EXPORTER", "").strip().lower() != "none":
        services.append(WORKER_SERVICE)
    problems = []
    for m in results:
        if m.exported is None:
            continue
        if m.exported.trace_requests == 0 or m.exported.trace_bytes == 0:
            problems.append(f"run {m.run} {m.mode}: the sink received no trace export")
        for service in services:
            if not m.exported.spans.get(service):
                problems.append(f"run {m.run} {m.mode}: no span from {service} reached the sink")
    return problems


def otel_variable(item: str) -> tuple[str, str]:
    name, equals, value = item.partition("=")
    if not equals or not name.startswith("OTEL_"):
        raise ValueError(f"{item!r} is not OTEL_NAME=VALUE")
    return name, value


def plan(tracing: str, repeat: int) -> list[tuple[int, str]]:
    """(run, mode) in order: each mode in turn, `repeat` times, each round starting one mode
    later (off traces on, traces on off, ...), so that no mode always runs first or last."""
    modes = list(MODES) if tracing == "all" else [tracing]
    rounds = []
    for run in range(1, repeat + 1):
        shift = (run - 1) % len(modes)
        rounds += [(run, mode) for mode in modes[shift:] + modes[:shift]]
    return rounds


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tasks",
        type=int,
        default=None,
        help=f"N (default {DEFAULT_TASKS}; {SMOKE_TASKS} with --smoke)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"the worker's --concurrency (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--tracing", choices=(*MODES, "all"), default="all", help="(default all, in turn)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help=f"measurements of each mode, alternating (default {DEFAULT_REPEAT}; 1 with --smoke)",
    )
    add_service_options(parser, throwaway="per measurement")
    parser.add_argument(
        "--smoke", action="store_true", help=f"N = {SMOKE_TASKS}, --repeat 1 (for CI)"
    )
    parser.add_argument(
        "--otel-env",
        action="append",
        default=[],
        metavar="OTEL_NAME=VALUE",
        help='one more variable for the worker in the "traces" and "on" runs, e.g. '
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=256 (repeatable)",
    )
    parser.add_argument(
        "--profile-worker",
        type=Path,
        default=None,
        metavar="DIR",
        help="run each worker under cProfile, writing DIR/drain-MODE-RUN.prof",
    )
    options = parser.parse_args()
    if options.tasks is None:
        options.tasks = SMOKE_TASKS if options.smoke else DEFAULT_TASKS
    if options.repeat is None:
        options.repeat = 1 if options.smoke else DEFAULT_REPEAT
    if options.tasks < 1 or options.concurrency < 1 or options.repeat < 1:
        parser.error("--tasks, --concurrency and --repeat must be at least 1")
    try:
        options.otel_env = dict(otel_variable(item) for item in options.otel_env)
    except ValueError as exc:
        parser.error(f"--otel-env: {exc}")
    if options.profile_worker is not None:
        options.profile_worker.mkdir(parents=True, exist_ok=True)

    results: list[Measurement] = []
    with Sink() as sink:
        producer = ProducerTracing(sink.endpoint)
        try:
            for run, mode in plan(options.tracing, options.repeat):
                results.append(await measure(options, run, mode, sink, producer))
                m = results[-1]
                print(
                    f"  run {run} {mode}: {m.rate:.1f} tasks/s (drain {m.drain:.2f} s, "
                    f"wall {m.wall:.2f} s)",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            producer.shutdown()
    report(results, options)
    problems = check_exports(results, options.otel_env)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
