"""`taskq worker APP` and `taskq scheduler APP`: long-running processes, stopped by signals.

The first SIGTERM/SIGINT stops taking work and lets running tasks finish; a second one
stops at once. `taskq worker` reads its options here, then becomes the worker process that
`taskq.worker_entry` runs, which holds no command-line library.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Annotated

import typer

from taskq import worker_entry
from taskq.app import App
from taskq.broker import topology
from taskq.cli import common
from taskq.cli.common import AppSpec, fail, load_app, run
from taskq.exceptions import ConfigurationError
from taskq.scheduler import LeaderWork, campaign
from taskq.telemetry import logs
from taskq.worker import heartbeat
from taskq.worker.supervisor import memory_limit

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
    tags: Annotated[
        str | None,
        typer.Option(
            envvar="TASKQ_TAGS",
            help="Comma-separated tags (at most 6): also run the tasks declared with them "
            "(a task runs only on workers that have all of its tags).",
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
    try:
        memory = None if max_memory_per_child is None else memory_limit(max_memory_per_child)
    except ValueError as exc:
        fail(f"--max-memory-per-child: {exc}")
    try:
        hard_memory = None if memory_limit_ is None else memory_limit(memory_limit_)
    except ValueError as exc:
        fail(f"--memory-limit: {exc}")
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    command = worker_entry.Command(
        app=app,
        concurrency=concurrency,
        queues=None if names is None else tuple(names),
        tags=_tags(tags),
        scheduler=scheduler,
        shutdown_timeout=shutdown_timeout,
        processes=processes,
        max_tasks_per_child=max_tasks_per_child,
        max_memory_per_child=memory,
        health_port=health_port,
        health_host=health_host,
        blocked_threshold=blocked_threshold,
        hard_time_limit=hard_time_limit,
        memory_limit=hard_memory,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        middleware=tuple(name for given in middleware or () for name in given.split(",")),
        child=child,
        log_level=log_level,
        log_format=log_format.value,
        debug=common.debug,
    )
    # The worker runs in a process of its own, which never imported typer (see
    # taskq/worker_entry.py): this one becomes it.
    worker_entry.become(command)


def _tags(given: str | None) -> tuple[str, ...]:
    """`--tags gpu,eu`, checked here so that a mistake is one line before anything starts."""
    found = tuple(sorted({tag.strip() for tag in (given or "").split(",") if tag.strip()}))
    try:
        topology.queues_for(["default"], found)
    except ConfigurationError as exc:
        fail(f"--tags: {exc}")
    return found


def scheduler(
    app: AppSpec, log_level: LogLevel = "INFO", log_format: LogFormat = LogFormatChoice.text
) -> None:
    """Run only a scheduler for APP: a candidate leader that runs no tasks."""
    logs.configure(log_level, log_format.value)
    run(_serve_scheduler(load_app(app)))


async def _serve_scheduler(app: App) -> None:
    async with app:
        process_id = heartbeat.new_process_id()
        stop = asyncio.Event()
        worker_entry.on_signals(stop.set, stop.set)
        async with (
            heartbeat.registered(app.store, process_id, role="scheduler", queues=[], concurrency=0),
            asyncio.TaskGroup() as running,
        ):
            candidate = running.create_task(
                campaign(app.store, process_id, LeaderWork(app, process_id).run)
            )
            await stop.wait()
            candidate.cancel()
