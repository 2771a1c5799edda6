"""The probe/metrics server bounds what a client can take from the worker's loop (issue 17,
defect 14): slow heads time out, huge heads are refused, connections are capped, and only
GET and HEAD are served. Real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from taskq.worker import http

DEADLINE = 10.0


async def ok() -> tuple[str, str, bytes]:
    return "200 OK", "application/json", b'{"ok": true}'


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async with http.serving("127.0.0.1", 0, {"/ok": ok}) as bound:
        yield bound


async def exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), DEADLINE)
    finally:
        writer.close()


async def test_get_and_head_are_served_and_other_methods_refused(port: int) -> None:
    got = await exchange(port, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(b'{"ok": true}')
    head = await exchange(port, b"HEAD /ok HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")
    posted = await exchange(port, b"POST /ok HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert posted.startswith(b"HTTP/1.1 405") and b"Allow: GET, HEAD" in posted
    missing = await exchange(port, b"GET /nope HTTP/1.1\r\n\r\n")
    assert missing.startswith(b"HTTP/1.1 404")


async def test_a_huge_head_is_refused_without_reading_it_all(port: int) -> None:
    huge = b"GET /ok HTTP/1.1\r\nX-Pad: " + b"a" * (http.MAX_HEAD_BYTES * 4) + b"\r\n\r\n"
    answer = await exchange(port, huge)
    assert answer.startswith(b"HTTP/1.1 431")


async def test_a_slow_head_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "HEAD_TIMEOUT", 0.2)
    async with http.serving("127.0.0.1", 0, {"/ok": ok}) as bound:
        reader, writer = await asyncio.open_connection("127.0.0.1", bound)
        writer.write(b"GET /ok HTTP/1.1\r\n")  # and never the blank line
        await writer.drain()
        # The server closes the connection (EOF) instead of waiting for ever
        assert await asyncio.wait_for(reader.read(), DEADLINE) == b""
        writer.close()


async def test_connections_past_the_cap_are_turned_away_and_probes_still_answer(
    port: int,
) -> None:
    # Given as many idle connections as the cap allows, each holding a half-sent head
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(http.MAX_CONNECTIONS)]
    for _, writer in idle:
        writer.write(b"GET /ok HTTP/1.1\r\n")
    await asyncio.gather(*(writer.drain() for _, writer in idle))
    try:
        # When one more comes, it is turned away at once: 503, or reset if the server
        # closed it before reading what it sent
        try:
            turned_away = await exchange(port, b"GET /ok HTTP/1.1\r\n\r\n")
        except ConnectionResetError:
            turned_away = b"reset"
        assert turned_away.startswith(b"HTTP/1.1 503") or turned_away == b"reset", turned_away
    finally:
        for _, writer in idle:
            writer.close()

    # And once they are gone, a probe is served again
    async def served() -> bytes:
        try:
            return await exchange(port, b"GET /ok HTTP/1.1\r\n\r\n")
        except ConnectionResetError:  # (the server has not seen the others go yet)
            return b"reset"

    deadline = asyncio.get_running_loop().time() + DEADLINE
    while not (answer := await served()).startswith(b"HTTP/1.1 200"):
        assert asyncio.get_running_loop().time() < deadline, answer
        await asyncio.sleep(0.05)
