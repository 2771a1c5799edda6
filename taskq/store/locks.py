"""PostgreSQL advisory locks: leadership (session lock, dedicated connection) and users' locks.

Keys are two int4s: taskq's namespace and a stable hash of the name, so taskq's locks never
collide with an application's own advisory locks. On SQLite (one process) the same calls
are in-process locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from taskq.exceptions import LockTimeout, StoreConnectionError, StoreError
from taskq.store import engine as engines
from taskq.store.async_core import Connection, Engine, create_async_engine

logger = logging.getLogger(__name__)

NAMESPACE = int.from_bytes(b"tq\x00\x01", "big", signed=True)
# The server's side of a leader's connection: when the leader's host vanishes (a partition,
# a power cut), PostgreSQL ends its session, and so its lock, after about 10 s, rather than
# after the system's keepalive default (over 2 hours of no leader). The leader itself steps
# down sooner: its own check fails within 2 s.
LEADER_GONE_AFTER = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "10000",  # (ms: a reply unacknowledged that long ends it too)
}
_LOCK_NOT_AVAILABLE = "55P03"


async def connect_or_close(engine: Engine) -> Connection:
    """`engine.connect()`; if the caller is cancelled while it runs (a leader's term ending
    as it tries for the lock), the connection it still makes is closed, not left for the
    garbage collector."""
    connecting = asyncio.ensure_future(engine.connect())
    try:
        return await asyncio.shield(connecting)
    except asyncio.CancelledError:
        connecting.add_done_callback(_close_made)
        raise


def _close_made(connecting: asyncio.Future[Connection]) -> None:
    if connecting.cancelled() or connecting.exception() is not None:
        return
    closing = asyncio.ensure_future(connecting.result().close())
    _closing.add(closing)
    closing.add_done_callback(_closing.discard)


_closing: set[asyncio.Future[None]] = set()  # (kept referenced until done)


async def close_quietly(conn: Connection) -> None:
    """Close `conn`, ignoring a dead one's errors; a caller cancelled meanwhile does not stop
    the close (the connection would be left to the garbage collector)."""
    closing = asyncio.ensure_future(conn.close())
    _closing.add(closing)
    closing.add_done_callback(_closed)
    with contextlib.suppress(Exception):
        await asyncio.shield(closing)


def _closed(closing: asyncio.Future[None]) -> None:
    _closing.discard(closing)
    if not closing.cancelled():
        closing.exception()  # (retrieved: a dead connection's close may fail; nothing to do)


def key_of(name: str) -> int:
    """A stable int4 for `name` (hashtext() is not promised stable across versions)."""
    return int.from_bytes(
        hashlib.blake2b(name.encode(), digest_size=4).digest(), "big", signed=True
    )


class LeaderLock(Protocol):
    async def try_acquire(self) -> bool: ...

    async def check(self, within: float) -> None: ...

    async def release(self) -> None: ...


class SessionLock:
    """A lock held as long as one dedicated connection lives (never a pooled one).

    Used for leadership: if the process dies, PostgreSQL drops the connection and the lock
    with it; if the connection fails, `check()` raises and the holder must step down.
    """

    def __init__(self, url: str, name: str, *, application_name: str) -> None:
        self._url = engines.parse_url(url)
        self._name = name
        self._application_name = application_name
        self._engine: Engine | None = None
        self._conn: Connection | None = None
        self._held = False

    async def try_acquire(self) -> bool:
        """One attempt; a candidate keeps its connection open between attempts."""
        try:
            async with engines.translated_errors(self._url):
                conn = await self._connection()
                got = await conn.scalar(
                    text("SELECT pg_try_advisory_lock(:ns, :key)"),
                    {"ns": NAMESPACE, "key": key_of(self._name)},
                )
        except BaseException:
            await self.release()  # a broken connection is replaced on the next attempt
            raise
        self._held = bool(got)
        return self._held

    async def _connection(self) -> Connection:
        if self._conn is None:
            self._engine = create_async_engine(
                self._url,
                poolclass=NullPool,
                isolation_level="AUTOCOMMIT",
                connect_args={
                    "timeout": 5,
                    "server_settings": {
                        "application_name": self._application_name[:63],
                        **LEADER_GONE_AFTER,
                    },
                },
            )
            engines.bound_dead_links(self._engine)
            self._conn = await connect_or_close(self._engine)
        return self._conn

    async def check(self, within: float) -> None:
        """Raise `StoreConnectionError` unless the lock's connection still answers."""
        if self._conn is None:
            return
        try:
            async with asyncio.timeout(within), engines.translated_errors(self._url):
                await self._conn.execute(text("SELECT 1"))
        except TimeoutError:
            raise StoreConnectionError(
                "the leader's database connection stopped answering"
            ) from None

    async def release(self) -> None:
        """Drop the lock with its connection (closing it is the one release that always works)."""
        conn, engine = self._conn, self._engine
        self._conn = self._engine = None
        self._held = False
        if conn is not None:  # (a dead connection has dropped the lock already)
            await close_quietly(conn)
        if engine is not None:
            await engine.dispose()


