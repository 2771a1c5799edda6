"""Priority lanes on the three-node cluster's quorum queues: with one slot, higher priority
tasks start first, as priorities order a classic queue (the same check runs on one node in
tests/integration/test_quorum_queues.py)."""

from __future__ import annotations

import asyncio

import taskq
from tests.integration.test_quorum_queues import BANDS_IN_ORDER, tasks_of_three_bands
from tests.servers import RabbitCluster

DEADLINE = 30.0


async def test_with_one_slot_the_higher_lanes_run_first_on_a_cluster(
    rabbit_cluster: RabbitCluster, cluster_vhost: str, postgres_url: str
) -> None:
    # Given quorum queues replicated over the cluster, lanes 0 | 1-4 | 5-10, and tasks of
    # each band waiting, the lowest submitted first
    app = taskq.App(f"{rabbit_cluster.url}{cluster_vhost}", postgres_url, queue_type="quorum")
    order, submit = tasks_of_three_bands(app, mid=4, high=10)
    async with app:
        handles = await submit()
        # When one worker with one slot takes them
        async with app.worker(concurrency=1):
            await asyncio.gather(*(h.result(timeout=DEADLINE) for h in handles))
        lanes = await rabbit_cluster.nodes[0].ctl(
            "list_queues", "-p", cluster_vhost, "--no-table-headers", "name", "type"
        )
    # Then the highest band ran first, each band in the order it was submitted
    assert order == BANDS_IN_ORDER
    # And each band had a quorum queue of its own
    kinds = dict(line.split() for line in lanes.splitlines() if line.strip())
    assert {kinds[name] for name in ("default", "default#p1", "default#p5")} == {"quorum"}
