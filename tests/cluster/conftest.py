"""Fixtures of the cluster stage: a private three-node RabbitMQ cluster (its nodes are
stopped and started by the tests, never the machine's shared node) and a vhost per test;
a private PostgreSQL cluster; worker hosts in network namespaces (tests/netns.py) running
`taskq worker` processes, with the chaos suite's ledger (`hosts_site`)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from pathlib import Path

import pytest

from tests.chaos import chaos_app
from tests.chaos.conftest import new_database
from tests.chaos.ledger import Ledger
from tests.cluster.site import HEARTBEAT, Site
from tests.e2e.processes import Workers
from tests.netns import Host, hosts
from tests.servers import PostgresCluster, RabbitCluster


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    cluster = RabbitCluster(3, listen_all=True)  # (reached from worker hosts too)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_vhost(rabbit_cluster: RabbitCluster) -> str:
    """A new vhost (cluster-wide: made on one node, it exists on all)."""
    for node in rabbit_cluster.nodes:
        node.ensure_running()
    vhost = f"cluster_{uuid.uuid4().hex[:8]}"
    first = rabbit_cluster.nodes[0]
    for args in (("add_vhost", vhost), ("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")):
        done = first.ctl_sync(*args)
        if done.returncode != 0:
            raise subprocess.SubprocessError(f"rabbitmqctl {args}: {done.stderr}")
    return vhost


@pytest.fixture(scope="session")
def cluster_postgres() -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster, reached from the worker hosts too (at their gateways)."""
    cluster = PostgresCluster(listen_all=True)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def worker_hosts() -> Iterator[Sequence[Host]]:
    """Two worker hosts (network namespaces), removed after the test whatever happened."""
    with hosts("host-a", "host-b") as made:
        yield made


@pytest.fixture
async def hosts_site(
    request: pytest.FixtureRequest,
    rabbit_cluster: RabbitCluster,
    cluster_vhost: str,
    cluster_postgres: PostgresCluster,
    worker_hosts: Sequence[Host],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Site]:
    """Quorum queues on the cluster, a database on the private PostgreSQL with the chaos
    suite's effects table, the chaos app and ledger in the test process, and a `Workers` per
    host whose processes reach every server at that host's gateway."""
    monkeypatch.setenv("TASKQ_QUEUE_TYPE", "quorum")  # (the test process's app)
    store_url = await new_database(cluster_postgres)
    database = store_url.rsplit("/", 1)[1]
    per_host = []
    for host in worker_hosts:
        workdir = tmp_path / host.hostname
        workdir.mkdir()
        per_host.append(
            Workers(
                amqp_url=f"{rabbit_cluster.url_via(host.gateway)}{cluster_vhost}"
                f"?heartbeat={HEARTBEAT}",
                store_url=cluster_postgres.url(database, host=host.gateway),
                workdir=workdir,
                prefix=host.prefix,
            )
        )
    client = chaos_app.build(f"{rabbit_cluster.url}{cluster_vhost}", store_url)
    ledger = Ledger(request.node.name.removeprefix("test_"), client.app, store_url)
    site = Site(
        rabbit_cluster, cluster_vhost, store_url, list(worker_hosts), per_host, client, ledger
    )
    request.node.stash[_SITE] = site
    try:
        async with client.app:
            await client.app.declare("default")
            yield site
    finally:
        for workers in per_host:
            await asyncio.to_thread(workers.stop_all)


_SITE = pytest.StashKey[Site]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test on worker hosts ends with its workers' logs: what they saw."""
    report = yield
    site = item.stash.get(_SITE, None)
    if report.failed and call.when in ("setup", "call") and site is not None:
        for host, workers in zip(site.hosts, site.workers, strict=True):
            for title, text in workers.outputs():
                report.sections.append((f"{host.hostname}: {title}", text[-6000:]))
    return report
