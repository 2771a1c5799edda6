"""TASKQ_QUEUE_TYPE=quorum on a real RabbitMQ (one node here: a quorum queue of one member
behaves as on a cluster, short of the replication; the cluster stage covers that): tasks run,
a final failure reaches `<queue>.dlq` and replays from it, and a classic app meeting a quorum
queue gets a TopologyConflict that says what to do."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

import taskq
from tests.conftest import Backend
from tests.support import eventually

DEADLINE = 20.0


async def test_quorum_queues_run_tasks_and_dead_letter_final_failures(production: Backend) -> None:
    # Given an app whose queues are quorum queues, a task that succeeds and one that fails
    app = production.app(queue_type="quorum")
    attempts: list[int] = []

    @app.task(name="double")
    async def double(n: int) -> int:
        return 2 * n

    @app.task(name="flaky", max_retries=0)
    async def flaky() -> str:
        attempts.append(taskq.context().attempt)
        if len(attempts) == 1:
            raise RuntimeError("first time")
        return "replayed"

    async with app, app.worker():
        # When both run (one of them with a priority, which quorum queues ignore)
        assert await (await double.options(priority=5).submit(21)).result(timeout=DEADLINE) == 42
        failing = await flaky.submit()
        with pytest.raises(taskq.TaskFailed):
            await failing.result(timeout=DEADLINE)
        # Then the failure waits in the dead-letter queue, and replays from it to success
        letters = await eventually(
            app.dlq("default").list, lambda found: len(found) == 1, what="one dead letter"
        )
        assert letters[0].task_id == failing.id
        assert await app.dlq("default").replay() == 1
        assert await failing.result(timeout=DEADLINE) == "replayed"
    assert attempts == [1, 2]


async def test_a_classic_app_meeting_a_quorum_queue_is_told_what_to_do(production: Backend) -> None:
    # Given a queue declared by a quorum app
    async with production.app(queue_type="quorum") as quorum:
        await quorum.declare("billing")
    # When a classic app declares the same queue
    async with production.app() as classic:
        with pytest.raises(taskq.TopologyConflict) as caught:
            await classic.declare("billing")
    # Then the error names the argument and the setting
    message = str(caught.value)
    assert "x-queue-type" in message and "TASKQ_QUEUE_TYPE" in message


BANDS_IN_ORDER = [f"{band}{i}" for band in ("high", "mid", "low") for i in range(3)]


def tasks_of_three_bands(
    app: taskq.App, mid: int, high: int
) -> tuple[list[str], Callable[[], Awaitable[list[taskq.TaskHandle[None]]]]]:
    """A task that records the order it runs in (a short sleep each: a lane's next message
    arrives meanwhile), and what submits 3 of priority 0, then 3 of `mid`, then 3 of `high`."""
    order: list[str] = []

    @app.task(name="job")
    async def job(label: str) -> None:
        order.append(label)
        await asyncio.sleep(0.02)

    async def submit() -> list[taskq.TaskHandle[None]]:
        return [
            await job.options(priority=priority).submit(f"{band}{i}")
            for band, priority in (("low", 0), ("mid", mid), ("high", high))
            for i in range(3)
        ]

    return order, submit


async def test_with_one_slot_higher_priority_lanes_run_first_as_priorities_do_on_classic(
    production: Backend,
) -> None:
    # Given quorum queues, whose lanes are 0 | 1-4 | 5 and up, and tasks of each band
    # waiting, the lowest submitted first
    app = production.app(queue_type="quorum")
    order, submit = tasks_of_three_bands(app, mid=3, high=9)
    async with app:
        handles = await submit()
        # Each band waits in its own queue, the tasks without a priority in the queue itself
        assert (await app.broker.stats("default")).ready == 9  # type: ignore[union-attr]
        # When one worker with one slot takes them
        async with app.worker(concurrency=1):
            await asyncio.gather(*(h.result(timeout=DEADLINE) for h in handles))
    # Then the highest band runs first, each band in the order it was submitted
    assert order == BANDS_IN_ORDER
