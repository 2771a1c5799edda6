"""Statements on one connection held by their sender, one at a time, each its own
transaction: the writer's flushes (`PgBatches`), and requests grouped while one is in
flight (`GroupedInserts`, `GroupedReads`), so that a busy client sends one statement for
many submits or reads instead of checking out a pooled connection for each."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from taskq.exceptions import StoreConnectionError, StoreError
from taskq.store import pg, records
from taskq.store.async_core import Connection
from taskq.store.records import ClaimRequest, NewTask, Outcome, ProgressReport, TaskRecord, Written

T = TypeVar("T")
Item = TypeVar("Item")
Answer = TypeVar("Answer")

# A held connection's session: its name (the worker id, for `pg_stat_activity`), and
# generic plans. Its statements are prepared once and differ only in their arrays, whose
# plan (rows by primary key) never depends on their values; with the default plan cache,
# PostgreSQL planned each flush anew every time, which cost more than running it (0.73
# against 0.39 ms for a claim of one task, measured on our 2-core machines).
_SESSION_SETUP = (
    "SELECT set_config('plan_cache_mode', 'force_generic_plan', false), "
    "set_config('application_name', coalesce($1::text, current_setting('application_name')), "
    "false)"
)


class HeldConnection:
    """One pooled connection kept for statements sent one at a time, each its own
    transaction; errors come out as taskq's. It is discarded, not returned to the pool,
    when closed (its session is set up for it: `_SESSION_SETUP`)."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Connection]],
        translated: Callable[[], contextlib.AbstractAsyncContextManager[None]],
        *,
        application_name: str | None = None,
    ) -> None:
        self._connect = connect
        self._translated = translated
        self._application_name = application_name
        self._conn: Connection | None = None
        self._raw: Any = None  # its asyncpg connection, asked for once

    async def fetch(self, statement: str, *arguments: Any) -> list[Any]:
        async with self._translated():
            try:
                raw = await self._opened()
                rows: list[Any] = await raw.fetch(statement, *arguments)
            except BaseException:
                await self.close()  # it may be broken: the next statement takes a fresh one
                raise
        return rows

    async def in_transaction(self, operation: Callable[[Any], Awaitable[T]]) -> T:
        """`operation(its asyncpg connection)` inside one transaction (several statements
        that must commit together); errors come out as taskq's."""
        async with self._translated():
            try:
                raw = await self._opened()
                async with raw.transaction():
                    return await operation(raw)
            except BaseException:
                await self.close()
                raise

    async def _opened(self) -> Any:
        if self._conn is None:
            self._conn = await self._connect()
            self._raw = (await self._conn.get_raw_connection()).driver_connection
            assert self._raw is not None
            await self._raw.execute(_SESSION_SETUP, self._application_name)
        return self._raw

    async def close(self) -> None:
        conn, self._conn, self._raw = self._conn, None, None
        if conn is not None:
            try:
                await conn.invalidate()
            finally:
                await conn.close()


class PgBatches:
    """The writer's flushes, one at a time, on a connection of their own (progress, rare
    and best effort, goes through SQLAlchemy: `write_progress`)."""

    def __init__(
        self,
        connection: HeldConnection,
        flush: Callable[[Sequence[ClaimRequest], Sequence[Outcome]], Awaitable[Written]],
        write_progress: Callable[[Sequence[ProgressReport]], Awaitable[None]],
    ) -> None:
        self._connection = connection
        self._flush = flush  # (`pg.flush` on `connection`, and workflow releases)
        self._write_progress = write_progress

    async def write_progress(self, reports: Sequence[ProgressReport]) -> None:
        await self._write_progress(reports)

    async def write(self, claims: Sequence[ClaimRequest], outcomes: Sequence[Outcome]) -> Written:
        return await self._flush(claims, outcomes)

    async def close(self) -> None:
        await self._connection.close()


class _Grouped(Generic[Item, Answer]):
    """Requests that come while a statement is in flight wait for it to end and then go
    together in the next one, on one held connection. Each request returns its answer."""

    def __init__(self, connection: HeldConnection, *, max_batch: int = 500) -> None:
        self._connection = connection
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def _ask(self, item: Item) -> Answer:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush(), name="taskq-grouped")
        return await future

    async def close(self) -> None:
        if self._flushing is not None:
            await asyncio.wait({self._flushing})
        await self._connection.close()

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                self._pending = self._pending[self._max_batch :]
                try:
                    await self._answer(batch)
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(
                                StoreError(f"the statement was interrupted: {exc!r}")
                            )
                    raise
        finally:
            self._flushing = None

    async def _answer(self, batch: list[tuple[Item, asyncio.Future[Answer]]]) -> None:
        """Settle every future of `batch` (raising only if interrupted)."""
        raise NotImplementedError


class GroupedInserts(_Grouped[NewTask, None]):
    """Rows of concurrent submits (without idempotency keys) in one INSERT; each `insert`
    returns once its row is committed."""

    async def insert(self, task: NewTask) -> None:
        await self._ask(task)

    async def _answer(self, batch: list[tuple[NewTask, asyncio.Future[None]]]) -> None:
        try:
            await self._connection.fetch(pg.INSERT, *pg.columns([task for task, _ in batch]))
        except StoreError as exc:
            if len(batch) > 1 and not isinstance(exc, StoreConnectionError):
                for one in batch:  # one bad row must not fail the submits batched with it
                    await self._answer([one])
                return
            _fail(batch, exc)
            return
        for _, future in batch:
            if not future.done():
                future.set_result(None)


class GroupedReads(_Grouped[str, "TaskRecord | None"]):
    """Reads of single tasks by id: concurrent ones (many waiters) in one SELECT, on a
    connection of their own, so that a read costs one round trip and no pool checkout."""

    async def get(self, task_id: str) -> TaskRecord | None:
        return await self._ask(task_id)

    async def _answer(self, batch: list[tuple[str, asyncio.Future[TaskRecord | None]]]) -> None:
        ids = [task_id for task_id, _ in batch]
        try:
            try:
                rows = await self._connection.fetch(pg.GET_TASKS, ids)
            except StoreConnectionError:  # (one the server dropped while idle: a fresh one)
                rows = await self._connection.fetch(pg.GET_TASKS, ids)
        except StoreError as exc:
            _fail(batch, exc)
            return
        found = {str(row["id"]): row for row in rows}
        for task_id, future in batch:
            row = found.get(task_id)
            record = None if row is None else records.record_of(row, json_as_text=True)
            if not future.done():
                future.set_result(record)


def _fail(batch: Sequence[tuple[object, asyncio.Future[Any]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)


class PgPaths:
    """A PostgreSQL store's statements that skip SQLAlchemy: single ones on pooled
    connections, grouped inserts and reads, and held connections for writers."""

    def __init__(self, pooled: pg.Pooled) -> None:
        self.pooled = pooled
        self.inserts = GroupedInserts(self.held())
        self.reads = GroupedReads(self.held())

    def held(self, name: str | None = None) -> HeldConnection:
        """A connection of its own (taken from the pool, never given back), named `name` in
        `pg_stat_activity` if given."""
        pooled = self.pooled
        return HeldConnection(pooled.engine.connect, pooled.translated, application_name=name)

    async def close(self) -> None:
        await self.inserts.close()
        await self.reads.close()
