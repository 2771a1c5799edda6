"""A steady load on a quorum queue of a three-node RabbitMQ cluster while the node that leads
the queue stops: `taskq worker` processes on two hosts, the chaos suite's ledger. Every
acknowledged submit ends succeeded, each task's effect recorded once (or more only with
attempts counted), and the time until tasks run again is printed."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from tests.cluster.site import Site, holds
from tests.servers import RabbitCluster
from tests.support import eventually

AFTER = 60  # tasks acknowledged after the stop, before the node starts again
DRAIN = 60.0


async def queue_leader(cluster: RabbitCluster, vhost: str, queue: str) -> str:
    output = await cluster.nodes[0].ctl(
        "list_queues", "-p", vhost, "--no-table-headers", "name", "leader"
    )
    # (classic queues, e.g. the exclusive events queues, have no leader: one field)
    leaders = dict(fields for line in output.splitlines() if len(fields := line.split()) == 2)
    return leaders[queue]


async def test_stopping_the_queue_leader_loses_no_acknowledged_task(hosts_site: Site) -> None:
    site = hosts_site
    # Given a worker process on each of two hosts, their broker URL naming every node, and
    # a steady load from the test process
    workers = await site.start_workers()
    done = asyncio.Event()
    producing = asyncio.create_task(site.load_until(done))
    try:
        await eventually(site.ledger.effects, lambda n: n >= 30, what="30 runs", within=30)
        # When the node leading the queue stops while submits go on
        leading = await queue_leader(site.rabbit, site.vhost, "default")
        leader = site.rabbit.node_named(leading)
        await leader.ctl("stop_app")
        stopped_at, stopped = await site.now(), len(site.ledger.acknowledged)
        try:
            # Then tasks submitted after the stop run
            first = await eventually(
                lambda: first_new_run(site, stopped_at),
                lambda at: at is not None,
                what="a task submitted after the stop run",
                within=DRAIN,
            )
            await eventually(
                lambda: asyncio.sleep(0, len(site.ledger.acknowledged) - stopped),
                lambda n: n >= AFTER,
                what=f"{AFTER} submits acknowledged after the stop",
                within=DRAIN,
            )
        finally:
            await leader.ctl("start_app")
    finally:
        done.set()
        await producing
    began = time.monotonic()
    await site.ledger.drain(DRAIN)
    drained = time.monotonic() - began
    # And every acknowledged task succeeded, each run counted in its attempts
    verdict = await site.ledger.verdict()
    holds(verdict)
    assert first is not None
    for worker in workers:
        assert worker.process.poll() is None, worker.output()[-3000:]
    print(
        f"\nquorum leader {leading} stopped under load, workers on two hosts: "
        f"{verdict.acknowledged} acknowledged ({verdict.unknown} submits failed), lost "
        f"{verdict.lost}, {verdict.duplicates} ran twice ({verdict.explained} counted); first "
        f"task submitted after the stop ran {(first - stopped_at).total_seconds():.1f} s "
        "after it; "
        f"drained {drained:.1f} s after the node was back"
    )


async def first_new_run(site: Site, since: datetime) -> datetime | None:
    """When a task submitted after `since` first recorded a run."""
    (row,) = await site.ledger.rows(
        "SELECT min(e.at) AS at FROM chaos_effects e JOIN taskq_tasks t ON t.id = e.task_id "
        "WHERE t.created_at > $1",
        since,
    )
    return row["at"]  # type: ignore[no-any-return]
