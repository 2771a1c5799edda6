"""Sync callers: `task.submit_sync()`, `handle.result_sync()`, `app.get_sync()` for Django
views, Flask and plain scripts.

Each app gets one event loop in a background thread, started by its first sync call, in which
the app is opened once and stays open (no `asyncio.run` per call: a connection per submit
cost 49 ms); every sync call hands its coroutine to that loop and waits for it. The loop
closes the app at interpreter exit, or at `app.close_sync()`. An app used this way is not
also opened with `async with app:` in another loop: the two would share its connections.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from taskq.exceptions import ConfigurationError

T = TypeVar("T")

CLOSE_TIMEOUT = 30.0


class SyncBridge:
    """The background loop of one app's sync calls."""

    def __init__(
        self,
        open_app: Callable[[], Coroutine[Any, Any, None]],
        close_app: Callable[[], Coroutine[Any, Any, None]],
        is_open: Callable[[], bool],
    ) -> None:
        self._open_app, self._close_app, self._is_open = open_app, close_app, is_open
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def call(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run `make()` on the app's loop; → its result (its exception, raised here)."""
        loop = self._started()
        if threading.current_thread() is self._thread:
            raise ConfigurationError("a sync call from inside the app's own loop would wait "
                                     "for itself: use `await` there")  # fmt: skip
        return asyncio.run_coroutine_threadsafe(make(), loop).result()

    def close(self) -> None:
        """Close the app on its loop and stop the loop (at exit, or `app.close_sync()`)."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close_app(), loop).result(CLOSE_TIMEOUT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(CLOSE_TIMEOUT)
            if not thread.is_alive():
                loop.close()

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is not None:
                return self._loop
            if self._is_open():
                raise ConfigurationError(
                    "this app is open in an event loop (`async with app:`): there, use "
                    "`await task.submit(...)`; sync calls need an app that is not opened"
                )
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="taskq-sync", daemon=True)
            thread.start()
            try:
                asyncio.run_coroutine_threadsafe(self._open_app(), loop).result()
            except BaseException:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(CLOSE_TIMEOUT)
                raise
            self._loop, self._thread = loop, thread
            atexit.register(self.close)
            return loop
