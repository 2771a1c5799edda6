"""Health: the `--health-port` HTTP probes, and the watchdog that names a task that blocks
the event loop.

`/healthz` answers 200 while the event loop answers at all (a blocked loop cannot reply,
which is the point); `/readyz` answers 200 only while the broker and the store are
reachable. Both reply with a small JSON body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import FrameType

logger = logging.getLogger(__name__)

Check = Callable[[], Awaitable[dict[str, bool]]]


@contextlib.asynccontextmanager
async def http_probes(host: str, port: int, ready: Check) -> AsyncIterator[int]:
    """Serve /healthz and /readyz on host:port for the block; yields the bound port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing in them matters here
            path = request.split(b" ")[1].decode() if request.count(b" ") >= 2 else ""
            status, body = await _answer(path, ready)
            payload = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    bound = server.sockets[0].getsockname()[1]
    logger.info("health probes on http://%s:%d/healthz and /readyz", host, bound)
    try:
        yield bound
    finally:
        server.close()
        await server.wait_closed()


async def _answer(path: str, ready: Check) -> tuple[str, dict[str, object]]:
    if path == "/healthz":
        return "200 OK", {"status": "ok"}
    if path == "/readyz":
        checks = await ready()
        ok = all(checks.values())
        return ("200 OK" if ok else "503 Service Unavailable"), {"ready": ok, **checks}
    return "404 Not Found", {"error": "try /healthz or /readyz"}


class LoopWatchdog:
    """A thread that notices when the event loop stops turning, and logs who holds it.

    The loop touches a timestamp every `interval`; when it is older than `threshold`, the
    thread reads the loop thread's current stack and asks `blame(frame)` which task's
    code is on it.
    """

    def __init__(
        self,
        threshold: float,
        blame: Callable[[FrameType], str | None],
        interval: float = 0.1,
    ) -> None:
        self._threshold = threshold
        self._blame = blame
        self._interval = interval
        self._touched = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="taskq-watchdog", daemon=True)

    async def run(self) -> None:
        """Touch the timestamp until cancelled (runs on the loop it watches)."""
        self._loop_thread = threading.get_ident()
        self._thread.start()
        try:
            while True:
                self._touched = time.monotonic()
                await asyncio.sleep(self._interval)
        finally:
            self._stop.set()

    def _watch(self) -> None:
        reported = False
        while not self._stop.wait(self._interval):
            stalled = time.monotonic() - self._touched
            if stalled < self._threshold:
                reported = False
                continue
            if reported:
                continue
            reported = True
            frame = sys._current_frames().get(self._loop_thread)
            culprit = self._blame(frame) if frame is not None else None
            logger.warning(
                "event loop blocked for %.1f s%s; blocking code in an async task stalls "
                "every task on this worker and its broker heartbeats (run it in a thread: "
                "make the task a plain def)",
                stalled,
                f" by task {culprit}" if culprit else "",
                extra={"action": "loop_blocked", "blocked_by": culprit},
            )
