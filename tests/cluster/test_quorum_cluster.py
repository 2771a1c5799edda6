"""A steady load on a quorum queue of a three-node RabbitMQ cluster while the node that leads
the queue stops: every acknowledged submit ends succeeded, each task's effect recorded once
(or more only with attempts counted), and the time until tasks run again is printed."""

from __future__ import annotations

import asyncio
import collections
import time

import taskq
from tests.servers import RabbitCluster

DEADLINE = 120.0
BEFORE, AFTER = 60, 60  # tasks acknowledged before the fault, and after it


async def queue_leader(cluster: RabbitCluster, vhost: str, queue: str) -> str:
    output = await cluster.nodes[0].ctl(
        "list_queues", "-p", vhost, "--no-table-headers", "name", "leader"
    )
    # (classic queues, e.g. the exclusive events queues, have no leader: one field)
    leaders = dict(fields for line in output.splitlines() if len(fields := line.split()) == 2)
    return leaders[queue]


async def test_stopping_the_queue_leader_loses_no_acknowledged_task(
    rabbit_cluster: RabbitCluster, cluster_vhost: str, postgres_url: str
) -> None:
    # Given a quorum-queue app on the cluster, its broker URL naming every node, with a
    # worker, and a task that records each run of itself
    app = taskq.App(f"{rabbit_cluster.url}{cluster_vhost}", postgres_url, queue_type="quorum")
    runs: collections.Counter[str] = collections.Counter()
    ran_at: list[float] = []

    @app.task(name="effect")
    async def effect(n: int) -> int:
        runs[taskq.context().id] += 1
        ran_at.append(time.monotonic())
        return n

    acknowledged: list[taskq.TaskHandle[int]] = []

    async def submit(count: int) -> None:
        for n in range(count):
            acknowledged.append(await effect.submit(n))
            await asyncio.sleep(0.01)  # (a steady load, not a burst)

    async with app, app.worker(concurrency=8):
        await submit(BEFORE)
        # When the node leading the queue stops while submits go on
        leading = await queue_leader(rabbit_cluster, cluster_vhost, "default")
        leader = rabbit_cluster.node_named(leading)
        stopped_at = time.monotonic()
        await leader.ctl("stop_app")
        try:
            await submit(AFTER)
            # Then every acknowledged task ends succeeded (none lost)
            async with asyncio.timeout(DEADLINE):
                results = [await handle.result() for handle in acknowledged]
            records = [await handle.info() for handle in acknowledged]
        finally:
            await leader.ctl("start_app")
    assert results == [*range(BEFORE), *range(AFTER)]
    # And each ran once, or more only with its attempts counted (redelivered by the fault)
    twice = [r for r in records if runs[r.id] > 1]
    assert all(r.attempts >= runs[r.id] for r in twice), [(r.id, r.attempts) for r in twice]
    assert all(runs[r.id] >= 1 for r in records)
    recovered = min((t for t in ran_at if t > stopped_at), default=None)
    assert recovered is not None
    print(
        f"\nquorum leader {leading} stopped: {len(acknowledged)} acknowledged, 0 lost, "
        f"{len(twice)} ran twice (attempts counted); first run after the stop "
        f"{(recovered - stopped_at) * 1000:.0f} ms later"
    )
