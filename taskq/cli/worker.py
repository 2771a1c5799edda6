"""`taskq worker APP` and `taskq scheduler APP`: long-running processes, stopped by signals.

The first SIGTERM/SIGINT stops taking work and lets running tasks finish; a second one
stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from taskq.app import App
from taskq.cli.common import AppSpec, fail, load_app, run
from taskq.scheduler import LeaderWork, campaign
from taskq.worker import Worker, heartbeat
from taskq.worker.supervisor import RECYCLE_EXIT, Supervisor, child_command, memory_limit

logger = logging.getLogger(__name__)

LogLevel = Annotated[str, typer.Option(envvar="TASKQ_LOG_LEVEL", help="DEBUG, INFO, WARNING…")]


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
    child: Annotated[bool, typer.Option("--child", hidden=True)] = False,
    log_level: LogLevel = "INFO",
) -> None:
    """Run worker processes for APP."""
    configure_logging(log_level)
    try:
        memory = None if max_memory_per_child is None else memory_limit(max_memory_per_child)
    except ValueError as exc:
        fail(f"--max-memory-per-child: {exc}")
    supervised = processes > 1 or max_tasks_per_child is not None or memory is not None
    loaded = load_app(app)
    if supervised and not child:
        argv = _without(_without(sys.argv[1:], "--processes"), "--health-port")
        sup = Supervisor(
            child_command([*argv, "--child"]),
            processes,
            loaded.settings.store_url,
            health=None if health_port is None else (health_host, health_port),
        )
        raise typer.Exit(asyncio.run(sup.run()))
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    options: dict[str, Any] = {
        "concurrency": concurrency,
        "queues": names,
        "scheduler": scheduler,
        "shutdown_timeout": shutdown_timeout,
        "max_tasks": max_tasks_per_child,
        "max_memory": memory,
        "health_port": None if child else health_port,
        "health_host": health_host,
        "blocked_threshold": blocked_threshold,
    }
    recycled = run(_serve_worker(loaded, options))
    # Every outcome is stored and every message settled or handed back by now. Exit without
    # waiting for pool threads: a plain def task handed back at the shutdown timeout may
    # still be running in one, and Python would otherwise wait for it to return.
    logging.shutdown()
    os._exit(RECYCLE_EXIT if recycled and child else 0)


def scheduler(app: AppSpec, log_level: LogLevel = "INFO") -> None:
    """Run only a scheduler for APP: a candidate leader that runs no tasks."""
    configure_logging(log_level)
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


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    for noisy in ("aio_pika", "aiormq"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


async def _serve_worker(app: App, options: dict[str, Any]) -> bool:
    """→ whether the worker stopped itself over a limit (to be replaced)."""
    async with app:
        worker = Worker(app, **options)
        _on_signals(worker.stop, lambda: worker.stop(force=True))
        await worker.run()
        return worker.recycled is not None


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
