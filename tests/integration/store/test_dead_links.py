"""Every PostgreSQL connection taskq makes gives up on a dead link in bounded time: TCP
keepalive and TCP_USER_TIMEOUT on its socket (tests/cluster/test_dead_link.py cuts a real
link), and the leader's session ends on the server's side too when its host vanishes."""

from __future__ import annotations

import socket
from typing import Any

from sqlalchemy import text

from taskq.store import Store
from taskq.store import engine as engines
from taskq.store.locks import LEADER_GONE_AFTER, SessionLock


def tcp_options(sock: socket.socket) -> tuple[int, int, int]:
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    )


EXPECTED = (1, engines.KEEPALIVE_IDLE, int(engines.DEAD_LINK_AFTER * 1000))


async def test_the_stores_connections_bound_a_dead_link(postgres_url: str) -> None:
    # Given an open store over TCP
    store = Store(postgres_url)
    await store.open()
    try:
        # Then its pooled connections probe a silent link and drop one that stays dead
        assert store._engine is not None
        async with await store._engine.connect() as conn:
            raw: Any = (await conn.get_raw_connection()).driver_connection
            assert tcp_options(raw._transport.get_extra_info("socket")) == EXPECTED
        # And so does the leader's own connection, whose session the server also ends soon
        # after its host vanishes (so another candidate can lead)
        lock = store.session_lock("dead-links-test", application_name="taskq test")
        assert isinstance(lock, SessionLock)
        try:
            assert await lock.try_acquire()
            assert lock._conn is not None
            raw = (await lock._conn.get_raw_connection()).driver_connection
            assert tcp_options(raw._transport.get_extra_info("socket")) == EXPECTED
            names = list(LEADER_GONE_AFTER)
            shown = await lock._conn.execute(
                text("SELECT name, setting FROM pg_settings WHERE name = ANY(:names)"),
                {"names": names},
            )
            assert dict(shown.all()) == LEADER_GONE_AFTER
        finally:
            await lock.release()
    finally:
        await store.close()