@contextlib.asynccontextmanager
async def transaction_lock(engine: Engine, name: str, wait: float | None) -> AsyncIterator[None]:
    """Hold `name` for the block; PostgreSQL releases it at commit or if this process dies."""
    async with engines.translated_errors(engine.url):
        conn = await engine.connect()
    try:
        async with engines.translated_errors(engine.url):
            await conn.begin()
            await _acquire(conn, name, wait)
        yield  # the user's code: its exceptions pass through untranslated
    finally:
        with contextlib.suppress(Exception):  # a dead connection has dropped the lock
            await conn.close()  # ends the transaction, which releases the lock


async def _acquire(conn: Connection, name: str, wait: float | None) -> None:
    params = {"ns": NAMESPACE, "key": key_of(name)}
    if wait is not None and wait <= 0:
        got = await conn.scalar(text("SELECT pg_try_advisory_xact_lock(:ns, :key)"), params)
        if not got:
            raise LockTimeout(f"lock {name!r} is held by someone else")
        return
    if wait is not None:
        await conn.execute(
            text("SELECT set_config('lock_timeout', :value, true)"),
            {"value": f"{max(1, round(wait * 1000))}ms"},
        )
    try:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :key)"), params)
    except DBAPIError as exc:
        if _sqlstate(exc) == _LOCK_NOT_AVAILABLE:
            raise LockTimeout(f"lock {name!r} not acquired within {wait} s") from None
        raise


def _sqlstate(exc: DBAPIError) -> str | None:
    original = exc.orig
    for candidate in (original, getattr(original, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


class InProcessSessionLock:
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


@contextlib.asynccontextmanager
async def in_process_lock(held: asyncio.Lock, name: str, wait: float | None) -> AsyncIterator[None]:
    """`Store.lock` on SQLite: the database has one process, so an asyncio lock will do."""
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


@contextlib.asynccontextmanager
async def listening(url: str, channel: str, shown_url: str) -> AsyncIterator[asyncio.Event]:
    """An event set on each PostgreSQL NOTIFY on `channel`, heard on a connection of its
    own. If it cannot listen, the event is simply never set (callers poll anyway)."""
    wake = asyncio.Event()
    engine = create_async_engine(
        engines.parse_url(url),
        poolclass=NullPool,
        connect_args={"timeout": 5, "server_settings": {"application_name": "taskq listener"}},
    )
    engines.bound_dead_links(engine)
    conn: Connection | None = None
    try:
        try:
            async with engines.translated_errors(engines.parse_url(url)):
                conn = await connect_or_close(engine)
                raw = (await conn.get_raw_connection()).driver_connection
                assert raw is not None
                await raw.add_listener(channel, lambda *_: wake.set())
        except StoreError as exc:
            logger.warning("not listening for %s notifications on %s: %s", channel, shown_url, exc)
        yield wake
    finally:
        # (also when cancelled before it listens: a connection made is closed, not left to
        # the garbage collector)
        if conn is not None:
            await close_quietly(conn)
        await engine.dispose()
