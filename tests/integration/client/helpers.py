"""What the client tests share: reading results, events and rows, and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, TypeVar

from typer.testing import CliRunner, Result

import taskq
from taskq import protocol
from taskq.cli import app as cli
from taskq.client.rows import new_task_row
from tests.support import eventually

DEADLINE = 10.0
# How long a tail waits for an event it must see.
TAIL_DEADLINE = 5.0
Status = taskq.TaskStatus
T = TypeVar("T")


async def stored_progress(handle: taskq.TaskHandle[Any], n: int) -> taskq.TaskRecord:
    """The task's row once its stored progress is report number `n` (written behind)."""
    return await eventually(
        handle.info, lambda row: (row.progress or {}).get("n") == n, what=f"progress n={n} stored"
    )


async def collect(events: AsyncIterator[taskq.TaskEvent]) -> list[taskq.TaskEvent]:
    """Every event up to the end of the iterator (a task's final state), with a deadline."""
    async with asyncio.timeout(DEADLINE):
        return [event async for event in events]


def shape(events: list[taskq.TaskEvent]) -> list[tuple[Any, ...]]:
    return [(e.kind, e.state, e.progress, e.message, dict(e.data), e.seq) for e in events]


async def final_state(handle: taskq.TaskHandle[Any]) -> taskq.TaskStatus:
    with contextlib.suppress(taskq.TaskFailed, taskq.TaskCancelled, taskq.TaskExpired):
        await handle.result(timeout=DEADLINE)
    return await handle.status()


async def queued_messages(app: taskq.App, queue: str = "default") -> list[str]:
    """Ids of the messages waiting in `queue` (browsed, left in place)."""
    await app.declare(queue)
    async with app.broker.browse(queue, limit=100) as found:
        return [message.message_id for message in found]


async def insert_old_task(app: taskq.App, name: str, *, age: timedelta) -> str:
    """A `queued` row created `age` ago (a task of yesterday, for the `since` filters)."""
    envelope = protocol.Envelope(
        id=str(uuid.uuid4()),
        task=name,
        queue="default",
        args=[],
        kwargs={},
        created_at=time.time() - age.total_seconds(),
    )
    await app.store.insert_task(new_task_row(envelope))
    return envelope.id


async def taskq_cli(*args: str) -> Result:
    # In a thread: the command runs its own event loop.
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env={"COLUMNS": "200"})


def table_rows(output: str) -> dict[str, list[str]]:
    """A rich table's rows by their first cell (a task id)."""
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in output.splitlines()]
    return {row[0]: row[1:] for row in cells if row and is_uuid(row[0])}


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
