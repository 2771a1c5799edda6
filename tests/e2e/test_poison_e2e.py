"""A task that kills its worker, next to innocent ones (issue 17, defect 2): only the poison
is dead-lettered; what was in flight with it runs alone afterwards and finishes.

Real `taskq worker` processes, restarted by the test each time the poison kills one (as
systemd or Docker would), on RabbitMQ + PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import taskq
from tests.conftest import Backend
from tests.e2e import worker_app
from tests.e2e.processes import Workers, sql, state_counts
from tests.support import eventually

DEADLINE = 120.0


async def test_only_the_task_that_kills_its_worker_is_dead_lettered(
    production: Backend, workers: Workers
) -> None:
    # Given an innocent task that takes 1 s on every attempt, a task that kills its worker
    # 0.2 s in, and 30 quick ones, all queued before a worker with two slots starts (so the
    # first two run together)
    e2e = worker_app.build(production.broker_url, production.store_url)
    async with e2e.app:
        innocent = await e2e.steady.submit(1.0)
        poison = await e2e.poison.submit(0.2)
        quick = [await e2e.noop.submit(i) for i in range(30)]

        # When the worker is restarted each time the poison kills it
        worker = await workers.spawn(concurrency=2)
        deaths = 0
        deadline = time.monotonic() + DEADLINE
        while not (await poison.info()).state.is_final:
            assert time.monotonic() < deadline, f"poison not final after {deaths} deaths"
            if worker.process.poll() is not None:
                deaths += 1
                worker = await workers.spawn(concurrency=2)
            await asyncio.sleep(0.1)  # (a poll with a deadline: a death gives no event)

        # Then the poison, and only it, ends failed for too many deliveries
        with_poison = await poison.info()
        assert with_poison.state is taskq.TaskStatus.FAILED
        assert with_poison.error is not None
        assert with_poison.error.type == "MaxDeliveriesExceeded"
        # And the innocent task in flight with it finished, on its second attempt (alone)
        assert await innocent.result(timeout=DEADLINE) == 2
        assert await asyncio.gather(*(h.result(timeout=DEADLINE) for h in quick)) == [
            2 * i for i in range(30)
        ]
    assert deaths >= 5, deaths
    assert await state_counts(production.store_url) == {"succeeded": 31, "failed": 1}
    dead = await sql(
        production.store_url, "SELECT name FROM taskq_tasks WHERE dead_reason IS NOT NULL"
    )
    assert [row["name"] for row in dead] == ["e2e.poison"]


async def test_the_supervisor_never_gives_up_on_a_child_that_a_task_keeps_killing(
    production: Backend, workers: Workers
) -> None:
    # Given a supervised worker with one child (`--max-tasks-per-child` makes a supervisor),
    # which had started and consumed
    e2e = worker_app.build(production.broker_url, production.store_url)
    supervisor = await workers.start(concurrency=2, options=["--max-tasks-per-child", "1000"])
    async with e2e.app:
        # When a task kills the child on every delivery (more often than the supervisor's
        # old limit of 5 deaths within 10 s of starting), with others queued behind it
        poison = await e2e.poison.submit(0.05)
        quick = [await e2e.noop.submit(i) for i in range(10)]
        # Then the child is restarted each time, the poison ends dead-lettered, and the
        # slot runs the rest
        assert await asyncio.gather(*(h.result(timeout=DEADLINE) for h in quick)) == [
            2 * i for i in range(10)
        ]
        ended = await eventually(
            poison.info, lambda info: info.state.is_final, what="the poison to end", within=90
        )
    assert ended.error is not None and ended.error.type == "MaxDeliveriesExceeded"
    assert supervisor.process.poll() is None, supervisor.output()
    assert "not restarting it" not in supervisor.output()


async def test_a_task_that_never_yields_is_ended_by_the_hard_time_limit(
    production: Backend, workers: Workers
) -> None:
    # Given a worker with a 1 s hard time limit (supervised, so it is replaced)
    e2e = worker_app.build(production.broker_url, production.store_url)
    supervisor = await workers.start(concurrency=2, options=["--hard-time-limit", "1"])
    async with e2e.app:
        # When an `async def` that never yields runs (its timeout cannot cancel it)
        spinning = await e2e.spin.options(timeout=0.5).submit()
        # Then it is failed with TimeLimitExceeded, its worker process replaced
        with pytest.raises(taskq.TaskFailed) as caught:
            await spinning.result(timeout=DEADLINE)
        assert caught.value.error_type == "TimeLimitExceeded"
        # And the replacement runs the next tasks; the spinner never runs again
        assert await (await e2e.noop.submit(21)).result(timeout=DEADLINE) == 42
        info = await spinning.info()
        letters = await eventually(e2e.app.dlq().list, what="the spinner's dead letter")
    assert info.attempts == 1, info
    assert [(letter.task_id, letter.reason) for letter in letters] == [(spinning.id, "time_limit")]
    assert supervisor.process.poll() is None, supervisor.output()


async def test_a_task_over_the_memory_limit_is_ended_mid_task(
    production: Backend, workers: Workers
) -> None:
    # Given a worker with one slot and a 300 MB memory limit
    e2e = worker_app.build(production.broker_url, production.store_url)
    await workers.start(concurrency=1, options=["--memory-limit", "300MB"])
    async with e2e.app:
        # When a task takes 400 MiB and holds it
        hog = await e2e.hog.submit(400)
        # Then it is failed with MemoryLimitExceeded before it ends, and never runs again
        with pytest.raises(taskq.TaskFailed) as caught:
            await hog.result(timeout=DEADLINE)
        assert caught.value.error_type == "MemoryLimitExceeded"
        assert await (await e2e.noop.submit(1)).result(timeout=DEADLINE) == 2
        assert (await hog.info()).attempts == 1
