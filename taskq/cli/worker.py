"""`taskq worker APP` and `taskq scheduler APP`: long-running processes, stopped by signals.

The first SIGTERM/SIGINT stops taking work and lets running tasks finish; a second one
stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from taskq import middleware as middlewares
from taskq.app import App
from taskq.cli.common import AppSpec, fail, load_app, run
from taskq.exceptions import TaskqError
from taskq.scheduler import LeaderWork, campaign
from taskq.telemetry import logs, prometheus, setup
from taskq.worker import Worker, WorkerOptions, heartbeat, http
from taskq.worker.reachability import Reachability
from taskq.worker.supervisor import (
    RECYCLE_EXIT,
    SNAPSHOT_DIR_ENV,
    Supervisor,
    child_command,
    memory_limit,
)

logger = logging.getLogger(__name__)

LogLevel = Annotated[str, typer.Option(envvar="TASKQ_LOG_LEVEL", help="DEBUG, INFO, WARNING…")]


class LogFormatChoice(enum.StrEnum):
    text = "text"
    json = "json"


LogFormat = Annotated[
    LogFormatChoice,
    typer.Option(
        envvar="TASKQ_LOG_FORMAT",
        help="text, or json (one object per line, with task and trace ids).",
    ),
]


def worker(
    app: AppSpec,
    concurrency: Annotated[
        int, typer.Option(envvar="TASKQ_CONCURRENCY", min=1, help="Tasks run at once.")
    ] = 10,
    queues: Annotated[
        str | None,
        typer.Option(
            envvar="TASKQ_QUEUES", help="Comma-separated queues (default: all the app's)."
        ),
    ] = None,
    scheduler: Annotated[
        bool,
        typer.Option(
            "--scheduler/--no-scheduler",
            envvar="TASKQ_SCHEDULER",
            help="Stand for leadership (publish delayed and periodic tasks when leading).",
        ),
    ] = True,
    shutdown_timeout: Annotated[
        float,
        typer.Option(
            envvar="TASKQ_SHUTDOWN_TIMEOUT",
            min=0,
            help="On SIGTERM/SIGINT, seconds running tasks may take to finish before they "
            "are cancelled and handed back (a second signal: at once).",
        ),
    ] = 30.0,
    processes: Annotated[
        int,
        typer.Option(
            envvar="TASKQ_PROCESSES",
            min=1,
            help="Worker processes, each running --concurrency tasks; dead ones are replaced.",
        ),
    ] = 1,
    max_tasks_per_child: Annotated[
        int | None,
        typer.Option(
            envvar="TASKQ_MAX_TASKS_PER_CHILD",
            min=1,
            help="Replace a process after it ran this many tasks.",
        ),
    ] = None,
    max_memory_per_child: Annotated[
        str | None,
        typer.Option(
            envvar="TASKQ_MAX_MEMORY_PER_CHILD",
            help="Replace a process once its resident memory passes this (e.g. 500MB, 1GiB), "
            "after its running tasks finish.",
        ),
    ] = None,
    health_port: Annotated[
        int | None,
        typer.Option(
            envvar="TASKQ_HEALTH_PORT",
            min=0,
            max=65535,
            help="Serve HTTP /healthz (the event loop answers) and /readyz (broker and "
            "store reachable) on this port, for orchestrators' probes.",
        ),
    ] = None,
    health_host: Annotated[
        str, typer.Option(envvar="TASKQ_HEALTH_HOST", help="Address the probes listen on.")
    ] = "127.0.0.1",
    blocked_threshold: Annotated[
        float,
        typer.Option(
            envvar="TASKQ_BLOCKED_THRESHOLD",
            min=0.05,
            help="Log the task that blocks the event loop for longer than this (seconds).",
        ),
    ] = 1.0,
    hard_time_limit: Annotated[
        float | None,
        typer.Option(
            envvar="TASKQ_HARD_TIME_LIMIT",
            min=0.5,
            help="End the worker process when a task keeps the event loop blocked this long "
            "(seconds): the task is failed with TimeLimitExceeded and never runs again.",
        ),
    ] = None,
    memory_limit_: Annotated[
        str | None,
        typer.Option(
            "--memory-limit",
            envvar="TASKQ_MEMORY_LIMIT",
            help="End the worker process as soon as its resident memory reaches this (e.g. "
            "2GiB), even mid-task: the task to blame is failed with MemoryLimitExceeded.",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            envvar="TASKQ_METRICS_PORT",
            min=0,
            max=65535,
            help="Serve Prometheus metrics on http://HOST:PORT/metrics (the whole worker, "
            "summed over its --processes). Needs taskq[otel].",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(envvar="TASKQ_METRICS_HOST", help="Address /metrics listens on.")
    ] = "127.0.0.1",
    middleware: Annotated[
        list[str] | None,
        typer.Option(
            "--middleware",
            help="Enable an installed middleware plugin by its entry-point name "
            "(repeat it, or separate names with commas); joins those of TASKQ_MIDDLEWARE.",
        ),
    ] = None,
    child: Annotated[bool, typer.Option("--child", hidden=True)] = False,
    log_level: LogLevel = "INFO",
    log_format: LogFormat = LogFormatChoice.text,
) -> None:
    """Run worker processes for APP."""
    logs.configure(log_level, log_format.value)
    try:
        memory = None if max_memory_per_child is None else memory_limit(max_memory_per_child)
    except ValueError as exc:
        fail(f"--max-memory-per-child: {exc}")
    try:
        hard_memory = None if memory_limit_ is None else memory_limit(memory_limit_)
    except ValueError as exc:
        fail(f"--memory-limit: {exc}")
    hard_limits = hard_time_limit is not None or hard_memory is not None
    supervised = (
        processes > 1 or max_tasks_per_child is not None or memory is not None or hard_limits
    )
    loaded = load_app(app)
    try:
        plugins = [name for given in middleware or () for name in given.split(",")]
        for plugin in middlewares.from_entry_points(plugins):
            loaded.add_middleware(plugin)
    except TaskqError as exc:
        fail(str(exc))
    if supervised and not child:
        argv = sys.argv[1:]
        for parent_only in ("--processes", "--health-port", "--metrics-port"):
            argv = _without(argv, parent_only)
        sup = Supervisor(
            child_command([*argv, "--child"]),
            processes,
            loaded.settings.store_url,
            health=None if health_port is None else (health_host, health_port),
            metrics=None if metrics_port is None else (metrics_host, metrics_port),
            reachability=Reachability(
                loaded.settings.broker_url,
                loaded.settings.store_url,
                max_priority=loaded.settings.max_priority,
            ),
        )
        raise typer.Exit(asyncio.run(sup.run()))
    snapshots_to = os.environ.get(SNAPSHOT_DIR_ENV) if child else None
    try:
        telemetry = setup.configure(prometheus=metrics_port is not None or bool(snapshots_to))
    except TaskqError as exc:
        fail(str(exc))
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    try:
        options = WorkerOptions(
            concurrency=concurrency,
            queues=None if names is None else tuple(names),
            scheduler=scheduler,
            shutdown_timeout=shutdown_timeout,
            max_tasks=max_tasks_per_child,
            max_memory=memory,
            health_port=None if child else health_port,
            health_host=health_host,
            blocked_threshold=blocked_threshold,
            hard_time_limit=hard_time_limit,
            memory_limit=hard_memory,
            observe_queues=telemetry.reader is not None or bool(telemetry.providers),
        )
    except TaskqError as exc:
        telemetry.shutdown()
        fail(str(exc))
    exposed = _metrics_exposure(telemetry, metrics_host, metrics_port, snapshots_to)
    try:
        recycled = run(_serve_worker(loaded, options, exposed))
    finally:
        telemetry.shutdown()
    # Every outcome is stored and every message settled or handed back by now. Exit without
    # waiting for pool threads: a plain def task handed back at the shutdown timeout may
    # still be running in one, and Python would otherwise wait for it to return.
    logging.shutdown()
    os._exit(RECYCLE_EXIT if recycled and child else 0)


def scheduler(
    app: AppSpec, log_level: LogLevel = "INFO", log_format: LogFormat = LogFormatChoice.text
) -> None:
    """Run only a scheduler for APP: a candidate leader that runs no tasks."""
    logs.configure(log_level, log_format.value)
    run(_serve_scheduler(load_app(app)))


FORCE_EXIT_AFTER = 10.0


def _exit_now() -> None:
    logger.error("could not stop cleanly in %.0f s; exiting", FORCE_EXIT_AFTER)
    logging.shutdown()
    os._exit(1)


def _without(argv: list[str], option: str) -> list[str]:
    """`argv` less `option VALUE` / `option=VALUE` (children run one process each)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            kept.append(arg)
    return kept


