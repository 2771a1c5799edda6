"""Rows that coordinate processes: the workers table (who runs, who leads, who is dead)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from importlib import metadata

from sqlalchemy import select, update

from taskq.store import records
from taskq.store.async_core import Connection
from taskq.store.records import now
from taskq.store.tables import workers

_w = workers.c


def _taskq_version() -> str | None:
    try:
        return metadata.version("taskq")
    except metadata.PackageNotFoundError:  # (run from a checkout that was never installed)
        return None


# What each process writes in its row, so a fleet in the middle of an upgrade shows as one.
TASKQ_VERSION = _taskq_version()


async def register_worker(
    conn: Connection,
    *,
    worker_id: str,
    role: str,
    host: str,
    pid: int,
    queues: Sequence[str],
    concurrency: int,
    tags: Sequence[str] = (),
) -> None:
    moment = now()
    await conn.execute(
        workers.insert().values(
            id=worker_id,
            role=role,
            host=host,
            pid=pid,
            queues=list(queues),
            concurrency=concurrency,
            tags=sorted(tags) or None,  # (NULL: started with none, or before tags existed)
            version=TASKQ_VERSION,
            state="running",
            leader=False,
            started_at=moment,
            heartbeat_at=moment,
        )
    )


async def heartbeat(conn: Connection, worker_id: str, *, running: int = 0, memory: int = 0) -> None:
    """Refresh the row; a row already marked dead comes back to life (it was only slow)."""
    await conn.execute(
        update(workers)
        .where(_w.id == worker_id, _w.state != "stopped")
        .values(heartbeat_at=now(), state="running", running=running, memory=memory)
    )


async def stop_worker(conn: Connection, worker_id: str) -> None:
    await conn.execute(
        update(workers)
        .where(_w.id == worker_id)
        .values(state="stopped", leader=False, stopped_at=now())
    )


async def set_leader(conn: Connection, worker_id: str, leading: bool) -> None:
    """Mark who leads; a new leader also clears the mark of whoever led before."""
    if leading:
        await conn.execute(update(workers).where(_w.id != worker_id).values(leader=False))
    await conn.execute(update(workers).where(_w.id == worker_id).values(leader=leading))


async def mark_dead(conn: Connection, silent_for: timedelta) -> list[str]:
    """Workers whose heartbeat stopped are `dead`; → their ids."""
    statement = (
        update(workers)
        .where(_w.state == "running", _w.heartbeat_at < now() - silent_for)
        .values(state="dead", leader=False)
        .returning(_w.id)
    )
    return [row.id for row in await conn.execute(statement)]


async def mark_process_dead(conn: Connection, worker_id: str) -> list[str]:
    """A supervisor saw its child die: its row is dead at once, not after 30 s; → [its id]
    if it was running. By id: two hosts may share a host name and pids (containers)."""
    statement = (
        update(workers)
        .where(_w.id == worker_id, _w.state == "running")
        .values(state="dead", leader=False)
        .returning(_w.id)
    )
    return [row.id for row in await conn.execute(statement)]


async def list_workers(conn: Connection, *, include_stopped: bool) -> list[records.WorkerRecord]:
    """Host by host (a fleet reads as its machines), each host's in the order they started."""
    query = select(workers).order_by(_w.host, _w.started_at)
    if not include_stopped:
        query = query.where(_w.state != "stopped")
    return [records.worker_of(row) for row in (await conn.execute(query)).mappings()]
