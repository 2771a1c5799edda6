"""Commands that read the store: `taskq status`, `taskq workers`."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from taskq.cli.common import StoreUrl, escape, fail, full_task_id, out, run, store_from
from taskq.client.as_json import json_value, worker_json
from taskq.status import TaskStatus
from taskq.store import Store, TaskRecord, WorkerRecord

if TYPE_CHECKING:
    from rich.table import Table

STATE_STYLE = {
    TaskStatus.SCHEDULED: "cyan",
    TaskStatus.QUEUED: "blue",
    TaskStatus.RUNNING: "yellow",
    TaskStatus.SUCCEEDED: "green",
    TaskStatus.FAILED: "red",
    TaskStatus.CANCELLED: "magenta",
    TaskStatus.EXPIRED: "magenta",
}


def status(
    task_id: Annotated[
        str, typer.Argument(help="The task's id, or its first characters (unique).")
    ],
    store_url: StoreUrl = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="The row and its attempt_log as one JSON object.")
    ] = False,
) -> None:
    """Show one task: state, timings, attempts, and its result or error."""
    record, attempts = run(_read(store_from(store_url), task_id))
    if record is None:
        fail(f"no task with id {task_id} in this store (is --store-url / TASKQ_STORE_URL right?)")
    if as_json:
        shown = {**dataclasses.asdict(record), "attempt_log": attempts}
        sys.stdout.write(json.dumps(shown, default=json_value) + "\n")
        return
    out().print(describe(record))
    if len(attempts) > 1 or any(a["error"] for a in attempts):
        out().print(_attempts_table(attempts))
    if record.error:
        if record.error.traceback:
            out().print("\n[bold]traceback[/bold] (from the worker)")
            out().print(record.error.traceback.rstrip(), markup=False, soft_wrap=True)


async def _read(store: Store, task_id: str) -> tuple[TaskRecord | None, list[dict[str, Any]]]:
    await store.open()
    try:
        task_id = await full_task_id(store, task_id)
        record = await store.get_task(task_id)
        attempts = await store.list_attempts(task_id)
        return record, attempts
    finally:
        await store.close()


def _attempts_table(attempts: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(title="attempts")
    for column in ("#", "state", "started", "ran", "worker", "error"):
        table.add_column(column)
    for attempt in attempts:
        started, finished = attempt["started_at"], attempt["finished_at"]
        ran = f"{(finished - started).total_seconds():.3f} s" if started and finished else ""
        error = attempt["error"] or {}
        table.add_row(
            str(attempt["attempt"]),
            attempt["state"],
            _when(started) if started else "",
            ran,
            attempt["worker_id"] or "",
            f"{error.get('type')}: {error.get('message')}" if error else "",
        )
    return table


def waiting_for(record: TaskRecord) -> str | None:
    """What a limit holds it back for, if one does: "rate limit app.call account=42 (its
    turn at 12:00:01)" or "a free slot of app.sync customer=7 (concurrency limit)"."""
    if record.state is not TaskStatus.SCHEDULED or not record.limits or not record.held_by:
        return None
    if record.held_by == "rate" and "rate" in record.limits:
        turn = f" (its turn at {_when(record.run_at)})" if record.run_at else ""
        return f"rate limit {record.limits['rate'][0]}{turn}"
    if record.held_by == "slots" and "slots" in record.limits:
        key, most = record.limits["slots"]
        return f"a free slot of {key} (concurrency limit {most})"
    return None


def describe(record: TaskRecord) -> Table:
    from rich.markup import escape
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    style = STATE_STYLE[record.state]
    grid.add_row("task", record.id)
    grid.add_row("name", record.name)
    grid.add_row("queue", f"{record.queue} (priority {record.priority})")
    grid.add_row("state", f"[{style}]{record.state}[/{style}]")
    if (waiting := waiting_for(record)) is not None:
        grid.add_row("waiting", escape(waiting))
    grid.add_row("attempts", f"{record.attempts} (retries {record.retries}/{record.max_retries})")
    if record.batch_id:
        grid.add_row("batch", record.batch_id)
    if record.headers:
        shown = ", ".join(f"{key}={value}" for key, value in sorted(record.headers.items()))
        grid.add_row("headers", escape(shown))
    if record.progress and record.state is TaskStatus.RUNNING:
        grid.add_row("progress", describe_progress(record.progress))
    if record.dead_reason:
        grid.add_row("dead letter", f"[red]{record.dead_reason}[/red] (in {record.queue}.dlq)")
    if record.worker_id:
        grid.add_row("worker", record.worker_id)
    grid.add_row("created", _when(record.created_at))
    if record.started_at:
        waited = (record.started_at - record.created_at).total_seconds()
        grid.add_row("started", f"{_when(record.started_at)} (waited {waited:.3f} s)")
    if record.finished_at and record.started_at:
        ran = (record.finished_at - record.started_at).total_seconds()
        grid.add_row("finished", f"{_when(record.finished_at)} (ran {ran:.3f} s)")
    if record.state is TaskStatus.SUCCEEDED:
        grid.add_row("result", repr(record.result))
    if record.error:
        grid.add_row("error", f"[red]{record.error.type}: {record.error.message}[/red]")
    return grid


def describe_progress(progress: dict[str, Any]) -> str:
    shown = f"{progress.get('fraction', 0.0):.0%}"
    if progress.get("message"):
        shown += f" {progress['message']}"
    return shown


def _when(moment: datetime) -> str:
    return moment.astimezone().isoformat(sep=" ", timespec="milliseconds")


def workers(
    store_url: StoreUrl = None,
    all_: Annotated[bool, typer.Option("--all", help="Include stopped processes.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List worker and scheduler processes; the leader is marked."""
    rows = run(_workers(store_from(store_url), all_))
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(worker_json(row)) + "\n")
        return
    from rich.table import Table

    table = Table()
    table.add_column("id", overflow="fold")
    # (rows come host by host: the host and pid say where each process is to be found)
    table.add_column("host", overflow="fold")
    table.add_column("pid", justify="right")
    for column in ("role", "state", "leader", "queues", "tags", "running", "memory", "heartbeat"):
        table.add_column(column)
    moment = datetime.now(UTC)
    for row in rows:
        ago = (moment - row.heartbeat_at).total_seconds()
        style = {"running": "green", "dead": "red"}.get(row.state, "dim")
        table.add_row(
            escape(row.id),
            escape(row.host),
            str(row.pid),
            row.role,
            f"[{style}]{row.state}[/{style}]",
            "[bold yellow]leader[/bold yellow]" if row.leader else "",
            ",".join(row.queues),
            ",".join(row.tags),
            f"{row.running}/{row.concurrency}",
            f"{row.memory / 2**20:.0f} MiB",
            f"{ago:.0f} s ago",
        )
    out().print(table)


async def _workers(store: Store, include_stopped: bool) -> list[WorkerRecord]:
    await store.open()
    try:
        return await store.list_workers(include_stopped=include_stopped)
    finally:
        await store.close()
