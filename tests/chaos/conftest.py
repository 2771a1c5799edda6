"""Fixtures of the chaos suite: a private RabbitMQ node and PostgreSQL cluster (faults stop
and restart them, never the machine's shared ones), a fresh vhost and database per
scenario, real `taskq worker` processes, and the table of verdicts printed at the end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from taskq.store.migrations import upgrade_database
from tests.chaos import chaos_app
from tests.chaos.ledger import HEADER, Ledger, Verdict
from tests.e2e.processes import Workers, plain_postgres_url
from tests.servers import PostgresCluster, RabbitNode, running

CHAOS_APP = "tests.chaos.chaos_app:app"
_verdicts: list[Verdict] = []


@pytest.fixture(scope="session")
def chaos_rabbit() -> Iterator[RabbitNode]:
    with running(RabbitNode()) as node:
        yield node


@pytest.fixture(scope="session")
def chaos_rabbit_timeout() -> Iterator[RabbitNode]:
    """A node whose consumer_timeout is 5 s: a delivery unacked that long closes its channel."""
    node = RabbitNode(consumer_timeout_ms=5000)
    node.start()
    # (RabbitMQ checks the timeout on each channel tick: once a second, not once a minute)
    done = node.ctl_sync("eval", "application:set_env(rabbit, channel_tick_interval, 1000).")
    if done.returncode != 0:
        node.stop()
        raise subprocess.SubprocessError(f"rabbitmqctl eval: {done.stderr}")
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def chaos_postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.remove()


@dataclass
class Scene:
    """One scenario's world: its URLs, workers, client app and ledger."""

    broker_url: str
    store_url: str
    rabbit: RabbitNode
    postgres: PostgresCluster
    workers: Workers
    client: chaos_app.ChaosApp
    ledger: Ledger
    full: bool  # --chaos-full: the long forms

    async def start_worker(self, concurrency: int = 8, **options: object) -> object:
        return await self.workers.start(concurrency=concurrency, app=CHAOS_APP, **options)  # type: ignore[arg-type]

    def record(self, verdict: Verdict) -> Verdict:
        _verdicts.append(verdict)
        return verdict


def new_vhost(node: RabbitNode, vhost: str | None = None) -> str:
    node.ensure_running()
    vhost = vhost or f"chaos_{uuid.uuid4().hex[:8]}"
    for args in (("add_vhost", vhost), ("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")):
        done = node.ctl_sync(*args)
        if done.returncode != 0:
            raise subprocess.SubprocessError(f"rabbitmqctl {args}: {done.stderr}")
    return vhost


async def new_database(cluster: PostgresCluster) -> str:
    name = f"chaos_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(plain_postgres_url(cluster.url()), timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return await ledger_database(cluster.url(name))


async def ledger_database(url: str) -> str:
    """The (empty) database at `url` migrated, with the table tasks record their runs in."""
    await upgrade_database(url)
    connection = await asyncpg.connect(plain_postgres_url(url), timeout=10)
    try:
        await connection.execute(chaos_app.EFFECTS_TABLE)
    finally:
        await connection.close()
    return url


@contextlib.asynccontextmanager
async def staged(
    request: pytest.FixtureRequest, node: RabbitNode, cluster: PostgresCluster, workdir: Path
) -> AsyncIterator[Scene]:
    broker_url = f"{node.url}{new_vhost(node)}"
    store_url = await new_database(cluster)
    workers = Workers(amqp_url=broker_url, store_url=store_url, workdir=workdir, ctl=node.ctl)
    client = chaos_app.build(broker_url, store_url)
    ledger = Ledger(request.node.name.removeprefix("test_"), client.app, store_url)
    try:
        async with client.app:
            yield Scene(
                broker_url, store_url, node, cluster, workers, client, ledger,
                full=bool(request.config.getoption("--chaos-full")),
            )  # fmt: skip
    finally:
        await asyncio.to_thread(workers.stop_all)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed scenario's report ends with its RabbitMQ node's log: what a CI run saw."""
    report = yield
    if report.failed and call.when in ("setup", "call"):
        for fixture in ("chaos_rabbit", "chaos_rabbit_timeout"):
            node = getattr(item, "funcargs", {}).get(fixture)
            if isinstance(node, RabbitNode):
                report.sections.append((f"RabbitMQ node {node.name} log (tail)", node.log_tail()))
    return report


@pytest.fixture
async def scene(
    request: pytest.FixtureRequest,
    chaos_rabbit: RabbitNode,
    chaos_postgres: PostgresCluster,
    tmp_path: Path,
) -> AsyncIterator[Scene]:
    async with staged(request, chaos_rabbit, chaos_postgres, tmp_path) as staged_scene:
        yield staged_scene


@pytest.fixture
async def timeout_scene(
    request: pytest.FixtureRequest,
    chaos_rabbit_timeout: RabbitNode,
    chaos_postgres: PostgresCluster,
    tmp_path: Path,
) -> AsyncIterator[Scene]:
    """A scene on the node whose consumer_timeout is 5 s."""
    async with staged(request, chaos_rabbit_timeout, chaos_postgres, tmp_path) as staged_scene:
        yield staged_scene


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _verdicts:
        return
    table = "\n".join([HEADER, *(verdict.row() for verdict in _verdicts)])
    terminalreporter.write_sep("=", "chaos: the ledger of each scenario")
    terminalreporter.write_line(table)
    if path := os.environ.get("TASKQ_CHAOS_TABLE"):
        Path(path).write_text(table + "\n")
