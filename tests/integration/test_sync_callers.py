"""Sync callers on both backends (issue 23, sync callers): `submit_sync`, `result_sync` and
`get_sync` from plain threads, as a WSGI server's threads call a Django or Flask view; the
app opened once on its background loop; clear errors where a sync call cannot work."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import taskq
from tests.conftest import Backend

DEADLINE = 15.0


def test_a_sync_view_submits_and_waits_from_many_threads(backend: Backend) -> None:
    # Given an app used only from sync code, and a view function as Django would call it
    app = backend.app()

    @app.task(name="sync.add")
    async def add(a: int, b: int) -> int:
        return a + b

    def view(n: int) -> dict[str, Any]:
        handle = add.submit_sync(n, 1)
        again = app.get_sync(handle.id)
        return {"id": handle.id, "sum": again.result_sync(timeout=DEADLINE)}

    try:
        with app.worker_sync(concurrency=8), ThreadPoolExecutor(8) as threads:
            # When 8 server threads each handle requests
            responses = list(threads.map(view, range(40)))
    finally:
        app.close_sync()
    # Then every request got its own task's result
    assert [r["sum"] for r in responses] == [n + 1 for n in range(40)]
    assert len({r["id"] for r in responses}) == 40
    assert not app.runtime.is_open  # (closed by close_sync)


def test_a_sync_call_on_an_app_open_in_an_event_loop_says_what_to_do(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="sync.noop")
    async def noop() -> None:
        pass

    async def open_then_call_sync() -> None:
        async with app:
            with pytest.raises(taskq.ConfigurationError) as caught:
                await asyncio.to_thread(noop.submit_sync)
            assert "await task.submit" in str(caught.value)

    asyncio.run(open_then_call_sync())
