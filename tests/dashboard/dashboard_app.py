"""The app the dashboard's tests run `taskq worker tests.dashboard.dashboard_app:app` with
(the dashboard itself never imports it); the test process builds its own copy with
`build(...)`. Tasks wait on files the test makes, so each step the browser should show
happens when the test says, not after a guessed sleep."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import taskq


async def _until(path: str) -> None:
    """Wait for the test to create `path` (a file is what crosses the process boundary)."""
    while not await asyncio.to_thread(Path(path).exists):  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def stepped(gates: str) -> str:
    """25%, then 75% once `gates`/1 exists, then done once `gates`/2 does."""
    await taskq.context().progress(0.25, "reading")
    await _until(f"{gates}/1")
    await taskq.context().progress(0.75, "writing")
    await _until(f"{gates}/2")
    return "done"


async def echo(text: str) -> str:
    return text


async def flaky(flag: str) -> str:
    """Fails while the file `flag` exists (its one attempt dead-letters it)."""
    if await asyncio.to_thread(Path(flag).exists):
        raise RuntimeError(f"{flag} is still there")
    return "fine"


async def hold(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "held"


async def add(a: int, b: int) -> int:
    return a + b


async def total(values: list[int]) -> int:
    return sum(values)


async def hourly() -> None:
    return None


def build(broker_url: str | None = None, store_url: str | None = None) -> taskq.App:
    app = taskq.App(broker_url, store_url)
    app.task(name="dash.stepped")(stepped)
    app.task(name="dash.echo")(echo)
    app.task(name="dash.flaky", max_retries=0)(flaky)
    app.task(name="dash.hold")(hold)
    app.task(name="dash.add")(add)
    app.task(name="dash.total")(total)
    app.periodic(every=timedelta(hours=1), name="dash.hourly")(hourly)
    return app


app = build()
