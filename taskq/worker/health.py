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

from taskq.telemetry import metrics
from taskq.worker import http

logger = logging.getLogger(__name__)

Check = Callable[[], Awaitable[dict[str, bool]]]


@contextlib.asynccontextmanager
async def http_probes(host: str, port: int, ready: Check) -> AsyncIterator[int]:
    """Serve /healthz and /readyz on host:port for the block; yields the bound port."""

    async def healthz() -> tuple[str, str, bytes]:
        return "200 OK", "application/json", json.dumps({"status": "ok"}).encode()

    async def readyz() -> tuple[str, str, bytes]:
        checks = await ready()
        ok = all(checks.values())
        status = "200 OK" if ok else "503 Service Unavailable"
        return status, "application/json", json.dumps({"ready": ok, **checks}).encode()

    routes = {"/healthz": healthz, "/readyz": readyz}
    async with http.serving(host, port, routes) as bound:
        logger.info("health probes on http://%s:%d/healthz and /readyz", host, bound)
        yield bound


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

    def touched(self) -> float:
        """When the loop last turned (monotonic seconds)."""
        return self._touched

    async def run(self) -> None:
        """Touch the timestamp until cancelled (runs on the loop it watches)."""
        self._loop_thread = threading.get_ident()
        self._thread.start()
        try:
            while True:
                self._touched = time.monotonic()
                await asyncio.sleep(self._interval)
                # How late the loop ran this timer: its lag, for the metrics.
                metrics.gauges.loop_lag = max(time.monotonic() - self._touched - self._interval, 0)
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
