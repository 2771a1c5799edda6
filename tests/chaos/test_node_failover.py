"""A broker URL naming two RabbitMQ nodes (`amqp://...@host1,host2/vhost`): when the node the
client and the worker are connected to stops, both reconnect to the other one and tasks
submitted then still run. (Two standalone nodes, not a cluster: what is shown is the
failover of the connections; a quorum queue's replication is the cluster stage's.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aio_pika.connection import make_url

import taskq
from taskq.broker.nodes import FailoverConnection
from tests.chaos.conftest import new_database, new_vhost
from tests.servers import PostgresCluster, RabbitNode, running

DEADLINE = 60.0


@pytest.fixture(scope="module")
def second_rabbit() -> Iterator[RabbitNode]:
    with running(RabbitNode()) as node:
        yield node


async def test_client_and_worker_move_to_the_next_node_when_theirs_stops(
    chaos_rabbit: RabbitNode, second_rabbit: RabbitNode, chaos_postgres: PostgresCluster
) -> None:
    # Given one vhost on two nodes with the same queues (a cluster's nodes share them), and
    # an app whose broker URL names both, the first first
    vhost = new_vhost(chaos_rabbit)
    new_vhost(second_rabbit, vhost)
    store_url = await new_database(chaos_postgres)
    for node in (chaos_rabbit, second_rabbit):
        async with taskq.App(f"{node.url}{vhost}", store_url) as alone:
            await alone.declare("default")
    hosts = f"127.0.0.1:{chaos_rabbit.port},127.0.0.1:{second_rabbit.port}"
    app = taskq.App(f"amqp://guest:guest@{hosts}/{vhost}", store_url)

    @app.task(name="echo")
    async def echo(text: str) -> str:
        return text

    try:
        async with app, app.worker(concurrency=4):
            assert await (await echo.submit("first")).result(timeout=DEADLINE) == "first"
            # When the first node stops
            await chaos_rabbit.ctl("stop_app")
            # Then a submit made after it still runs, through the second node: the client's
            # and the worker's connections moved there (submits made while they move are
            # left to the relay, so they run too)
            async with asyncio.timeout(DEADLINE):
                handle = await echo.submit("second")
                assert await handle.result() == "second"
            assert await second_rabbit.ctl("list_queues", "-p", vhost, "name")
    finally:
        chaos_rabbit.ensure_running()


async def test_each_reconnection_attempt_goes_to_the_next_node() -> None:
    # (The seam it relies on: aio-pika sets `transport` to None before every attempt.)
    connection = FailoverConnection(make_url("amqp://guest:guest@a:1/"))
    connection.nodes = tuple(make_url(f"amqp://guest:guest@{host}:1/") for host in ("a", "b", "c"))
    seen = []
    for _ in range(4):
        connection.transport = None
        seen.append(connection.url.host)
    assert seen == ["a", "b", "c", "a"]
