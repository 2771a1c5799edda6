"""Two worker hosts (network namespaces) on a three-node RabbitMQ cluster with quorum queues
and a private PostgreSQL, under a steady load from the test process: one host's link goes
down for 20 s, then up. The ledger must find nothing lost or stuck, and a task run twice only
if its worker was cut off while running it, counted in its attempts. The recovery times are
printed (docs/deploying.md "Many hosts" quotes them)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import aio_pika

from tests.chaos.ledger import Verdict
from tests.cluster.conftest import Site
from tests.e2e.processes import WorkerProcess, cli_env, consumer_count, json_values, run_cli
from tests.support import eventually

CHAOS_APP = "tests.chaos.chaos_app:app"
PARTITION = 20.0  # seconds the link stays down
TASK_SECONDS = 0.2
START = 30.0  # deadline for the workers to consume
RECOVERY = 60.0  # deadline for the cut-off host to work again after the link is back
DRAIN = 60.0


async def start_workers(site: Site) -> list[WorkerProcess]:
    """A `taskq worker` on each host; → once both consume queue `default`."""
    started = [
        await workers.spawn(concurrency=8, app=CHAOS_APP, env={"TASKQ_QUEUE_TYPE": "quorum"})
        for workers in site.workers
    ]
    node = site.rabbit.nodes[0]
    connection_url = f"amqp://guest:guest@127.0.0.1:{node.port}/{site.vhost}"
    async with await aio_pika.connect(connection_url, timeout=10) as connection:

        async def consuming() -> int:
            for worker in started:
                assert worker.process.poll() is None, worker.output()[-3000:]
            return await consumer_count(connection, "default")

        await eventually(consuming, lambda n: n == len(started), what="consumers", within=START)
    return started


async def load_until(site: Site, done: asyncio.Event) -> None:
    """Submit steadily (about 30 a second) until `done`."""
    while not done.is_set():
        await site.ledger.submit(site.client.work, TASK_SECONDS)
        await asyncio.sleep(0.02)


async def db_now(site: Site) -> datetime:
    (row,) = await site.ledger.rows("SELECT clock_timestamp() AS t")
    return row["t"]  # type: ignore[no-any-return]


async def worker_ids(site: Site) -> dict[str, str]:
    """host name → the id of the worker registered from it."""
    rows = await site.ledger.rows("SELECT id, host FROM taskq_workers WHERE role = 'worker'")
    return {row["host"]: row["id"] for row in rows}


async def test_a_worker_host_cut_off_for_20_s_loses_nothing(hosts_site: Site) -> None:
    site = hosts_site
    cut_host, other_host = site.hosts
    # Given a worker on each of two hosts, and a steady load from the test process
    cut_worker, other_worker = await start_workers(site)
    done = asyncio.Event()
    producing = asyncio.create_task(load_until(site, done))
    try:
        ids = await eventually(
            lambda: worker_ids(site), lambda found: len(found) == 2, what="both workers' rows"
        )
        assert set(ids) == {cut_host.hostname, other_host.hostname}, ids
        # And `taskq workers` lists each under its own host
        env = cli_env(TASKQ_STORE_URL=site.store_url)
        code, table, err = await run_cli("workers", env=env)
        assert code == 0, err
        for host in site.hosts:
            assert host.hostname in table and ids[host.hostname] in table, table
        code, out, err = await run_cli("workers", "--json", env=env)
        listed = {row["id"]: row for row in json_values(out)}
        for host, worker in zip(site.hosts, (cut_worker, other_worker), strict=True):
            row = listed[ids[host.hostname]]
            assert (row["host"], row["pid"], row["state"]) == (host.hostname, worker.pid, "running")

        await eventually(
            lambda: effects_of(site, cut_worker.pid), lambda n: n >= 20, what="runs on host a"
        )
        # When its link goes down for 20 s while the load goes on
        cut_host.link_down()
        cut_at, cut_clock = await db_now(site), time.monotonic()
        await asyncio.sleep(0.5)  # (claims already on their way when the link went down)
        mid_run = {
            str(row["id"])
            for row in await site.ledger.rows(
                "SELECT id FROM taskq_tasks WHERE state = 'running' AND worker_id = $1",
                ids[cut_host.hostname],
            )
        }
        await asyncio.sleep(PARTITION - (time.monotonic() - cut_clock))
        cut_host.link_up()
        up_at = await db_now(site)
        # Then the cut-off worker runs tasks submitted after the link came back, by itself
        await eventually(
            lambda: site.ledger.rows(
                "SELECT min(e.at) AS at FROM chaos_effects e JOIN taskq_tasks t "
                "ON t.id = e.task_id WHERE e.pid = $1 AND t.created_at > $2",
                cut_worker.pid,
                up_at,
            ),
            lambda rows: rows[0]["at"] is not None,
            what="a task submitted after the link came back run on the cut-off host",
            within=RECOVERY,
        )
        beating = await eventually(
            lambda: site.ledger.rows(
                "SELECT heartbeat_at, state FROM taskq_workers WHERE id = $1",
                ids[cut_host.hostname],
            ),
            lambda rows: rows[0]["heartbeat_at"] > up_at and rows[0]["state"] == "running",
            what="the cut-off worker's heartbeat after the link came back",
            within=RECOVERY,
        )
    finally:
        done.set()
        await producing
    await site.ledger.drain(DRAIN)
    verdict = await site.ledger.verdict()
    figures = await recovery(site, cut_worker.pid, other_worker.pid, cut_at, up_at)
    print(f"\npartition of {cut_host.hostname} for {PARTITION:.0f} s: {verdict}\n{figures}")
    print(f"heartbeat row after the link came back: {beating[0]['heartbeat_at'] - up_at}")
    # Then nothing is lost or stuck, and a task ran twice only if it was running on the
    # cut-off host when its link went down, each run counted in its attempts
    holds(verdict)
    twice = await ran_twice(site)
    assert twice <= mid_run, (twice - mid_run, mid_run)
    # And both workers are still up
    for worker in (cut_worker, other_worker):
        assert worker.process.poll() is None, worker.output()[-3000:]


def holds(verdict: Verdict) -> None:
    assert verdict.lost == 0, verdict
    assert verdict.stuck == 0, verdict
    assert verdict.duplicates == verdict.explained, verdict
    assert verdict.dead == {}, verdict


async def effects_of(site: Site, pid: int) -> int:
    (row,) = await site.ledger.rows("SELECT count(*) AS n FROM chaos_effects WHERE pid = $1", pid)
    return int(row["n"])


async def ran_twice(site: Site) -> set[str]:
    rows = await site.ledger.rows(
        "SELECT task_id FROM chaos_effects GROUP BY task_id HAVING count(*) > 1"
    )
    return {str(row["task_id"]) for row in rows}


async def recovery(site: Site, cut: int, other: int, cut_at: datetime, up_at: datetime) -> str:
    """What the store shows of the partition: runs by each host around it, and how long the
    tasks acknowledged around it waited."""
    (row,) = await site.ledger.rows(
        """SELECT
            (SELECT min(at) FROM chaos_effects WHERE pid = $2 AND at > $3) - $3 AS other_first,
            (SELECT count(*) FROM chaos_effects WHERE pid = $2 AND at > $3 AND at < $4)
                AS other_during,
            (SELECT count(*) FROM chaos_effects WHERE pid = $1 AND at > $3 AND at < $4)
                AS cut_during,
            (SELECT min(at) FROM chaos_effects WHERE pid = $1 AND at > $4) - $4 AS cut_first,
            (SELECT min(e.at) FROM chaos_effects e JOIN taskq_tasks t ON t.id = e.task_id
                WHERE e.pid = $1 AND t.created_at > $4) - $4 AS cut_new,
            (SELECT max(finished_at - created_at) FROM taskq_tasks) AS slowest,
            (SELECT count(*) FROM taskq_tasks WHERE finished_at - created_at > interval '5 s')
                AS waited
        """,
        cut,
        other,
        cut_at,
        up_at,
    )
    return (
        f"other host: first run {row['other_first']} after the cut, {row['other_during']} runs "
        f"during it; cut-off host: {row['cut_during']} runs recorded during the cut, first "
        f"recorded {row['cut_first']} after the link came back, first new task run "
        f"{row['cut_new']} after; slowest task {row['slowest']} from submit to outcome, "
        f"{row['waited']} tasks over 5 s"
    )
