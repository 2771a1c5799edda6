"""`taskq demo`: the whole path on the embedded default, in about ten seconds.

An in-process broker and a SQLite file; a worker in this process; a batch of tasks with
mixed priorities, a few slow ones and one that fails, shown live as their states change.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from taskq.app import App
from taskq.cli.common import out, run
from taskq.cli.inspect import STATE_STYLE
from taskq.client.handle import TaskHandle
from taskq.status import TaskStatus
from taskq.store import TaskRecord

if TYPE_CHECKING:
    from rich.table import Table


def build_app(store_url: str) -> App:
    app = App(broker_url="memory://", store_url=store_url)

    @app.task(name="demo.send_email")
    async def send_email(to: str) -> str:
        await asyncio.sleep(random.uniform(0.3, 0.8))
        return f"sent to {to}"

    @app.task(name="demo.resize_image", priority=5)
    def resize_image(path: str, width: int) -> dict[str, Any]:
        time.sleep(random.uniform(0.8, 1.2))  # plain def: runs in the worker's thread pool
        return {"path": path, "width": width}

    @app.task(name="demo.generate_report")
    async def generate_report(month: str) -> str:
        await asyncio.sleep(2.5)
        return f"report-{month}.pdf"

    @app.task(name="demo.charge_card", priority=9)
    async def charge_card(amount_cents: int) -> None:
        await asyncio.sleep(0.2)
        raise ValueError(f"card declined for {amount_cents} cents")

    return app


def demo(
    store: Annotated[Path, typer.Option(help="SQLite file that keeps the demo's tasks.")] = Path(
        "taskq-demo.sqlite3"
    ),
    concurrency: Annotated[int, typer.Option(min=1)] = 3,
) -> None:
    """Run a worker and a batch of example tasks on the embedded default."""
    store_url = f"sqlite+aiosqlite:///{store}"
    logging.getLogger("taskq").setLevel(logging.ERROR)  # the table tells the story
    app = build_app(store_url)
    records = run(_demo(app, concurrency))
    _summary(records, store_url)


async def _demo(app: App, concurrency: int) -> list[TaskRecord]:
    async with app:
        tasks = app.tasks
        handles: list[TaskHandle[Any]] = []
        # Submitted before the worker starts, so priorities decide the order.
        for n in range(6):
            handles.append(await tasks["demo.send_email"].submit(f"user{n}@example.com"))
        for month in ("2026-09", "2026-10"):
            handles.append(await tasks["demo.generate_report"].submit(month))
        for n in range(3):
            handles.append(await tasks["demo.resize_image"].submit(f"img/{n}.png", width=640))
        handles.append(await tasks["demo.charge_card"].submit(4200))
        urgent = tasks["demo.send_email"].options(priority=9)
        handles.append(await urgent.submit("ceo@example.com"))
        async with app.worker(concurrency=concurrency):
            return await _watch(app, handles)


async def _watch(app: App, handles: list[TaskHandle[Any]]) -> list[TaskRecord]:
    """Show every state change until all tasks are final (a TTY gets a live table)."""
    seen: dict[str, TaskStatus] = {}
    started = time.monotonic()
    from rich.live import Live

    console = out()
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            records = [await h.info() for h in handles]
            for record in records:
                if not console.is_terminal and seen.get(record.id) != record.state:
                    console.print(
                        f"{time.monotonic() - started:5.1f}s  {record.name:<22} "
                        f"{record.id[:8]}  → {_styled(record.state)}"
                    )
                seen[record.id] = record.state
            if console.is_terminal:
                live.update(_table(records), refresh=True)
            if all(r.state.is_final for r in records):
                return records
            await asyncio.sleep(0.1)


def _styled(state: TaskStatus) -> str:
    style = STATE_STYLE[state]
    return f"[{style}]{state}[/{style}]"


def _table(records: list[TaskRecord]) -> Table:
    from rich.table import Table

    table = Table(title="taskq demo: memory:// broker, SQLite store")
    for column in ("task", "id", "priority", "state", "took"):
        table.add_column(column)
    for r in records:
        took = ""
        if r.started_at and r.finished_at:
            took = f"{(r.finished_at - r.started_at).total_seconds():.2f} s"
        table.add_row(r.name, r.id[:8], str(r.priority), _styled(r.state), took)
    return table


def _summary(records: list[TaskRecord], store_url: str) -> None:
    counts = Counter(r.state for r in records)
    out().print(
        "\n[bold]summary:[/bold] "
        + ", ".join(f"{n} {_styled(state)}" for state, n in sorted(counts.items()))
    )
    # Tasks claimed in one batch share started_at; within it, they started by priority.
    order = sorted((r for r in records if r.started_at), key=lambda r: (r.started_at, -r.priority))
    out().print(
        "start order: " + " → ".join(f"{r.name.split('.')[1]}(p{r.priority})" for r in order)
    )
    for r in records:
        if r.error:
            out().print(f"[red]{r.name} {r.id}: {r.error.type}: {r.error.message}[/red]")
    example = next((r for r in records if r.error), records[0])
    command = f"{_taskq_command()} status {example.id[:8]} --store-url {store_url}"
    out().print(f"\ninspect any task with:  {command}", highlight=False)


def _taskq_command() -> str:
    """How to run `taskq` from here, as this process was run: `taskq` if that is on PATH,
    else the script's path (`.venv/bin/taskq` after `bash .ci/demo`), else `python -m taskq`."""
    script = Path(sys.argv[0])
    on_path = shutil.which("taskq")
    if on_path is not None and script.name == "taskq" and Path(on_path).samefile(script):
        return "taskq"
    if script.name == "taskq" and script.exists():
        return _short(script)
    return f"{_short(Path(sys.executable))} -m taskq"


def _short(path: Path) -> str:
    """`path` relative to here if it is below here, else as it is."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative
