"""A worker process once `taskq worker`'s command line is read: one worker, or a supervisor
of several.

`taskq worker` reads its options with typer, then replaces itself (exec: the same pid, for
signals and process managers) with `python -m taskq.worker_entry`, and a supervisor starts
each child that way too. This module imports no command-line library, and `taskq.cli` is
not imported on the way here: typer 0.29 builds a pydantic validator for every parameter it
parses, some 8 MB that a worker would otherwise hold for its lifetime.

The options travel as arguments, APP then `--name=JSON` for each that is not its default:

    python -m taskq.worker_entry proj.tasks:app --concurrency=50 --scheduler=false
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from taskq import middleware as middlewares
from taskq import reporting
from taskq.app import App
from taskq.exceptions import ConfigurationError, TaskqError
from taskq.store import Store
from taskq.telemetry import logs, prometheus, setup
from taskq.worker import Worker, WorkerOptions, http
from taskq.worker.reachability import Reachability
from taskq.worker.supervisor import RECYCLE_EXIT, SNAPSHOT_DIR_ENV, Supervisor

MODULE = "taskq.worker_entry"

# (By its name: run as `python -m`, this module's __name__ is "__main__".)
logger = logging.getLogger(MODULE)

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Command:
    """`taskq worker`'s options, read: memory sizes in bytes, queue and middleware names
    split. The defaults are the command line's (tests/unit/test_worker_entry.py)."""

    app: str
    concurrency: int = 10
    queues: tuple[str, ...] | None = None
    tags: tuple[str, ...] = ()
    scheduler: bool = True
    shutdown_timeout: float = 30.0
    processes: int = 1
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None
    health_port: int | None = None
    health_host: str = "127.0.0.1"
    blocked_threshold: float = 1.0
    hard_time_limit: float | None = None
    memory_limit: int | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    middleware: tuple[str, ...] = ()
    child: bool = False  # started by a supervisor: one process, its limits reported by exit code
    log_level: str = "INFO"
    log_format: str = "text"
    debug: bool = False  # `taskq --debug`: an error's traceback, not one line

    @property
    def supervised(self) -> bool:
        """Whether the worker runs in children of a supervisor: more than one, or limits
        that end a process (a supervisor replaces it)."""
        return (
            self.processes > 1
            or self.max_tasks_per_child is not None
            or self.max_memory_per_child is not None
            or self.hard_time_limit is not None
            or self.memory_limit is not None
        )

    def argv(self) -> list[str]:
        """The arguments of `python -m taskq.worker_entry`: APP, then `--name=JSON` for each
        option that is not its default."""
        found = [self.app]
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name != "app" and value != field.default:
                text = json.dumps(value, separators=(",", ":"))
                found.append(f"--{field.name.replace('_', '-')}={text}")
        return found

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> Command:
        """The command `argv()` made."""
        app, *options = argv
        names = {field.name for field in dataclasses.fields(cls)} - {"app"}
        values: dict[str, Any] = {}
        for option in options:
            key, equals, text = option.removeprefix("--").partition("=")
            name = key.replace("-", "_")
            if not option.startswith("--") or not equals or name not in names:
                raise ValueError(f"not an option of {MODULE}: {option!r}")
            value = json.loads(text)
            values[name] = tuple(value) if isinstance(value, list) else value
        return cls(app=app, **values)


def command_line(command: Command) -> list[str]:
    """The process that runs `command`: this interpreter, on this module."""
    return [sys.executable, "-m", MODULE, *command.argv()]


def become(command: Command) -> NoReturn:
    """Replace this process (the command line's, which read the options) with the worker's."""
    sys.stdout.flush()
    sys.stderr.flush()
    line = command_line(command)
    os.execv(line[0], line)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    command = Command.from_argv(sys.argv[1:] if argv is None else argv)
    try:
        code = run(command)
    except KeyboardInterrupt:  # (before the worker's own handlers are in place)
        reporting.fail("aborted: interrupted before the worker started")
    sys.exit(code)


