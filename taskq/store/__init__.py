"""The task store: one engine, the schema check, and the repository behind error mapping.

PostgreSQL in production, SQLite for the embedded default. Nothing from SQLAlchemy or
the drivers escapes this package: errors become `StoreError` and its subclasses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.pool import NullPool

from taskq.exceptions import AppNotOpen, LockTimeout, SchemaOutOfDate, StoreError
from taskq.store import asyncpg_direct, lifecycle, locks, migrations, repository
from taskq.store import engine as engines
from taskq.store.async_core import Connection, Engine, create_async_engine
from taskq.store.asyncpg_direct import GroupedInserts, HeldConnection, PgBatches
from taskq.store.repository import Claimed, NewTask, Outcome, TaskRecord
from taskq.store.writer import Batches, SqlBatches, Writer

__all__ = [
    "Claimed",
    "NewTask",
    "Outcome",
    "Store",
    "TaskRecord",
    "Writer",
    "lifecycle",
    "repository",
]

T = TypeVar("T")

logger = logging.getLogger(__name__)


class Store:
    """Owns the engine. `open()` checks (SQLite: applies) migrations before any use."""

    def __init__(self, url: str) -> None:
        self._url = engines.parse_url(url)
        self._engine: Engine | None = None
        # SQLite has one writer at a time (and :memory: one shared connection): take turns
        # here rather than fail with "database is locked".
        self._turns = asyncio.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()
        self._local_locks: dict[str, asyncio.Lock] = {}
        self._leader_turn = asyncio.Lock()
        # PostgreSQL: submits' rows, grouped into one INSERT (`asyncpg_direct`).
        self._inserts: GroupedInserts | None = None

    def __repr__(self) -> str:
        return f"Store({engines.shown(self._url)!r})"

    @property
    def dialect(self) -> str:
        return self._url.get_backend_name()

    async def open(self) -> None:
        engine = engines.create_engine(self._url.render_as_string(hide_password=False))
        try:
            async with engines.translated_errors(self._url), engine.begin() as conn:
                if self.dialect == "sqlite":
                    # The embedded default needs no setup step: migrate on open.
                    await migrations.upgrade(conn)
                else:
                    await _check_schema(conn, engines.shown(self._url))
        except BaseException:
            await engine.dispose()
            raise
        self._engine = engine
        if self.dialect == "postgresql":
            self._inserts = GroupedInserts(self._held_connection())

    async def close(self) -> None:
        if self._inserts is not None:
            inserts, self._inserts = self._inserts, None
            await inserts.close()
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    async def run(self, operation: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `operation` in one transaction, with errors translated."""
        if self._engine is None:
            raise AppNotOpen("the store is not open: use `async with app:` first")
        async with self._turns:
            async with (
                engines.translated_errors(self._url),
                self._engine.begin() as conn,
            ):
                return await operation(conn)

    async def ping(self, within: float = 2.0) -> bool:
        """Whether the database answers within `within` seconds."""
        try:
            async with asyncio.timeout(within):
                await self.run(lambda conn: conn.execute(text("SELECT 1")))
        except (TimeoutError, StoreError):
            return False
        return True

    def writer(self, *, flush_interval: float) -> Writer:
        """The worker's write-behind: on PostgreSQL, one statement per flush (`asyncpg_direct`)."""
        if self._engine is None:
            raise AppNotOpen("the store is not open: use `async with app:` first")
        if self.dialect == "postgresql":
            batches: Batches = PgBatches(self._held_connection(), self.run)
        else:
            batches = SqlBatches(self.run)
        return Writer(batches, flush_interval=flush_interval)

    async def insert_task(self, task: NewTask) -> str:
        """→ the task's id, or the earlier task's if its idempotency key was taken."""
        if self._inserts is not None and task.idempotency_key is None:
            await self._inserts.insert(task)
            return task.id
        return await self.run(lambda conn: repository.insert_task(conn, task))

    async def insert_tasks(self, rows: Sequence[NewTask], *, due_now: bool) -> None:
        """Many rows (a batch: no idempotency keys) in one statement and one transaction;
        `due_now`: due by the database's clock (see `repository.insert_tasks`)."""
        if self._engine is not None and self.dialect == "postgresql":
            async with engines.translated_errors(self._url):
                await asyncpg_direct.insert_tasks(self._engine, rows, due_now=due_now)
            return
        await self.run(lambda conn: repository.insert_tasks(conn, rows, due_now=due_now))

    def _held_connection(self) -> HeldConnection:
        assert self._engine is not None
        return HeldConnection(self._engine.connect, lambda: engines.translated_errors(self._url))

    async def insert_task_if_missing(self, task: NewTask) -> None:
        await self.run(lambda conn: repository.insert_task_if_missing(conn, task))

    async def get_task(self, task_id: str) -> TaskRecord | None:
        if self._engine is not None and self.dialect == "postgresql":
            async with engines.translated_errors(self._url):
                return await asyncpg_direct.get_task(self._engine, task_id)
        return await self.run(lambda conn: repository.get_task(conn, task_id))

    @contextlib.asynccontextmanager
    async def notifications(self, channel: str) -> AsyncIterator[asyncio.Event]:
        """An event set on each PostgreSQL NOTIFY on `channel` (never set on SQLite), heard
        on a connection of its own. If it cannot listen, the event is simply never set:
        callers poll anyway and only use it to wake early."""
        wake = asyncio.Event()
        if self.dialect == "sqlite":
            yield wake
            return
        engine = create_async_engine(
            self._url.render_as_string(hide_password=False),
            poolclass=NullPool,
            connect_args={"timeout": 5, "server_settings": {"application_name": "taskq listener"}},
        )
        try:
            try:
                async with engines.translated_errors(self._url):
                    conn = await engine.connect()
                    raw = (await conn.get_raw_connection()).driver_connection
                    assert raw is not None
                    await raw.add_listener(channel, lambda *_: wake.set())
            except StoreError as exc:
                logger.warning("not listening for %s notifications: %s", channel, exc)
                conn = None
            try:
                yield wake
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
        finally:
            await engine.dispose()

    def session_lock(self, name: str, *, application_name: str) -> locks.LeaderLock:
        """A lock for leadership, held on a connection of its own (see `locks.SessionLock`)."""
        if self.dialect == "sqlite":
            return _InProcessSessionLock(self._leader_turn)
        return locks.SessionLock(
            self._url.render_as_string(hide_password=False),
            name,
            application_name=application_name,
        )

    @contextlib.asynccontextmanager
    async def lock(self, name: str, wait: float | None) -> AsyncIterator[None]:
        """Mutual exclusion on `name` across every process using this database."""
        if self._engine is None:
            raise AppNotOpen("the store is not open: use `async with app:` first")
        if self.dialect != "sqlite":
            async with locks.transaction_lock(self._engine, name, wait):
                yield
            return
        held = self._local_locks.setdefault(name, asyncio.Lock())
        try:
            if wait is not None and wait <= 0 and held.locked():
                raise TimeoutError
            async with asyncio.timeout(wait if wait and wait > 0 else None):
                await held.acquire()
        except TimeoutError:
            raise LockTimeout(f"lock {name!r} not acquired within {wait} s") from None
        try:
            yield
        finally:
            held.release()

    async def fail_unclaimed(
        self,
        task_id: str,
        error: dict[str, str],
        *,
        only_queued: bool = False,
        dead_reason: str | None = None,
    ) -> None:
        await self.run(
            lambda conn: repository.fail_unclaimed(
                conn, task_id, error, only_queued=only_queued, dead_reason=dead_reason
            )
        )


class _InProcessSessionLock:
    """Leadership on SQLite: one process, so one lock object decides among its schedulers."""

    def __init__(self, turn: asyncio.Lock) -> None:
        self._turn = turn
        self._held = False

    async def try_acquire(self) -> bool:
        if self._turn.locked():
            return False
        await self._turn.acquire()
        self._held = True
        return True

    async def check(self, within: float) -> None:
        return None

    async def release(self) -> None:
        if self._held:
            self._held = False
            self._turn.release()


async def _check_schema(conn: Connection, shown_url: str) -> None:
    current, head = await migrations.current(conn), migrations.head()
    if current != head:
        raise SchemaOutOfDate(
            f"the database at {shown_url} is at schema revision {current or 'none'}, "
            f"but this taskq needs {head}: run `taskq db upgrade` "
            "(with TASKQ_STORE_URL set to this database)"
        )
