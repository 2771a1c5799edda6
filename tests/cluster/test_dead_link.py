"""A worker host whose link to PostgreSQL dies while a statement is in flight: the
statement fails in bounded time (TCP keepalive and TCP_USER_TIMEOUT on taskq's connections,
`taskq.store.engine.DEAD_LINK_AFTER`), where without them it waits for a reply that never
comes, for ever."""

from __future__ import annotations

import asyncio
import sys
import time

import asyncpg

from tests.e2e.processes import REPO_ROOT, cli_env, plain_postgres_url
from tests.netns import hosts
from tests.servers import PostgresCluster
from tests.support import eventually

BOUND = 15.0  # the shortened bound (3 s) plus the 2 s statement, with room for a slow CI


async def test_a_statement_whose_reply_is_lost_fails_in_bounded_time(
    cluster_postgres: PostgresCluster,
) -> None:
    with hosts("host-d") as (host,):
        # Given a store connection from a worker host, in a statement of 2 s
        client = await asyncio.create_subprocess_exec(
            *host.prefix,
            sys.executable,
            "-m",
            "tests.cluster.dead_link_client",
            cluster_postgres.url(host=host.gateway),
            cwd=REPO_ROOT,
            env=cli_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            assert client.stdout is not None
            async with asyncio.timeout(BOUND):
                first = (await client.stdout.readline()).decode()
            assert first.strip() == "sent", first
            await eventually(
                lambda: running_sleeps(cluster_postgres, host.address),
                what="the statement running on the server",
            )
            # When the host's link goes down before the reply comes (and stays down)
            host.link_down()
            cut = time.monotonic()
            # Then the statement fails within the bound, not when the link comes back
            async with asyncio.timeout(BOUND):
                rest = (await client.stdout.read()).decode()
                code = await client.wait()
            ended = time.monotonic() - cut
        finally:
            if client.returncode is None:
                client.kill()
                await client.wait()
    assert code == 0 and rest.startswith("failed after"), rest
    print(f"\nstore statement on a dead link: {rest.strip()} ({ended:.1f} s after the cut)")


async def running_sleeps(cluster: PostgresCluster, address: str) -> bool:
    connection = await asyncpg.connect(plain_postgres_url(cluster.url()), timeout=10)
    try:
        found = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE client_addr = $1::inet "
            "AND state = 'active' AND query LIKE 'SELECT pg_sleep%'",
            address,
        )
    finally:
        await connection.close()
    return bool(found)