def _metrics_exposure(
    telemetry: setup.Telemetry, host: str, port: int | None, snapshots_to: str | None
) -> contextlib.AbstractAsyncContextManager[Any]:
    """Where this process shows its metrics: a child hands them to its supervisor, a lone
    worker serves /metrics itself."""
    reader = telemetry.reader
    if reader is None:
        return contextlib.nullcontext()
    if snapshots_to:
        return prometheus.serve_snapshots(Path(snapshots_to) / f"{os.getpid()}.sock", reader)

    assert port is not None
    return _serving_metrics(host, port, reader)


@contextlib.asynccontextmanager
async def _serving_metrics(host: str, port: int, reader: Any) -> AsyncIterator[int]:
    async def metrics() -> tuple[str, str, bytes]:
        body = prometheus.render(prometheus.snapshot(reader)).encode()
        return "200 OK", prometheus.CONTENT_TYPE, body

    async with http.serving(host, port, {"/metrics": metrics}) as bound:
        logger.info("metrics on http://%s:%d/metrics", host, bound)
        yield bound


async def _serve_worker(
    app: App, options: WorkerOptions, exposed: contextlib.AbstractAsyncContextManager[Any]
) -> bool:
    """→ whether the worker stopped itself over a limit (to be replaced)."""
    async with app, exposed:
        worker = Worker(app, options)
        _on_signals(worker.stop, lambda: worker.stop(force=True))
        _freeze_startup_heap()
        await worker.run()
        return worker.recycled is not None


