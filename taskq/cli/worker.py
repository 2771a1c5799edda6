"""`taskq worker APP`: run tasks until SIGTERM/SIGINT, then finish what is running."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated

import typer

from taskq.cli.common import load_app, run
from taskq.worker import Worker

logger = logging.getLogger(__name__)


def worker(
    app: Annotated[
        str, typer.Argument(help="Your app, as module:attribute (e.g. proj.tasks:app).")
    ],
    concurrency: Annotated[
        int, typer.Option(envvar="TASKQ_CONCURRENCY", min=1, help="Tasks run at once.")
    ] = 10,
    queues: Annotated[
        str | None,
        typer.Option(
            envvar="TASKQ_QUEUES", help="Comma-separated queues (default: all the app's)."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(envvar="TASKQ_LOG_LEVEL")] = "INFO",
) -> None:
    """Run a worker process for APP."""
    configure_logging(log_level)
    loaded = load_app(app)
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    run(_serve(loaded, concurrency, names))


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    for noisy in ("aio_pika", "aiormq"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


async def _serve(app: object, concurrency: int, queues: list[str] | None) -> None:
    from taskq.app import App

    assert isinstance(app, App)
    async with app:
        worker = Worker(app, concurrency=concurrency, queues=queues)
        running = asyncio.current_task()
        signals = 0

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                logger.info(
                    "%s: finishing running tasks (send it again to stop at once)",
                    signal.Signals(signum).name,
                    extra={"action": "graceful_shutdown"},
                )
                worker.stop()
            elif running is not None:
                logger.warning("second signal: stopping now", extra={"action": "force_exit"})
                running.cancel()

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        await worker.run()
