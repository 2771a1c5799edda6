"""The workers table from a process's side: register, beat, and say goodbye."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta

import psutil

from taskq.exceptions import StoreError
from taskq.store import Store, coordination, lifecycle
from taskq.store.async_core import Connection

logger = logging.getLogger(__name__)

INTERVAL = 5.0


def rss_bytes() -> int:
    """This process's resident memory."""
    return int(psutil.Process().memory_info().rss)


def new_process_id() -> str:
    """`host:pid:random`: unique, and tells an operator where to look."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def registered(
    store: Store,
    process_id: str,
    *,
    role: str,
    queues: Sequence[str],
    concurrency: int,
    lease_duration: float = 60.0,
    running: Callable[[], int] = lambda: 0,
) -> AsyncIterator[None]:
    """A `running` row for the block (beating every INTERVAL s, which also renews the
    leases of this process's long tasks), then `stopped`."""
    await store.run(
        lambda conn: coordination.register_worker(
            conn,
            worker_id=process_id,
            role=role,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=queues,
            concurrency=concurrency,
        )
    )
    beating = asyncio.create_task(
        _beat(store, process_id, lease_duration, running), name="taskq-heartbeat"
    )
    try:
        yield
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
        try:
            await store.run(lambda conn: coordination.stop_worker(conn, process_id))
        except StoreError as exc:
            logger.warning("could not mark %s stopped: %s", process_id, exc)


async def _beat(
    store: Store, process_id: str, lease_duration: float, running: Callable[[], int]
) -> None:
    async def beat(conn: Connection) -> None:
        await coordination.heartbeat(conn, process_id, running=running(), memory=rss_bytes())
        until = datetime.now(UTC) + timedelta(seconds=lease_duration)
        await lifecycle.extend_leases(conn, process_id, until)

    while True:
        await asyncio.sleep(INTERVAL)
        try:
            await store.run(beat)
        except StoreError as exc:
            logger.warning("heartbeat of %s failed: %s", process_id, exc)