def _freeze_startup_heap() -> None:
    """Move everything start-up made (imported modules, the app, SQLAlchemy's and the
    OpenTelemetry SDK's tables) out of the collector's sight. A full collection otherwise
    walks those hundreds of thousands of objects each time, and the garbage of busy tasks
    (spans most of all) triggers one every few thousand tasks. This process is ours, so
    freezing its heap is our call; an app running `app.worker()` itself is left alone."""
    gc.collect()
    gc.freeze()


async def _serve_scheduler(app: App) -> None:
    async with app:
        process_id = heartbeat.new_process_id()
        stop = asyncio.Event()
        _on_signals(stop.set, stop.set)
        async with (
            heartbeat.registered(app.store, process_id, role="scheduler", queues=[], concurrency=0),
            asyncio.TaskGroup() as running,
        ):
            candidate = running.create_task(
                campaign(app.store, process_id, LeaderWork(app, process_id).run)
            )
            await stop.wait()
            candidate.cancel()


def _on_signals(stop: Callable[[], None], force: Callable[[], None]) -> None:
    """First SIGTERM/SIGINT: `stop()` gracefully. Second: `force()` (stop at once)."""
    received = 0

    def on_signal(signum: int) -> None:
        nonlocal received
        received += 1
        name = signal.Signals(signum).name
        if received == 1:
            logger.info(
                "%s: finishing running tasks (send it again to stop at once)",
                name,
                extra={"action": "graceful_shutdown"},
            )
            stop()
        else:
            logger.warning(
                "%s again: stopping now; running tasks are handed back",
                name,
                extra={"action": "force_exit"},
            )
            force()
            # If handing back hangs (a broker gone for good), leave anyway: the broker requeues
            # what this process held once its connections drop.
            loop.call_later(FORCE_EXIT_AFTER, _exit_now)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
