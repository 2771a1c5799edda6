"""PostgreSQL failover under a steady load: the primary is killed (SIGKILL to every process
of it), then its synchronous standby is promoted. Submits fail fast while no host takes
writes; workers keep their outcomes and write them once the new primary answers; the
leader is elected again there; the ledger finds nothing lost. Recovery times are printed."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.chaos import chaos_app
from tests.chaos.conftest import ledger_database
from tests.chaos.ledger import Ledger
from tests.e2e.processes import Workers, leader_pid, plain_postgres_url
from tests.servers import PostgresCluster, RabbitCluster
from tests.support import eventually

CHAOS_APP = "tests.chaos.chaos_app:app"
DEADLINE = 60.0
OUTAGE = 1.0  # seconds between the primary's death and the promotion (a failover manager's)


class Pair:
    """A primary and its synchronous standby, and a store URL naming both that connects to
    whichever takes writes."""

    def __init__(self) -> None:
        self.primary = PostgresCluster()
        self.standby: PostgresCluster | None = None

    def start(self) -> None:
        self.primary.start()
        self.standby = PostgresCluster(standby_of=self.primary)
        self.standby.start()

    def url(self, database: str) -> str:
        assert self.standby is not None
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        return f"postgresql+asyncpg://postgres@{hosts}/{database}?target_session_attrs=read-write"

    def remove(self) -> None:
        for cluster in (self.standby, self.primary):
            if cluster is not None:
                cluster.remove()


@pytest.fixture
def pair() -> Iterator[Pair]:
    servers = Pair()
    try:
        servers.start()
        yield servers
    finally:
        servers.remove()


async def synchronous_database(pair: Pair) -> str:
    """A migrated database with the effects table, every commit on the standby too (a
    commit the standby never saw would be lost when it is promoted)."""
    name = f"failover_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(plain_postgres_url(pair.primary.url()), timeout=10)
    try:
        await admin.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        await admin.execute("SELECT pg_reload_conf()")
        await eventually(
            lambda: admin.fetchval(
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"
            ),
            what="the standby replicating synchronously",
        )
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return await ledger_database(pair.url(name))


@pytest.fixture
async def workers(
    rabbit_cluster: RabbitCluster, cluster_vhost: str, pair: Pair, tmp_path: Path
) -> AsyncIterator[Workers]:
    node = rabbit_cluster.nodes[0]
    started = Workers(
        amqp_url=f"{node.url}{cluster_vhost}",
        store_url=await synchronous_database(pair),
        workdir=tmp_path,
        ctl=node.ctl,
    )
    try:
        yield started
    finally:
        await asyncio.to_thread(started.stop_all)


async def test_killing_the_primary_and_promoting_the_standby_loses_no_task(
    pair: Pair, workers: Workers
) -> None:
    # Given two workers (one leads, ticking every second) and a client on quorum queues,
    # every URL naming both servers, and a steady load
    client = chaos_app.build(workers.amqp_url, workers.store_url, queue_type="quorum")
    ledger = Ledger("postgres_failover", client.app, workers.store_url)
    env = {"TASKQ_QUEUE_TYPE": "quorum", chaos_app.TICKS_ENV: "1"}
    failed_submits: list[float] = []  # how long each submit that raised took
    stop_load = asyncio.Event()

    async def load() -> None:
        while not stop_load.is_set():
            began, unknown = time.monotonic(), ledger.unknown
            await ledger.submit(client.work, 0.05)
            if ledger.unknown > unknown:
                failed_submits.append(time.monotonic() - began)
                await asyncio.sleep(0.05)  # (a client backing off, not a tight loop)

    async with client.app:
        for _ in range(2):
            await workers.start(concurrency=8, app=CHAOS_APP, env=env)
        loading = asyncio.create_task(load())
        try:
            await eventually(ledger.effects, lambda n: n >= 40, what="40 runs", within=DEADLINE)
            # When the primary dies, and the standby is promoted a moment later
            killed_at = time.monotonic()
            await asyncio.to_thread(pair.primary.kill)
            await asyncio.sleep(OUTAGE)  # (the fault's length: no host takes writes)
            assert pair.standby is not None
            await asyncio.to_thread(pair.standby.promote)
            promoted_at = time.monotonic()
            await acknowledged(ledger, len(ledger.acknowledged) + 1)
            submits_back = time.monotonic() - promoted_at
            await acknowledged(ledger, len(ledger.acknowledged) + 20)
            # Then the leader is elected again on the new primary, and ticks again
            ticks_before = await ticks(ledger)
            await eventually(lambda: ticks(ledger), lambda n: n > ticks_before, what="a tick",
                             within=DEADLINE)  # fmt: skip
            leading_again = time.monotonic() - promoted_at
            assert await leader_pid(workers.store_url) in {w.pid for w in workers.alive()}
        finally:
            stop_load.set()
            await loading
        await ledger.drain(DEADLINE)
        verdict = await ledger.verdict()
    # And nothing acknowledged is lost, stuck or run twice without being counted
    assert verdict.lost == 0, verdict
    assert verdict.stuck == 0, verdict
    assert verdict.duplicates == verdict.explained, verdict
    assert verdict.dead == {}, verdict
    # And the submits made while no host took writes failed, each of them fast
    assert failed_submits, "no submit was made while the primary was down"
    assert max(failed_submits) < 5.0, failed_submits
    print(
        f"\nPostgreSQL primary killed, standby promoted {OUTAGE:.0f} s later: "
        f"{verdict.acknowledged} acknowledged, {verdict.lost} lost, {verdict.duplicates} ran "
        f"twice ({verdict.explained} counted); {len(failed_submits)} submits refused in the "
        f"outage, the slowest in {max(failed_submits) * 1000:.0f} ms; submits acknowledged "
        f"again {submits_back * 1000:.0f} ms after the promotion (the outage began "
        f"{(promoted_at - killed_at) * 1000:.0f} ms before it); the leader ticking again "
        f"{leading_again:.1f} s after it"
    )


async def acknowledged(ledger: Ledger, count: int) -> None:
    await eventually(
        lambda: asyncio.sleep(0, len(ledger.acknowledged)),
        lambda n: n >= count,
        what=f"{count} submits acknowledged",
        within=DEADLINE,
    )


async def ticks(ledger: Ledger) -> int:
    (row,) = await ledger.rows(
        "SELECT count(*) AS n FROM taskq_tasks WHERE name = 'chaos.tick' AND state = 'succeeded'"
    )
    return int(row["n"])
