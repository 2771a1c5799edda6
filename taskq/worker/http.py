"""A very small HTTP/1.1 server for probes and metrics: GET a path, get a body, close.

Enough for orchestrators' probes and Prometheus scrapes, with no web framework to depend on.
It shares the worker's event loop, so it bounds what a client can take from it: a few
seconds for the request head, a few KiB of it, a few connections at once, GET and HEAD only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

logger = logging.getLogger(__name__)

# path → an async function returning (status line, content type, body)
Route = Callable[[], Awaitable[tuple[str, str, bytes]]]

HEAD_TIMEOUT = 5.0  # seconds for the whole request head, however slowly it trickles in
MAX_HEAD_BYTES = 8 * 1024
MAX_CONNECTIONS = 16  # more at once are closed at once (probes and scrapes need a few)


class _Refused(Exception):
    def __init__(self, status: str, extra_headers: str = "") -> None:
        super().__init__(status)
        self.status, self.extra_headers = status, extra_headers


@contextlib.asynccontextmanager
async def serving(host: str, port: int, routes: Mapping[str, Route]) -> AsyncIterator[int]:
    """Serve `routes` on host:port for the block; yields the bound port (for port 0)."""
    open_connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_connections
        open_connections += 1
        path = "?"
        try:
            if open_connections > MAX_CONNECTIONS:
                raise _Refused("503 Service Unavailable")
            method, path = await asyncio.wait_for(_read_head(reader), HEAD_TIMEOUT)
            if method not in ("GET", "HEAD"):
                raise _Refused("405 Method Not Allowed", "Allow: GET, HEAD\r\n")
            route = routes.get(path.partition("?")[0])
            if route is None:
                hint = {"error": "try " + " or ".join(sorted(routes))}
                status, kind, body = "404 Not Found", "application/json", json.dumps(hint).encode()
            else:
                status, kind, body = await route()
            _respond(writer, status, kind, b"" if method == "HEAD" else body, len(body))
            await writer.drain()
        except _Refused as refused:
            _respond(writer, refused.status, "text/plain", b"", 0, refused.extra_headers)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            logger.exception("HTTP request to %s failed", path)
        finally:
            open_connections -= 1
            writer.close()

    server = await asyncio.start_server(handle, host, port, limit=MAX_HEAD_BYTES)
    bound: int = server.sockets[0].getsockname()[1]
    try:
        yield bound
    finally:
        server.close()
        await server.wait_closed()


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str]:
    """(method, path) of the request; the rest of its head is read and dropped, up to
    MAX_HEAD_BYTES in all (431 past that)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise _Refused("431 Request Header Fields Too Large") from None
    request = head.split(b"\r\n", 1)[0].split(b" ")
    if len(request) != 3:
        raise _Refused("400 Bad Request")
    return request[0].decode("latin-1"), request[1].decode("latin-1")


def _respond(
    writer: asyncio.StreamWriter,
    status: str,
    kind: str,
    body: bytes,
    length: int,
    extra_headers: str = "",
) -> None:
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {length}\r\n"
        f"{extra_headers}Connection: close\r\n\r\n".encode()
        + body
    )