def run(command: Command) -> int:
    """Run what `command` says until it is stopped; → the exit code. A worker process (not
    a supervisor) leaves with os._exit instead of returning."""
    logs.configure(command.log_level, command.log_format)
    app = _loaded(command)
    if command.supervised and not command.child:
        return _supervise(command, app)
    _serve(command, app)


def load_app(spec: str) -> App:
    """Import `module:attribute` (attribute defaults to `app`), as uvicorn does; a
    ConfigurationError that says what is wrong else."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot import {module_name!r} (from APP {spec!r}): {exc}"
        ) from exc
    found = getattr(module, attribute, None)
    if not isinstance(found, App):
        candidates = [name for name, value in vars(module).items() if isinstance(value, App)]
        hint = f"; taskq apps in it: {', '.join(candidates)}" if candidates else ""
        raise ConfigurationError(f"{module_name}.{attribute} is not a taskq.App{hint}")
    return found


def _loaded(command: Command) -> App:
    """The app, with the middleware plugins that --middleware names."""
    try:
        app = load_app(command.app)
        for plugin in middlewares.from_entry_points(list(command.middleware)):
            app.add_middleware(plugin)
    except TaskqError as exc:
        reporting.fail(str(exc))
    return app


def child_of(command: Command) -> Command:
    """What a supervisor's child runs: one worker process; the probes and /metrics are the
    supervisor's."""
    return dataclasses.replace(
        command, processes=1, health_port=None, metrics_port=None, child=True
    )


def _supervise(command: Command, app: App) -> int:
    health, metrics = command.health_port, command.metrics_port
    supervisor = Supervisor(
        command_line(child_of(command)),
        command.processes,
        functools.partial(Store, app.settings.store_url, app.settings.namespace),
        health=None if health is None else (command.health_host, health),
        metrics=None if metrics is None else (command.metrics_host, metrics),
        reachability=Reachability(app.settings),
    )
    return asyncio.run(supervisor.run())


def _serve(command: Command, app: App) -> NoReturn:
    snapshots_to = os.environ.get(SNAPSHOT_DIR_ENV) if command.child else None
    try:
        telemetry = setup.configure(
            prometheus=command.metrics_port is not None or bool(snapshots_to)
        )
    except TaskqError as exc:
        reporting.fail(str(exc))
    try:
        options = WorkerOptions(
            concurrency=command.concurrency,
            queues=command.queues,
            tags=frozenset(command.tags),
            scheduler=command.scheduler,
            shutdown_timeout=command.shutdown_timeout,
            max_tasks=command.max_tasks_per_child,
            max_memory=command.max_memory_per_child,
            health_port=None if command.child else command.health_port,
            health_host=command.health_host,
            blocked_threshold=command.blocked_threshold,
            hard_time_limit=command.hard_time_limit,
            memory_limit=command.memory_limit,
            observe_queues=telemetry.reader is not None or bool(telemetry.providers),
        )
    except TaskqError as exc:
        telemetry.shutdown()
        reporting.fail(str(exc))
    exposed = _metrics_exposure(telemetry, command.metrics_host, command.metrics_port, snapshots_to)
    try:
        recycled = reporting.run(_serve_worker(app, options, exposed), debug=command.debug)
    finally:
        telemetry.shutdown()
    # Every outcome is stored and every message settled or handed back by now. Exit without
    # waiting for pool threads: a plain def task handed back at the shutdown timeout may
    # still be running in one, and Python would otherwise wait for it to return.
    logging.shutdown()
    os._exit(RECYCLE_EXIT if recycled and command.child else 0)


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
        on_signals(worker.stop, lambda: worker.stop(force=True))
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


FORCE_EXIT_AFTER = 10.0


def _exit_now() -> None:
    logger.error("could not stop cleanly in %.0f s; exiting", FORCE_EXIT_AFTER)
    logging.shutdown()
    os._exit(1)


def on_signals(stop: Callable[[], None], force: Callable[[], None]) -> None:
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


if __name__ == "__main__":
    main()
