"""The supervisor's /metrics: children's snapshots merged, counts of children gone kept.

No child processes here: each "child" is a Unix socket server of the test's own answering
with a snapshot when the test lets it, so the order of a scrape and a child's exit is the
test's to choose. (This drives the supervisor's private `_scrape` and `_retire`, the two
halves that meet when a child exits.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from taskq.store import Store
from taskq.telemetry import prometheus
from taskq.worker.supervisor import Supervisor
from tests.prometheus_text import parse

PID = 4_000_001  # no process has it: only a name for the child's socket


def counted(value: int) -> prometheus.Snapshot:
    """A child's snapshot: `value` tasks submitted."""
    return {
        "taskq.tasks.submitted": {
            "kind": "counter",
            "unit": "{task}",
            "description": "Tasks submitted.",
            "points": [{"labels": {"taskq.task.name": "job"}, "value": value}],
        }
    }


@pytest.fixture
def snapshot_dir() -> Iterator[Path]:
    # Short: a Unix socket's path must fit in about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="tq-") as directory:
        yield Path(directory)


def supervisor_of(snapshot_dir: Path) -> Supervisor:
    unused = functools.partial(Store, "sqlite+aiosqlite:///unused")
    supervisor = Supervisor(["true"], 1, unused, metrics=("127.0.0.1", 0))
    supervisor._snapshot_dir = snapshot_dir
    return supervisor


async def scraped_total(supervisor: Supervisor) -> float | None:
    status, _, body = await supervisor._scrape()
    assert status == "200 OK"
    return parse(body.decode()).value("taskq_tasks_submitted_total", taskq_task_name="job")


@contextlib.asynccontextmanager
async def child_socket(
    path: Path, snapshot: prometheus.Snapshot, release: asyncio.Event, asked: asyncio.Event
) -> AsyncIterator[None]:
    """A child's snapshot socket: it sets `asked` on a connection, answers once `release`."""

    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.set()
        await release.wait()
        writer.write(json.dumps(snapshot).encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(answer, path=str(path))
    try:
        yield
    finally:
        server.close()


async def test_live_child_counts_then_its_final_snapshot_are_shown_once(
    snapshot_dir: Path,
) -> None:
    # Given a supervisor with one child that has counted 5 submits
    supervisor = supervisor_of(snapshot_dir)
    supervisor._children[0] = SimpleNamespace(pid=PID)  # type: ignore[assignment]
    release, asked = asyncio.Event(), asyncio.Event()
    release.set()
    async with child_socket(snapshot_dir / f"{PID}.sock", counted(5), release, asked):
        # Then a scrape shows 5
        assert await scraped_total(supervisor) == 5

    # When the child exits after 7, leaving its final snapshot, and is retired
    (snapshot_dir / f"{PID}.json").write_text(json.dumps(counted(7)))
    del supervisor._children[0]
    supervisor._retire(PID)

    # Then the next scrape keeps its final count, once
    assert await scraped_total(supervisor) == 7


async def test_child_retired_during_a_scrape_is_not_counted_twice(snapshot_dir: Path) -> None:
    # Given a supervisor with one child that has counted 5 submits
    supervisor = supervisor_of(snapshot_dir)
    supervisor._children[0] = SimpleNamespace(pid=PID)  # type: ignore[assignment]
    release, asked = asyncio.Event(), asyncio.Event()
    async with child_socket(snapshot_dir / f"{PID}.sock", counted(5), release, asked):
        # When a scrape has asked the child for its snapshot
        scrape: asyncio.Task[Any] = asyncio.create_task(scraped_total(supervisor))
        await asyncio.wait_for(asked.wait(), timeout=5)

        # And the child exits (final snapshot: 5) and is retired before its answer arrives
        (snapshot_dir / f"{PID}.json").write_text(json.dumps(counted(5)))
        del supervisor._children[0]
        supervisor._retire(PID)
        release.set()
        during = await asyncio.wait_for(scrape, timeout=5)

    # Then that scrape, and every later one, counts the child's 5 once
    later = await scraped_total(supervisor)
    assert (during, later) == (5, 5)
