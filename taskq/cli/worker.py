"""`taskq worker APP` and `taskq scheduler APP`: long-running processes, stopped by signals.

The first SIGTERM/SIGINT stops taking work and lets running tasks finish; a second one
stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Annotated

import typer

from taskq.app import App
from taskq.cli.common import AppSpec, load_app, run
from taskq.scheduler import LeaderWork, campaign
from taskq.worker import Worker, heartbeat

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
    log_level: LogLevel = "INFO",
) -> None:
    """Run a worker process for APP."""
    configure_logging(log_level)
    loaded = load_app(app)
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    run(_serve_worker(loaded, concurrency, names, scheduler))


def scheduler(app: AppSpec, log_level: LogLevel = "INFO") -> None:
    """Run only a scheduler for APP: a candidate leader that runs no tasks."""
    configure_logging(log_level)
    run(_serve_scheduler(load_app(app)))


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    for noisy in ("aio_pika", "aiormq"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


async def _serve_worker(
    app: App, concurrency: int, queues: list[str] | None, scheduler: bool
) -> None:
    async with app:
        worker = Worker(app, concurrency=concurrency, queues=queues, scheduler=scheduler)
        _on_signals(worker.stop)
        await worker.run()


async def _serve_scheduler(app: App) -> None:
    async with app:
        process_id = heartbeat.new_process_id()
        stop = asyncio.Event()
        _on_signals(stop.set)
        async with (
            heartbeat.registered(app.store, process_id, role="scheduler", queues=[], concurrency=0),
            asyncio.TaskGroup() as running,
        ):
            candidate = running.create_task(
                campaign(app.store, process_id, LeaderWork(app, process_id).run)
            )
            await stop.wait()
            candidate.cancel()


def _on_signals(stop: Callable[[], None]) -> None:
    """First signal: `stop()` gracefully. Second: cancel the main task at once."""
    main = asyncio.current_task()
    received = 0

    def on_signal(signum: int) -> None:
        nonlocal received
        received += 1
        if received == 1:
            logger.info(
                "%s: finishing running tasks (send it again to stop at once)",
                signal.Signals(signum).name,
                extra={"action": "graceful_shutdown"},
            )
            stop()
        elif main is not None:
            logger.warning("second signal: stopping now", extra={"action": "force_exit"})
            main.cancel()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
