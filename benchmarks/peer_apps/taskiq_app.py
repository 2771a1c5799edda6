"""Taskiq with its defaults: AioPikaBroker (quorum queue `taskiq`, confirms), no result backend.

Worker: `taskiq worker benchmarks.peer_apps.taskiq_app:broker --workers 1`. With
PEERS_VARIANT=classic the queue `taskiq` is a classic durable one instead (taskiq-aio-pika's
own `task_queues=[Queue(type=QueueType.CLASSIC)]`), everything else as by default. With
PEERS_RESULTS=postgresql://... the round trips use taskiq-postgres' AsyncpgResultBackend
(table PEERS_RESULTS_NAME), which `wait_result()` polls.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from taskiq_aio_pika import AioPikaBroker, Queue, QueueType

from benchmarks.peer_apps._marks import (
    TASK_MARK,
    TASK_NOOP,
    amqp_url,
    results,
    results_name,
    variant,
    write_mark,
)

QUEUE = "taskiq"  # taskiq-aio-pika's default queue: quorum, durable (+ taskiq.dead_letter)
FILL_BATCH = 500  # kiq() calls in flight at once while filling
FAST_CHECK_INTERVAL = 0.005  # the second round-trip series: wait_result(check_interval=5 ms)


def queue_options() -> dict[str, Any]:
    """AioPikaBroker's queue options for PEERS_VARIANT; worker and driver declare it alike."""
    kind = variant()
    if kind in ("", "quorum"):
        return {}  # the default: Queue(), a quorum queue named QUEUE
    if kind == "classic":
        return {"task_queues": [Queue(name=QUEUE, type=QueueType.CLASSIC)]}
    raise SystemExit(f"PEERS_VARIANT={kind!r}: taskiq knows quorum (the default) and classic")


broker: Any = AioPikaBroker(url=amqp_url(), **queue_options())
if results() is not None:
    from taskiq_pg.asyncpg import AsyncpgResultBackend

    broker = broker.with_result_backend(
        AsyncpgResultBackend(dsn=results(), table_name=results_name())
    )


@broker.task(task_name=TASK_NOOP)
async def noop() -> None:
    """The benchmarked task: nothing."""


@broker.task(task_name=TASK_MARK)
async def mark(name: str) -> None:
    write_mark(name)


def prepare() -> None:
    """Start up once, so the result table exists before worker and driver both create it."""

    async def run() -> None:
        await broker.startup()
        await broker.shutdown()

    asyncio.run(run())


def fill(count: int) -> float:
    """mark(start), N x noop in gathers of 500 kiq(), mark(end); → seconds for the N kiq()."""

    async def run() -> float:
        await broker.startup()
        try:
            await mark.kiq("start")
            started = time.perf_counter()
            for first in range(0, count, FILL_BATCH):
                batch = min(FILL_BATCH, count - first)
                await asyncio.gather(*(noop.kiq() for _ in range(batch)))
            seconds = time.perf_counter() - started
            await mark.kiq("end")
            return seconds
        finally:
            await broker.shutdown()

    return asyncio.run(run())


def round_trips(pairs: int, warmup: int) -> dict[str, list[float]]:
    """Sequential kiq() → wait_result(), first with the default check_interval (0.2 s), then
    with 5 ms; → {"default": [ms, ...], "check_interval=0.005": [ms, ...]}."""

    async def series(check_interval: float | None) -> list[float]:
        options = {} if check_interval is None else {"check_interval": check_interval}
        samples = []
        for _ in range(pairs):
            started = time.perf_counter()
            task = await noop.kiq()
            result = await task.wait_result(timeout=30, **options)
            samples.append((time.perf_counter() - started) * 1000)
            if result.is_err:
                raise SystemExit(f"taskiq round trip failed: {result.error!r}")
        return samples

    async def run() -> dict[str, list[float]]:
        if results() is None:
            raise SystemExit("taskiq round trips need PEERS_RESULTS (a PostgreSQL DSN)")
        await broker.startup()
        try:
            for _ in range(warmup):
                await (await noop.kiq()).wait_result(timeout=60)
            return {
                "default": await series(None),
                f"check_interval={FAST_CHECK_INTERVAL}": await series(FAST_CHECK_INTERVAL),
            }
        finally:
            await broker.shutdown()

    return asyncio.run(run())
