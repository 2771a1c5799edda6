"""A very small HTTP/1.1 server for probes and metrics: GET a path, get a body, close.

Enough for orchestrators' probes and Prometheus scrapes, with no web framework to depend on.
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


@contextlib.asynccontextmanager
async def serving(host: str, port: int, routes: Mapping[str, Route]) -> AsyncIterator[int]:
    """Serve `routes` on host:port for the block; yields the bound port (for port 0)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing in them matters here
            path = request.split(b" ")[1].decode() if request.count(b" ") >= 2 else ""
            route = routes.get(path.partition("?")[0])
            if route is None:
                hint = {"error": "try " + " or ".join(sorted(routes))}
                status, kind, body = "404 Not Found", "application/json", json.dumps(hint).encode()
            else:
                status, kind, body = await route()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        except Exception:
            logger.exception("HTTP request to %s failed", path if "path" in locals() else "?")
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    bound: int = server.sockets[0].getsockname()[1]
    try:
        yield bound
    finally:
        server.close()
        await server.wait_closed()
