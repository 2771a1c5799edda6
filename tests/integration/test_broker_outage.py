"""RabbitMQ out of reach for one app (issue 17, defects 1 and 5): submits keep returning,
their rows wait for the leader's relay, and waiters ride through to the results.

The outage is this test's vhost only: its permissions are taken away and its connections
closed, so nothing reconnects until they come back; the shared broker runs on for others.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import unquote, urlsplit

import pytest

import taskq
from tests.conftest import Backend
from tests.integration.broker.test_rabbitmq_consumer import close_connections, rabbitmqctl
from tests.support import eventually

DEADLINE = 60.0


async def cut_off(amqp_url: str) -> None:
    vhost = unquote(urlsplit(amqp_url).path[1:])
    await rabbitmqctl("clear_permissions", "-p", vhost, "guest")
    assert await close_connections(amqp_url) >= 1


async def restore(amqp_url: str) -> None:
    vhost = unquote(urlsplit(amqp_url).path[1:])
    await rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")


async def test_submits_during_an_outage_return_and_run_once_it_ends(
    production: Backend,
) -> None:
    # Given an app with a worker (which leads, so it relays), and a result being awaited
    app = production.app()

    @app.task(name="double")
    async def double(n: int) -> int:
        return 2 * n

    async with app, app.worker(concurrency=4):
        before = await double.submit(0)
        assert await before.result(timeout=DEADLINE) == 0
        # When RabbitMQ is out of reach for the app
        await cut_off(production.broker_url)
        await eventually(lambda: asyncio.sleep(0, not app.broker.connected), bool, what="cut")
        # Then submits still return at once, each task stored
        started = time.monotonic()
        handles = [await double.submit(i) for i in range(1, 11)]
        took = time.monotonic() - started
        states = {(await h.info()).state for h in handles}
        assert states == {taskq.TaskStatus.SCHEDULED}, states
        # And waiting for results started during the outage does not fail
        waiting = [asyncio.create_task(h.result(timeout=DEADLINE)) for h in handles]

        async def watching() -> bool:  # (past subscribing, where a waiter used to raise)
            return all(h.id in app.waiter._watches for h in handles)

        await eventually(watching, what="the waiters to watch their tasks")
        assert not any(w.done() for w in waiting), [w for w in waiting if w.done()]
        # And a caller that wants the broker's confirmation gets PublishError, fast
        with pytest.raises(taskq.PublishError):
            await double.options(confirm_publish=True).submit(99)
        # When RabbitMQ is back
        await restore(production.broker_url)
        # Then every task runs, once, and every waiter gets its result
        assert await asyncio.gather(*waiting) == [2 * i for i in range(1, 11)]
        assert [(await h.info()).attempts for h in handles] == [1] * 10
    # (before: each waited out the 5 s publish timeout, then raised)
    assert took < 10.0, f"10 submits took {took:.2f} s during the outage"
