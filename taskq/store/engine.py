"""Engines for PostgreSQL (asyncpg) and SQLite (aiosqlite); dialect differences live here."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg
from sqlalchemy import Table, event, func
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.pool import StaticPool

from taskq.config import redact_url
from taskq.exceptions import ConfigurationError, StoreConnectionError, StoreError, TaskqError
from taskq.store.async_core import Connection, Engine, create_async_engine

# Seconds a pooled PostgreSQL connection may sit unused before it is pinged on checkout.
PING_AFTER_IDLE = 1.0
_LAST_USED = "taskq_last_used"

# A dead link (a partition, a host gone) must end a PostgreSQL connection in bounded time:
# without these, a statement whose reply is lost waits for ever (nothing is left to resend,
# and asyncpg asks for no TCP keepalive), and one whose request is lost for the kernel's
# ~15 min of retransmissions. The kernel probes a connection silent for KEEPALIVE_IDLE s,
# and drops it once what it sent (data or probes) stayed unanswered DEAD_LINK_AFTER s. Only
# the link is bounded, never a statement: a long statement on a live link keeps answering
# probes. 30 s is the silence after which the other workers count a worker gone.
KEEPALIVE_IDLE = 10
KEEPALIVE_INTERVAL = 5
DEAD_LINK_AFTER = 30.0


def parse_url(url: str) -> URL:
    try:
        return make_url(_hosts_in_query(url))
    except (ArgumentError, ValueError):
        raise ConfigurationError("store_url is not a valid SQLAlchemy URL") from None


_HOST = re.compile(r"(\[[^\]]+\]|[^:\[\]]+)(?::(\d+))?")


def _hosts_in_query(url: str) -> str:
    """libpq's form for a primary and its standbys, `postgresql+asyncpg://u@h1,h2:5433/db`,
    in SQLAlchemy's: every host as `host=h:port` in the query (its asyncpg dialect wants a
    port for each; 5432 where none is given). With `target_session_attrs=read-write`, asyncpg
    connects to the one that takes writes (docs/deploying.md#postgresql-failover)."""
    parts = urlsplit(url)
    user, at, hosts = parts.netloc.rpartition("@")
    if "," not in hosts or not parts.scheme.startswith("postgresql"):
        return url
    listed = []
    for host in hosts.split(","):
        if not (found := _HOST.fullmatch(host.strip())):
            raise ValueError("not a host")
        listed.append(("host", f"{found[1]}:{found[2] or 5432}"))
    query = urlencode([*listed, *parse_qsl(parts.query, keep_blank_values=True)], safe=":[]")
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{parts.scheme}://{user}{at}{parts.path}?{query}{fragment}"


def in_namespace(url: URL, namespace: str) -> URL:
    """The database of `namespace`: on SQLite a file of its own beside the one named
    (taskq.sqlite3 → taskq.billing.sqlite3); on PostgreSQL the same (the schema differs)."""
    if not namespace or url.get_backend_name() != "sqlite" or url.database in _IN_MEMORY:
        return url
    path = Path(url.database or "")
    return url.set(database=str(path.with_name(f"{path.stem}.{namespace}{path.suffix}")))


_IN_MEMORY = (None, "", ":memory:")


def shown(url: URL) -> str:
    """The URL for messages: password hidden (in the query too); several hosts as the
    user wrote them, h1:5432,h2:5432."""
    hosts = url.query.get("host")
    rendered = redact_url(url.difference_update_query(["host"]).render_as_string(True))
    if not isinstance(hosts, tuple):
        return rendered
    scheme, _, rest = rendered.partition("://")
    user, slash, path = rest.partition("/")  # (the hosts went to the query: "u:***@")
    return f"{scheme}://{user}{','.join(hosts)}{slash}{path}"


def create_engine(url: str, schema: str | None = None) -> Engine:
    """An engine that never puts bound values (task arguments, results) in its errors. On
    PostgreSQL, with `schema` (a namespace), its sessions find taskq's tables there only."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    settings = {"application_name": "taskq"}
    if schema:
        settings["search_path"] = schema  # (a checked namespace: lowercase, no quoting)
    engine = create_async_engine(
        parsed,
        hide_parameters=True,
        pool_size=10,
        max_overflow=10,
        connect_args={"timeout": 10, "server_settings": settings},
    )
    _ping_when_idle(engine)
    bound_dead_links(engine)
    return engine


def bound_dead_links(engine: Engine) -> None:
    """Every PostgreSQL connection `engine` makes gives up on a dead link (see
    DEAD_LINK_AFTER): TCP keepalive and TCP_USER_TIMEOUT on its socket."""

    @event.listens_for(engine.sync_engine, "connect")
    def _deadlines(dbapi_connection: Any, _record: Any) -> None:
        transport = getattr(dbapi_connection.driver_connection, "_transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            tcp_deadlines(sock)


def tcp_deadlines(sock: Any) -> None:
    """Keepalive probes and a bound on unacknowledged data for one TCP socket (the options
    this platform has: TCP_USER_TIMEOUT and TCP_KEEPIDLE are Linux's)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", max(int(DEAD_LINK_AFTER // KEEPALIVE_INTERVAL), 1)),
        ("TCP_USER_TIMEOUT", int(DEAD_LINK_AFTER * 1000)),
    ):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _ping_when_idle(engine: Engine) -> None:
    """A pooled connection idle for a while is pinged before use, and replaced if the ping
    fails (the server restarted, a proxy dropped it). SQLAlchemy's `pool_pre_ping` pings at
    every checkout, which on asyncpg costs three round trips (BEGIN, ping, ROLLBACK): more
    than most statements of a busy worker or client."""

    @event.listens_for(engine.sync_engine, "connect")
    @event.listens_for(engine.sync_engine, "checkin")
    def _stamp(_dbapi_connection: Any, record: Any) -> None:
        record.info[_LAST_USED] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get(_LAST_USED, 0.0) < PING_AFTER_IDLE:
            return
        try:
            dbapi_connection.ping()
        except Exception:
            raise DisconnectionError("stale pooled connection") from None  # the pool retries


def _sqlite_engine(url: URL) -> Engine:
    in_memory = url.database in _IN_MEMORY
    engine = create_async_engine(
        url,
        hide_parameters=True,
        # One shared connection keeps an in-memory database alive for the app's lifetime.
        poolclass=StaticPool if in_memory else None,
        connect_args={"timeout": 30, "check_same_thread": False},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def insert_ignoring_duplicates(engine: Engine | Connection, table: Table) -> Any:
    """INSERT … ON CONFLICT DO NOTHING in the engine's dialect."""
    return _insert(engine, table).on_conflict_do_nothing()


def upsert_increasing(
    engine: Engine | Connection,
    table: Table,
    values: dict[str, Any],
    *,
    key: str,
    column: str,
) -> Any:
    """INSERT, or on conflict UPDATE `column` only if the new value is larger (monotonic)."""
    statement = _insert(engine, table).values(values)
    return statement.on_conflict_do_update(
        index_elements=[key],
        set_={column: statement.excluded[column]},
        where=table.c[column] < statement.excluded[column],
    )


def upsert_rows(
    engine: Engine | Connection, table: Table, rows: list[dict[str, Any]], *, key: str
) -> Any:
    """INSERT these rows, or on conflict UPDATE every other column they give."""
    statement = _insert(engine, table).values(rows)
    return statement.on_conflict_do_update(
        index_elements=[key], set_={c: statement.excluded[c] for c in rows[0] if c != key}
    )


def _insert(engine: Engine | Connection, table: Table) -> Any:
    """The dialect's own INSERT (for ON CONFLICT). SQLite's is imported only where it is used:
    a worker on PostgreSQL never loads that dialect (0.7 MB)."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


def clock(engine: Engine | Connection) -> Any:
    """ "Now" for comparisons with stored times: the database's own clock on PostgreSQL, so
    processes whose clocks disagree still agree on what is due. (SQLite is one process.)"""
    if engine.dialect.name == "postgresql":
        return func.now()
    return datetime.now(UTC)


@contextlib.asynccontextmanager
async def translated_errors(url: URL) -> AsyncIterator[None]:
    """Turn driver and SQLAlchemy errors into taskq's, naming the host but never a password."""
    try:
        yield
    except TaskqError:
        raise  # already ours (LockTimeout is also an OSError, through TimeoutError)
    except asyncpg.DataError as exc:  # (asyncpg used directly: a value it cannot send)
        raise StoreError(f"database error on {shown(url)}: {_reason(exc)}") from exc
    except (
        OperationalError,
        InterfaceError,
        OSError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,  # (the protocol lost its place: a broken connection)
        asyncpg.PostgresConnectionError,
    ) as exc:
        raise StoreConnectionError(
            f"cannot use the database at {shown(url)}: {_reason(exc)}. " + _what_to_check(url)
        ) from None
    except (DBAPIError, asyncpg.PostgresError) as exc:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            # (a connection lost mid-statement, e.g. a dead link: SQLAlchemy wraps asyncpg's
            # ConnectionDoesNotExistError in its generic Error, but marks it)
            raise StoreConnectionError(
                f"lost the connection to the database at {shown(url)}: {_reason(exc)}"
            ) from None
        raise StoreError(f"database error on {shown(url)}: {_reason(exc)}") from exc


def _what_to_check(url: URL) -> str:
    hosts = url.query.get("host")
    if isinstance(hosts, tuple) and len(hosts) > 1:
        return (
            f"None of its {len(hosts)} hosts took the session it asks for: during a failover, "
            "until a standby is promoted (taskq's writes wait, a submit fails; try it again). "
            "Otherwise check that they run and that TASKQ_STORE_URL is right."
        )
    return "Check that it runs and that TASKQ_STORE_URL is right."


def _reason(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    text = str(original).splitlines()[0] if str(original) else type(original).__name__
    return f"{type(original).__name__}: {text}"
