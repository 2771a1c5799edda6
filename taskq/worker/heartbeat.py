"""The workers table from a process's side: register, beat, and say goodbye."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta

import psutil

from taskq.exceptions import StoreError
from taskq.store import Store

logger = logging.getLogger(__name__)

INTERVAL = 5.0
# Set by a supervisor (`--processes`) for each child it starts: the random part of the
# child's id, so the supervisor knows the id and marks that row dead when the child dies.
TOKEN_ENV = "TASKQ_PROCESS_TOKEN"


def rss_bytes() -> int:
    """This process's resident memory."""
    return int(psutil.Process().memory_info().rss)


def new_process_id() -> str:
    """`host:pid:random`: unique, and tells an operator where to look. At most 63
    characters: it is also the application name of the worker's store session. The random
    part is the supervisor's token if it gave one (used once: a second id in the same
    process is random again)."""
    return process_id(os.getpid(), os.environ.pop(TOKEN_ENV, "") or new_token())


def process_id(pid: int, token: str) -> str:
    """The id of process `pid` on this host, whose random part is `token`."""
    return f"{socket.gethostname()[:40]}:{pid}:{token}"


def new_token() -> str:
    return uuid.uuid4().hex[:8]


@contextlib.asynccontextmanager
async def registered(
    store: Store,
    process_id: str,
    *,
    role: str,
    queues: Sequence[str],
    tags: Iterable[str] = (),
    concurrency: int,
    lease_duration: float = 60.0,
    running: Callable[[], Sequence[str]] = lambda: (),
) -> AsyncIterator[None]:
    """A `running` row for the block (beating every INTERVAL s, which also renews the
    leases of the tasks `running()` names), then `stopped`."""
    await store.register_worker(
        process_id, role=role, queues=queues, concurrency=concurrency, tags=sorted(tags)
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
            await store.stop_worker(process_id)
        except StoreError as exc:
            logger.warning("could not mark %s stopped: %s", process_id, exc)


async def _beat(
    store: Store, process_id: str, lease_duration: float, running: Callable[[], Sequence[str]]
) -> None:
    while True:
        await asyncio.sleep(INTERVAL)
        try:
            until = datetime.now(UTC) + timedelta(seconds=lease_duration)
            await store.heartbeat(
                process_id, running=running(), memory=rss_bytes(), leases_until=until
            )
        except StoreError as exc:
            logger.warning("heartbeat of %s failed: %s", process_id, exc)
