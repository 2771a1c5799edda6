"""The `taskq` command: typer root, one module per group of commands."""

from __future__ import annotations

from importlib import metadata
from typing import Annotated

import typer

from taskq.cli import (
    common,
    dashboard,
    db,
    demo,
    dlq,
    inspect,
    limits,
    prune,
    schedules,
    submit,
    tasks,
    worker,
    workflow,
)

app = typer.Typer(
    name="taskq",
    help="asyncio-native distributed tasks on RabbitMQ and PostgreSQL.",
    no_args_is_help=True,
    # Locals may hold URLs with passwords: never print them in tracebacks.
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"taskq {metadata.version('taskq')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show an error's traceback, not one line.")
    ] = False,
) -> None:
    """asyncio-native distributed tasks on RabbitMQ and PostgreSQL."""
    common.debug = debug


app.command()(worker.worker)
app.command()(worker.scheduler)
app.command()(submit.submit)
app.command()(submit.cancel)
app.command()(inspect.status)
app.command()(inspect.workers)
app.command()(tasks.tasks)
app.command()(workflow.workflow)
app.command()(tasks.events)
app.command()(tasks.queues)
app.command()(schedules.schedules)
app.command()(prune.prune)
app.command()(limits.limits)
app.command()(demo.demo)
app.command()(dashboard.dashboard)
app.add_typer(db.app, name="db")
app.add_typer(dlq.app, name="dlq")


def main() -> None:
    app()
