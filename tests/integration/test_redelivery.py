"""A dropped connection redelivers what a worker holds while its tasks still run (issue 17,
defect 3): the worker keeps each run, by a lease from then on, and acks the copy; no task
runs twice at once. RabbitMQ + PostgreSQL; only this test's vhost loses its connections."""

from __future__ import annotations

import asyncio

import taskq
from tests.conftest import Backend
from tests.integration.broker.test_rabbitmq_consumer import close_connections
from tests.support import eventually

DEADLINE = 30.0


async def test_a_connection_blip_does_not_start_a_second_copy_of_a_running_task(
    production: Backend,
) -> None:
    # Given a worker running a task that waits to be let go
    app = production.app()
    starts: list[int] = []
    started, let_go = asyncio.Event(), asyncio.Event()

    @app.task(name="held")
    async def held() -> int:
        starts.append(taskq.context().attempt)
        started.set()
        await let_go.wait()
        return len(starts)

    async with app, app.worker(concurrency=4):
        handle = await held.submit()
        await asyncio.wait_for(started.wait(), DEADLINE)
        # When every connection of the vhost drops (RabbitMQ redelivers the message)
        assert await close_connections(production.broker_url) >= 1
        # Then the worker keeps the run by a lease and acks the copy, rather than run it again
        await eventually(
            handle.info,
            lambda info: info.lease_until is not None or len(starts) > 1,
            what="the redelivery to be handled",
            within=DEADLINE,
        )
        assert starts == [1]
        let_go.set()
        assert await handle.result(timeout=DEADLINE) == 1
        info = await handle.info()
        attempts = await handle.attempts()
    assert (info.state, info.attempts) == (taskq.TaskStatus.SUCCEEDED, 1)
    assert [(a["attempt"], a["state"]) for a in attempts] == [(1, "succeeded")]
