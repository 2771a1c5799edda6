"""SQLAlchemy Core, awaited, without `sqlalchemy.ext.asyncio`.

That package imports the ORM for its sessions: 8 MB in every worker and client, for an API
taskq uses only through Core. `Engine` and `Connection` wrap a sync engine and connection of
an async dialect (asyncpg, aiosqlite) and run each call in SQLAlchemy's own greenlet bridge,
as `AsyncEngine` and `AsyncConnection` do; errors and results are SQLAlchemy's, unchanged.
A caller's own `AsyncConnection` or `AsyncSession` is taken through `Connection.of`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy
from sqlalchemy.engine import URL, CursorResult, Dialect
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.base import Executable
from sqlalchemy.util import greenlet_spawn

from taskq.exceptions import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

T = TypeVar("T")


def create_async_engine(url: str | URL, **options: Any) -> Engine:
    """`sqlalchemy.create_engine` for an async dialect (it picks the asyncio pool itself)."""
    return Engine(sqlalchemy.create_engine(url, **options))


class Engine:
    def __init__(self, sync_engine: sqlalchemy.Engine) -> None:
        self.sync_engine = sync_engine

    @property
    def dialect(self) -> Dialect:
        return self.sync_engine.dialect

    @property
    def url(self) -> URL:
        return self.sync_engine.url

    async def connect(self) -> Connection:
        """A pooled connection; close it (or use it as `async with`) to give it back."""
        return Connection(await greenlet_spawn(self.sync_engine.connect))

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[Connection]:
        """A connection in a transaction, committed at the end of the block, rolled back on
        an error."""
        async with await self.connect() as conn:
            transaction = await greenlet_spawn(conn.sync_connection.begin)
            try:
                yield conn
            except BaseException:
                await _to_completion(greenlet_spawn(transaction.rollback))
                raise
            await greenlet_spawn(transaction.commit)

    async def dispose(self) -> None:
        await greenlet_spawn(self.sync_engine.dispose)


class Connection:
    def __init__(
        self, sync_connection: sqlalchemy.Connection, *, schema: str | None = None
    ) -> None:
        self.sync_connection = sync_connection
        # A caller's connection reaches taskq's tables in `schema` (a namespace) by naming
        # it in each statement; its own search_path, and its other statements, stay as they are.
        self._options = {"schema_translate_map": {None: schema}} if schema else None

    @classmethod
    async def of(
        cls, transaction: AsyncConnection | AsyncSession, *, schema: str | None = None
    ) -> Connection:
        """The connection of a caller's `AsyncConnection`, or of an `AsyncSession`'s
        transaction. (The import costs nothing here: the caller made one.)"""
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

        if isinstance(transaction, AsyncSession):
            transaction = await transaction.connection()
        if not isinstance(transaction, AsyncConnection) or transaction.sync_connection is None:
            raise TypeError(type(transaction).__name__)
        return cls(transaction.sync_connection, schema=schema)

    @classmethod
    async def of_callers_transaction(
        cls, transaction: object, *, schema: str | None = None
    ) -> Connection:
        """`of(transaction)`, refusing with a `ConfigurationError` anything that is not a
        SQLAlchemy connection or session inside a transaction."""
        try:
            conn = await cls.of(transaction, schema=schema)  # type: ignore[arg-type]
        except TypeError:
            raise ConfigurationError(
                "transaction must be a SQLAlchemy AsyncConnection or AsyncSession, not "
                f"{type(transaction).__name__}"
            ) from None
        if not conn.in_transaction():
            raise ConfigurationError(
                "transaction=... must be in a transaction "
                "(use `async with engine.begin() as conn:`)"
            )
        return conn

    @property
    def dialect(self) -> Dialect:
        return self.sync_connection.dialect

    def in_transaction(self) -> bool:
        return self.sync_connection.in_transaction()

    async def execute(
        self, statement: Executable, parameters: Any = None
    ) -> CursorResult[*tuple[Any, ...]]:
        """Run `statement`; the result is already fetched, so reading it needs no await."""
        result: CursorResult[*tuple[Any, ...]] = await greenlet_spawn(
            self.sync_connection.execute, statement, parameters, execution_options=self._options
        )
        return result

    async def scalar(self, statement: Executable, parameters: Any = None) -> Any:
        return (await self.execute(statement, parameters)).scalar()

    async def run_sync(self, fn: Callable[[sqlalchemy.Connection], T]) -> T:
        """Call `fn(sync_connection)` where it may use the connection synchronously."""
        result: T = await greenlet_spawn(fn, self.sync_connection)
        return result

    async def get_raw_connection(self) -> PoolProxiedConnection:
        """The pooled DBAPI connection (`.driver_connection` is asyncpg's own)."""
        raw: PoolProxiedConnection = await greenlet_spawn(
            getattr, self.sync_connection, "connection"
        )
        return raw

    async def begin(self) -> None:
        """Begin a transaction now; it ends at `commit`, `rollback` or `close`."""
        await greenlet_spawn(self.sync_connection.begin)

    async def commit(self) -> None:
        await greenlet_spawn(self.sync_connection.commit)

    async def invalidate(self) -> None:
        """Discard the DBAPI connection (it may be broken) instead of pooling it again."""
        await greenlet_spawn(self.sync_connection.invalidate)

    async def close(self) -> None:
        """Back to the pool; a transaction still open is rolled back."""
        await greenlet_spawn(self.sync_connection.close)

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await _to_completion(self.close())


async def _to_completion(cleanup: Coroutine[Any, Any, T]) -> T:
    """Run `cleanup` to its end even if the caller is cancelled meanwhile (then re-raise the
    cancellation): a connection half given back could reach a pool already disposed of."""
    task = asyncio.ensure_future(cleanup)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if task.done():
                raise
            cancelled = exc
        else:
            break
    if cancelled is not None:
        raise cancelled
    return result
