"""Routing by worker tags across `taskq worker` processes (issue 19, must-show "tags"): GPU
tasks only on the worker started with `--tags gpu`, untagged tasks on both workers, and a
task whose tags no running worker has waits `queued` (shown by `taskq queues` as waiting for
a worker with those tags) until a worker with them starts, then runs.

RabbitMQ + PostgreSQL (a fresh vhost and database per test); every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import taskq
from tests.conftest import Backend
from tests.e2e import worker_app
from tests.e2e.processes import Workers, run_cli, taskq_workers

DEADLINE = 30.0
UNTAGGED = 40


async def worker_ids(store_url: str) -> dict[int, dict[str, Any]]:
    """pid → the row `taskq workers --json` prints for it."""
    return {int(row["pid"]): row for row in await taskq_workers(store_url)}


async def stays_queued(handle: taskq.TaskHandle[Any], *, seconds: float) -> None:
    """The task is `queued` on every look for `seconds` (a bounded check that it does not
    start)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert await handle.status() is taskq.TaskStatus.QUEUED
        await asyncio.sleep(0.1)


async def taskq_queues(workers: Workers, *options: str) -> str:
    code, out, err = await run_cli("queues", *options, env=workers.env())
    assert code == 0, f"taskq queues exited {code}:\n{err}"
    return out


async def test_tasks_go_only_to_workers_with_all_their_tags(
    production: Backend, workers: Workers
) -> None:
    # Given a worker started with --tags gpu and one without tags
    gpu_worker = await workers.start(concurrency=4, options=["--tags", "gpu"])
    plain_worker = await workers.start(concurrency=4)
    rows = await worker_ids(production.store_url)
    gpu_id, plain_id = rows[gpu_worker.pid]["id"], rows[plain_worker.pid]["id"]
    # (`taskq workers --json` shows each worker's tags)
    assert rows[gpu_worker.pid]["tags"] == ["gpu"]
    assert rows[plain_worker.pid]["tags"] == []
    e2e = worker_app.build(production.broker_url, production.store_url)
    async with e2e.app:
        # When GPU tasks and untagged ones are submitted
        gpu = [await e2e.steady.options(tags={"gpu"}).submit(0.05) for _ in range(10)]
        untagged = await e2e.steady.submit_many([(0.05,)] * UNTAGGED)
        for handle in (*gpu, *untagged):
            await handle.result(timeout=DEADLINE)
        # Then every GPU task ran on the tagged worker, from queue default@gpu
        for handle in gpu:
            info = await handle.info()
            assert (info.queue, info.worker_id) == ("default@gpu", gpu_id)
        # ... and the untagged ones ran on both workers
        ran_on = [(await handle.info()).worker_id for handle in untagged]
        assert set(ran_on) == {gpu_id, plain_id}, f"untagged tasks ran on {set(ran_on)}"


async def test_a_task_waits_for_a_worker_with_its_tags_then_runs(
    production: Backend, workers: Workers
) -> None:
    # Given workers tagged gpu and untagged, none tagged eu
    await workers.start(concurrency=2, options=["--tags", "gpu"])
    await workers.start(concurrency=2)
    e2e = worker_app.build(production.broker_url, production.store_url)
    async with e2e.app:
        # When a task tagged eu is submitted
        handle = await e2e.noop.options(tags={"eu"}).submit(21)
        # Then it does not start: it waits queued, its message in queue default@eu
        await stays_queued(handle, seconds=3.0)
        assert (await handle.info()).queue == "default@eu"
        # ... and `taskq queues` says it waits for a worker tagged eu
        shown = await taskq_queues(workers)
        assert "default@eu" in shown
        assert "waiting for a worker tagged eu" in " ".join(shown.split())
        by_queue = {
            row["queue"]: row
            for row in map(json.loads, (await taskq_queues(workers, "--json")).splitlines())
        }
        assert by_queue["default@eu"]["ready"] == 1
        assert by_queue["default@eu"]["consumers"] == 0
        assert by_queue["default@eu"]["waiting_for_tags"] == ["eu"]
        assert by_queue["default@gpu"]["consumers"] == 1  # (the gpu worker's queue, idle)
        assert by_queue["default@gpu"]["waiting_for_tags"] is None
        assert by_queue["default"]["waiting_for_tags"] is None

        # When a worker with --tags eu starts
        eu_worker = await workers.start(concurrency=2, options=["--tags", "eu"])
        # Then the task runs there
        assert await handle.result(timeout=DEADLINE) == 42
        rows = await worker_ids(production.store_url)
        assert rows[eu_worker.pid]["tags"] == ["eu"]
        assert (await handle.info()).worker_id == rows[eu_worker.pid]["id"]
        # ... and `taskq queues` no longer says anything waits
        assert "waiting for a worker" not in " ".join((await taskq_queues(workers)).split())


async def test_a_worker_refuses_more_than_six_tags(workers: Workers) -> None:
    # When a worker is started with seven tags
    code, _, err = await run_cli(
        "worker", "tests.e2e.worker_app:app", "--tags", "a,b,c,d,e,f,g", env=workers.env()
    )
    # Then it exits at once with one clear line
    assert code == 1
    assert "--tags: a worker takes at most 6 tags" in " ".join(err.split())
