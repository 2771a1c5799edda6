"""`taskq dlq list|replay|purge QUEUE`: the dead letters of a queue.

URLs come from TASKQ_BROKER_URL and TASKQ_STORE_URL (the memory broker's dead letters live
only inside the process that runs it, so these commands are for RabbitMQ).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from taskq.app import App
from taskq.cli.common import fail, out, run
from taskq.client.as_json import dead_letter_json
from taskq.client.dlq import DeadLetter

app = typer.Typer(help="Inspect, replay and purge dead-lettered tasks.", no_args_is_help=True)

Queue = Annotated[str, typer.Argument(help="The taskq queue (its dead letters are in QUEUE.dlq).")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


@app.command("list")
def list_(
    queue: Queue,
    limit: Annotated[int, typer.Option(min=1)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show dead letters: task id, task, reason, error, time."""
    letters = run(_list(App(), queue, limit))
    if as_json:
        for letter in letters:
            sys.stdout.write(json.dumps(dead_letter_json(letter)) + "\n")
        return
    from rich.table import Table

    table = Table(title=f"{queue}.dlq: {len(letters)} shown")
    for column in ("task id", "task", "reason", "error", "dead at"):
        table.add_column(column)
    for letter in letters:
        error = f"{letter.error_type}: {letter.error_message}" if letter.error_type else ""
        when = letter.dead_at.isoformat(sep=" ", timespec="seconds") if letter.dead_at else ""
        table.add_row(letter.task_id or "?", letter.task or "?", letter.reason, error, when)
    out().print(table)


@app.command()
def replay(
    queue: Queue,
    ids: Annotated[list[str] | None, typer.Option("--id", help="A task id (repeatable).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    yes: Yes = False,
) -> None:
    """Send dead tasks back for new attempts."""
    if bool(ids) == all_:
        fail("give --id ID (one or more) or --all")
    if all_ and not yes:
        typer.confirm(f"Replay every dead letter of {queue}?", abort=True)
    count = run(_replay(App(), queue, ids))
    out().print(f"replayed {count} task(s) from {queue}.dlq")


@app.command()
def purge(queue: Queue, yes: Yes = False) -> None:
    """Delete every dead letter of QUEUE (task rows keep their record)."""
    if not yes:
        typer.confirm(f"Delete every dead letter of {queue}?", abort=True)
    count = run(_purge(App(), queue))
    out().print(f"purged {count} message(s) from {queue}.dlq")


async def _list(taskq_app: App, queue: str, limit: int) -> list[DeadLetter]:
    async with taskq_app:
        return await taskq_app.dlq(queue).list(limit)


async def _replay(taskq_app: App, queue: str, ids: list[str] | None) -> int:
    async with taskq_app:
        return await taskq_app.dlq(queue).replay(ids or None)


async def _purge(taskq_app: App, queue: str) -> int:
    async with taskq_app:
        return await taskq_app.dlq(queue).purge()
