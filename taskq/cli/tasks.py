"""Fleet views: `taskq tasks` (find tasks), `taskq events` (tail them), `taskq queues`."""

from __future__ import annotations

import json
import sys
import uuid
from datetime import datetime
from typing import Annotated, Any

import typer

from taskq import config
from taskq.broker import Broker
from taskq.cli.common import (
    BrokerUrl,
    StoreUrl,
    broker_from,
    escape,
    fail,
    out,
    run,
    settings_from,
    store_from,
)
from taskq.cli.inspect import STATE_STYLE, describe_progress
from taskq.client.as_json import event_json, task_json
from taskq.client.events import TaskEvent, tail_events
from taskq.client.queues import known_queues, queue_rows
from taskq.config import Settings
from taskq.exceptions import ConfigurationError
from taskq.status import TaskStatus
from taskq.store import Store, TaskRecord


def tasks(
    state: Annotated[
        list[TaskStatus] | None,
        typer.Option("--state", help="Only tasks in this state (repeat for several)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Only tasks of this registered name.")] = None,
    queue: Annotated[str | None, typer.Option(help="Only tasks of this queue.")] = None,
    batch: Annotated[str | None, typer.Option(help="Only tasks of this submit_many batch.")] = None,
    workflow: Annotated[
        str | None, typer.Option(help="Only the steps of this workflow, in step order.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only tasks created since: a duration back (30s, 10m, 2h, 7d) or ISO time."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    store_url: StoreUrl = None,
) -> None:
    """List tasks, newest first (a workflow's in step order), filtered by every option given."""
    query: dict[str, Any] = {
        "states": state or [],
        "name": name,
        "queue": queue,
        "batch_id": _uuid(batch, "--batch", "batch") if batch else None,
        "workflow_id": _uuid(workflow, "--workflow", "workflow") if workflow else None,
        "since": parse_since(since) if since else None,
        "limit": limit,
    }
    records = run(_find(store_from(store_url), query))
    if as_json:
        for record in records:
            sys.stdout.write(json.dumps(task_json(record)) + "\n")
        return
    from rich.table import Table

    table = Table()
    table.add_column("id", no_wrap=True)
    if workflow:
        table.add_column("step", justify="right")
    for column in ("name", "queue", "state", "attempts", "created", "took"):
        table.add_column(column)
    for record in records:
        style = STATE_STYLE[record.state]
        state_text = f"[{style}]{record.state}[/{style}]"
        if record.state is TaskStatus.RUNNING and record.progress:
            state_text += f" {escape(describe_progress(record.progress))}"
        took = ""
        if record.started_at and record.finished_at:
            took = f"{(record.finished_at - record.started_at).total_seconds():.3f} s"
        table.add_row(
            record.id,
            *([str(record.step)] if workflow else []),
            escape(record.name),
            record.queue,
            state_text,
            str(record.attempts),
            record.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            took,
        )
    out().print(table)
    if len(records) == limit:
        which = f"first {limit} steps" if workflow else f"newest {limit}"
        out().print(f"[dim](the {which}; --limit shows more)[/dim]")


def events(
    queue: Annotated[str | None, typer.Option(help="Only this queue's tasks.")] = None,
    task: Annotated[str | None, typer.Option("--task", help="Only tasks of this name.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    broker_url: BrokerUrl = None,
) -> None:
    """Tail every task's state changes and progress live, across the cluster (Ctrl-C stops)."""
    settings = settings_from(broker_url=broker_url)
    try:
        run(_tail(broker_from(settings), queue, task, as_json))
    except KeyboardInterrupt:
        pass


async def _tail(broker: Broker, queue: str | None, task: str | None, as_json: bool) -> None:
    await broker.connect()
    try:
        async for event in tail_events(broker, queue=queue, task=task):
            if as_json:
                sys.stdout.write(json.dumps(event_json(event)) + "\n")
                sys.stdout.flush()
            else:
                out().print(_event_line(event))
    finally:
        await broker.close()


def _event_line(event: TaskEvent) -> str:
    when = event.at.astimezone().strftime("%H:%M:%S.%f")[:-3]
    style = STATE_STYLE[event.state]
    what = f"[{style}]{event.state}[/{style}]"
    if event.kind == "progress":
        fraction = event.progress or 0.0
        what = f"progress {fraction:.0%}" + (f" {escape(event.message)}" if event.message else "")
    return f"{when} {event.task_id} {escape(event.name)} ({event.queue}) {what}"


def parse_since(text: str) -> datetime:
    """`--since`: a duration back from now, or an ISO 8601 time; one red line if neither."""
    try:
        return config.parse_since(text, "--since")
    except ConfigurationError as exc:
        fail(str(exc))


def _uuid(text: str, option: str, what: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        fail(f"{option} {text!r} is not a {what} id (they are UUIDs)")


async def _find(store: Store, query: dict[str, Any]) -> list[TaskRecord]:
    await store.open()
    try:
        return await store.find_tasks(**query)
    finally:
        await store.close()


def queues(
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue",
            help="A queue to show (repeat; default: every worker's, and every queue tasks "
            "wait in, tagged ones as QUEUE@TAG+TAG).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    broker_url: BrokerUrl = None,
    store_url: StoreUrl = None,
) -> None:
    """Per queue: messages ready, unacked, consumers, dead letters; tasks running, scheduled;
    and which tags a worker needs for the tasks that wait in a tagged queue nobody consumes."""
    settings = settings_from(broker_url=broker_url, store_url=store_url)
    rows = run(_queues(settings, queue))
    if not rows:
        fail("no queues known yet (no worker has registered): name them with --queue")
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    from rich.table import Table

    table = Table()
    for column in ("queue", "ready", "unacked", "consumers", "dlq", "running", "scheduled"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    table.add_column("")
    for row in rows:
        waiting = row["waiting_for_tags"]
        table.add_row(
            row["queue"],
            *(
                "?" if row[key] is None else str(row[key])
                for key in ("ready", "unacked", "consumers", "dlq", "running", "scheduled")
            ),
            f"[yellow]waiting for a worker tagged {','.join(waiting)}[/yellow]" if waiting else "",
        )
    out().print(table)


async def _queues(settings: Settings, named: list[str] | None) -> list[dict[str, Any]]:
    store = Store(settings.store_url, settings.namespace)
    broker = broker_from(settings)
    await store.open()
    try:
        names = list(named or []) or await known_queues(store)
        await broker.connect()
        try:
            return await queue_rows(store, broker, names)
        finally:
            await broker.close()
    finally:
        await store.close()
