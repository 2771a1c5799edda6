"""A broker URL that names several RabbitMQ nodes: `amqp://user:pw@host1,host2:5673/vhost`.

A cluster's clients must not depend on one node. The URL's hosts share its user, password,
vhost and query; the first that answers is used, and when the connection drops, every
reconnection attempt goes to the next node in turn (`FailoverConnection`), so a producer or
a worker follows the cluster rather than waiting for the node it first met.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika import RobustConnection
from aio_pika.abc import AbstractRobustConnection
from aio_pika.connection import make_url
from yarl import URL

from taskq.config import redact_url, url_host
from taskq.exceptions import ConfigurationError

DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}


def node_urls(url: str) -> list[str]:
    """One URL per node named in `url`, in its order (a single-node URL: itself)."""
    scheme, userinfo, hosts, tail = _split(url)
    if "://" not in url or "," not in hosts:
        return [url]
    default_port = DEFAULT_PORTS.get(scheme, 5672)
    urls = []
    for host in hosts.split(","):
        host = host.strip()
        if not host:
            raise ValueError("the broker URL names an empty host between commas")
        if not host.endswith("]") and ":" in host:  # (host:port; an IPv6 literal is [..])
            address = host
        else:
            address = f"{host}:{default_port}"
        urls.append(f"{scheme}://{userinfo}{address}{tail}")
    return urls


def joined(urls: Sequence[str]) -> str:
    """Node URLs given as a list, as one URL naming every node: they must differ only in
    their host and port (a cluster's nodes share the user, password, vhost and query)."""
    if isinstance(urls, str) or not urls:
        raise ConfigurationError("give the broker's nodes as a list of URLs, at least one")
    parts = [_split(url) for url in urls]
    if len({(scheme, userinfo, tail) for scheme, userinfo, _, tail in parts}) > 1:
        raise ConfigurationError(
            f"the broker URLs {', '.join(redact_url(url) for url in urls)} name one cluster's "
            "nodes, so they must differ only in host and port (same user, password, vhost "
            "and query)"
        )
    scheme, userinfo, _, tail = parts[0]
    return f"{scheme}://{userinfo}{','.join(host for _, _, host, _ in parts)}{tail}"


def _split(url: str) -> tuple[str, str, str, str]:
    """(scheme, "user:pw@" or "", its host[:port] list, "/vhost?query")"""
    scheme, _, rest = url.partition("://")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    userinfo, at, host = rest[:end].rpartition("@")
    return scheme, userinfo + at, host, rest[end:]


def hosts_of(url: str) -> str:
    """The URL's `host:port` list, comma-separated, for messages that name the broker."""
    return ",".join(url_host(node) for node in node_urls(url))


class FailoverConnection(RobustConnection):
    """aio-pika's robust connection, but each attempt to (re)connect goes to the next of
    `nodes`. aio-pika sets `transport` to None at the start of every attempt: that is where
    the next node is chosen (tests/unit/test_pinned_contracts.py pins it)."""

    nodes: tuple[URL, ...] = ()
    _turn = 0

    @property
    def transport(self) -> Any:
        return self.__dict__.get("_transport")

    @transport.setter
    def transport(self, value: Any) -> None:
        if value is None and self.nodes:
            self.url = self.nodes[self._turn % len(self.nodes)]
            self._turn += 1
        self.__dict__["_transport"] = value


async def connect(
    urls: Sequence[str],
    *,
    timeout: float,  # noqa: ASYNC109 (per attempt, as aio-pika takes it)
    reconnect_interval: float,
    client_properties: dict[str, Any],
) -> AbstractRobustConnection:
    """A robust connection to the first of `urls` that answers, tried in order (one URL:
    aio-pika's own). → connected; else the last node's error is raised."""
    if len(urls) == 1:
        return await aio_pika.connect_robust(
            urls[0],
            timeout=timeout,
            reconnect_interval=reconnect_interval,
            client_properties=client_properties,
        )
    last: BaseException | None = None
    for first in range(len(urls)):
        ordered = [*urls[first:], *urls[:first]]
        nodes = tuple(make_url(node, reconnect_interval=reconnect_interval) for node in ordered)
        connection = FailoverConnection(nodes[0], client_properties=client_properties)
        connection.nodes = nodes
        try:
            await connection.connect(timeout=timeout)
        except Exception as exc:  # (this node is down: the next one)
            last = exc
            await connection.close()
            continue
        return connection
    assert last is not None
    raise last
