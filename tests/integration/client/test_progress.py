"""Progress reports: seen while running, kept after the end, coalesced in the row, checked."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

import pytest

import taskq
from taskq.store import Store
from tests.conftest import Backend
from tests.integration.client.helpers import (
    DEADLINE,
    Status,
    stored_progress,
    taskq_cli,
)

# -- progress ---------------------------------------------------------------------------------


async def test_progress_is_visible_while_running_and_kept_after_success(backend: Backend) -> None:
    # Given a task that reports progress three times, then waits to be released
    app = backend.app()
    release = asyncio.Event()

    @app.task(name="crunch")
    async def crunch() -> str:
        ctx = taskq.context()
        await ctx.progress(0.1)
        await ctx.progress(0.5, "half way", rows=50)
        await ctx.progress(1, "all read", rows=100, tags=["a", "b"])
        await asyncio.wait_for(release.wait(), DEADLINE)
        return "done"

    async with app:
        async with app.worker():
            handle = await crunch.submit()

            # Then while it runs, its row shows the latest report
            running = await stored_progress(handle, 3)
            assert running.state is Status.RUNNING
            progress = running.progress
            assert progress is not None
            assert (progress["fraction"], progress["message"], progress["data"]) == (
                1.0,
                "all read",
                {"rows": 100, "tags": ["a", "b"]},
            )
            assert isinstance(progress["at"], float)

            # And after it succeeded, the row keeps that last report
            release.set()
            assert await handle.result(timeout=DEADLINE) == "done"
        # (read once the worker stopped: nothing it held is still to be written)
        finished = await handle.info()
    assert finished.state is Status.SUCCEEDED
    assert finished.progress == progress


async def test_last_progress_is_kept_when_the_task_ends_right_after_reporting(
    backend: Backend,
) -> None:
    # Given a task whose first report is stored, and which ends just after its second
    app = backend.app()
    first_stored = asyncio.Event()

    @app.task(name="sprint")
    async def sprint() -> None:
        await taskq.context().progress(0.5, "half")
        await asyncio.wait_for(first_stored.wait(), DEADLINE)
        await taskq.context().progress(1.0, "finished")

    async with app:
        async with app.worker():
            handle = await sprint.submit()
            await stored_progress(handle, 1)
            first_stored.set()
            await handle.result(timeout=DEADLINE)
        # The worker has stopped: its writer has flushed every report it held
        finished = await handle.info()

    # Then the row keeps the last report
    assert finished.progress is not None
    assert (finished.progress["n"], finished.progress["message"]) == (2, "finished")


async def test_progress_in_a_tight_loop_is_coalesced_and_ends_at_the_last_report(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a task that reports progress 2,000 times in a tight loop, and a count of the
    # progress writes that reach the store
    app = backend.app()
    loop_done = asyncio.Event()
    release = asyncio.Event()
    writes: list[int] = []
    write_progress = Store.write_progress

    async def counted(store: Store, reports: Any) -> None:
        writes.append(len(reports))
        await write_progress(store, reports)

    monkeypatch.setattr(Store, "write_progress", counted)

    @app.task(name="chatty")
    async def chatty(count: int) -> int:
        ctx = taskq.context()
        for i in range(1, count + 1):
            await ctx.progress(i / count, n=i)
        loop_done.set()
        # Held until the row shows the last report, to see it while still running.
        await asyncio.wait_for(release.wait(), DEADLINE)
        return count

    async with app, app.worker():
        handle = await chatty.submit(2000)
        await asyncio.wait_for(loop_done.wait(), DEADLINE)

        # Then the row ends at the last report
        running = await stored_progress(handle, 2000)
        release.set()
        assert await handle.result(timeout=DEADLINE) == 2000
        finished = await handle.info()
    assert running.progress is not None
    assert (running.progress["fraction"], running.progress["data"]) == (1.0, {"n": 2000})
    assert finished.progress == running.progress
    # And the 2,000 reports cost a handful of writes, not one each
    assert 1 <= len(writes) < 100, writes


async def test_invalid_progress_fails_the_task(backend: Backend) -> None:
    # Given a task that reports a bad fraction, or data msgpack cannot carry
    app = backend.app()

    @app.task(name="misreport")
    async def misreport(case: str) -> None:
        ctx = taskq.context()
        if case == "above one":
            await ctx.progress(1.5)
        elif case == "text":
            await ctx.progress("x")  # type: ignore[arg-type]
        elif case == "nan":
            await ctx.progress(math.nan)
        elif case == "object":
            await ctx.progress(0.5, tags=object())

    cases = {
        "above one": "ValueError",
        "text": "TypeError",
        "nan": "ValueError",
        "object": "taskq.exceptions.SerializationError",
    }
    async with app, app.worker():
        handles = {case: await misreport.submit(case) for case in cases}
        # Then each fails, with the error that progress() raised
        errors = {}
        for case, handle in handles.items():
            with pytest.raises(taskq.TaskFailed) as caught:
                await handle.result(timeout=DEADLINE)
            errors[case] = (caught.value.error_type, caught.value.error_message)
    assert {case: error_type for case, (error_type, _) in errors.items()} == cases
    assert "1.5" in errors["above one"][1]
    assert "builtins.object" in errors["object"][1] and "progress data" in errors["object"][1]


async def test_progress_threadsafe_from_a_plain_def_task(backend: Backend) -> None:
    # Given a plain `def` task (run in a thread) that reports progress, then waits
    app = backend.app()
    release = threading.Event()

    @app.task(name="threaded_progress")
    def threaded_progress(rows: int) -> int:
        taskq.context().progress_threadsafe(0.25, "a quarter", rows=rows)
        taskq.context().progress_threadsafe(0.5, "half", rows=rows * 2)
        assert release.wait(DEADLINE), "never released"
        return rows

    async with app, app.worker():
        handle = await threaded_progress.submit(10)
        try:
            # Then its reports reach the row like an async task's
            running = await stored_progress(handle, 2)
        finally:
            release.set()  # (a thread cannot be cancelled: never leave it waiting)
        assert await handle.result(timeout=DEADLINE) == 10
    assert running.progress is not None
    assert (running.progress["fraction"], running.progress["message"]) == (0.5, "half")
    assert running.progress["data"] == {"rows": 20}


async def test_progress_data_with_bytes_reads_back_as_bytes(backend: Backend) -> None:
    # Given a task whose progress data holds bytes (which msgpack, and task arguments, carry)
    app = backend.app()
    release = asyncio.Event()

    @app.task(name="binary_progress")
    async def binary_progress() -> None:
        await taskq.context().progress(0.5, checksum=b"\x00\xff")
        await asyncio.wait_for(release.wait(), DEADLINE)

    async with app, app.worker():
        handle = await binary_progress.submit()
        try:
            running = await stored_progress(handle, 1)
        finally:
            release.set()
        await handle.result(timeout=DEADLINE)
    # Then info() gives the bytes back, as the live progress event did
    assert running.progress is not None
    assert running.progress["data"] == {"checksum": b"\x00\xff"}


async def test_a_progress_of_zero_written_as_minus_zero_is_shown_by_the_cli(
    backend: Backend,
) -> None:
    # Given a running task whose fraction is -0.0 (within 0..1, so accepted)
    app = backend.app()
    release = asyncio.Event()

    @app.task(name="starting")
    async def starting() -> None:
        await taskq.context().progress(-0.0, "starting")
        await asyncio.wait_for(release.wait(), DEADLINE)

    async with app, app.worker():
        handle = await starting.submit()
        try:
            running = await stored_progress(handle, 1)
            shown = await taskq_cli("status", handle.id, "--store-url", backend.store_url)
        finally:
            release.set()
        await handle.result(timeout=DEADLINE)
    # Then the row holds a float, and `taskq status` shows it
    assert running.progress is not None
    assert running.progress["fraction"] == 0.0
    assert shown.exit_code == 0, repr(shown.exception)
    assert "0% starting" in shown.stdout
