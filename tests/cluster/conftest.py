"""Fixtures of the cluster stage: a private three-node RabbitMQ cluster (its nodes are
stopped and started by the tests, never the machine's shared node) and a vhost per test."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.servers import RabbitCluster


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    cluster = RabbitCluster(3)
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
