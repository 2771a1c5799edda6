"""The world of a ledger test on worker hosts (`hosts_site` in conftest.py): the RabbitMQ
cluster and vhost, a private database, two hosts with a `Workers` each, and the chaos
suite's app and ledger in the test process (the root namespace), with what the tests ask
of it: start a worker per host, submit steadily, read who ran what, and when."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import aio_pika

from tests.chaos import chaos_app
from tests.chaos.ledger import Ledger, Verdict
from tests.e2e.processes import WorkerProcess, Workers, consumer_count
from tests.netns import Host
from tests.servers import RabbitCluster
from tests.support import eventually

CHAOS_APP = "tests.chaos.chaos_app:app"
# The AMQP heartbeat of the hosts' workers (the `heartbeat` of their broker URL), below
# the 20 s of a partition, so that RabbitMQ notices one and hands back what the cut-off
# worker held. (With the default 60 s, a 20 s partition goes unnoticed: docs/deploying.md.)
HEARTBEAT = 5
TASK_SECONDS = 0.2
START = 30.0  # deadline for the workers to consume


@dataclass
class Site:
    rabbit: RabbitCluster
    vhost: str
    store_url: str  # (from the root namespace)
    hosts: list[Host]
    workers: list[Workers]  # (one per host, in the same order)
    client: chaos_app.ChaosApp
    ledger: Ledger

    async def start_workers(self, concurrency: int = 8) -> list[WorkerProcess]:
        """A `taskq worker` on each host; → once both consume queue `default`."""
        started = [
            await workers.spawn(
                concurrency=concurrency, app=CHAOS_APP, env={"TASKQ_QUEUE_TYPE": "quorum"}
            )
            for workers in self.workers
        ]
        node = self.rabbit.nodes[0]
        url = f"amqp://guest:guest@127.0.0.1:{node.port}/{self.vhost}"
        async with await aio_pika.connect(url, timeout=10) as connection:

            async def consuming() -> int:
                for worker in started:
                    assert worker.process.poll() is None, worker.output()[-3000:]
                return await consumer_count(connection, "default")

            await eventually(
                consuming, lambda n: n == len(started), what="both consuming", within=START
            )
        return started

    async def load_until(self, done: asyncio.Event) -> None:
        """Submit steadily (about 30 tasks of 0.2 s a second) until `done`."""
        while not done.is_set():
            await self.ledger.submit(self.client.work, TASK_SECONDS)
            await asyncio.sleep(0.02)

    async def now(self) -> datetime:
        """The database's clock (the effects' and rows' times are on it)."""
        (row,) = await self.ledger.rows("SELECT clock_timestamp() AS t")
        return row["t"]  # type: ignore[no-any-return]

    async def worker_ids(self) -> dict[str, str]:
        """Host name → the id of the worker that registered from it."""
        rows = await self.ledger.rows("SELECT id, host FROM taskq_workers WHERE role = 'worker'")
        return {row["host"]: row["id"] for row in rows}

    async def leader_host(self) -> str | None:
        rows = await self.ledger.rows(
            "SELECT host FROM taskq_workers WHERE leader AND state = 'running'"
        )
        return str(rows[0]["host"]) if rows else None

    async def runs_by(self, pid: int) -> int:
        (row,) = await self.ledger.rows(
            "SELECT count(*) AS n FROM chaos_effects WHERE pid = $1", pid
        )
        return int(row["n"])

    async def ran_twice(self) -> set[str]:
        rows = await self.ledger.rows(
            "SELECT task_id FROM chaos_effects GROUP BY task_id HAVING count(*) > 1"
        )
        return {str(row["task_id"]) for row in rows}


def holds(verdict: Verdict) -> None:
    """Nothing lost or stuck, nothing dead-lettered, every duplicate counted in attempts."""
    assert verdict.lost == 0, verdict
    assert verdict.stuck == 0, verdict
    assert verdict.duplicates == verdict.explained, verdict
    assert verdict.dead == {}, verdict
