"""Broker URLs naming several RabbitMQ nodes: one URL per node, sharing the rest."""

from __future__ import annotations

import pytest

import taskq
from taskq.broker.nodes import hosts_of, joined, node_urls


def test_a_url_with_one_host_is_left_as_it_is() -> None:
    url = "amqp://guest:guest@127.0.0.1:5672/"
    assert node_urls(url) == [url]
    assert hosts_of(url) == "127.0.0.1:5672"


def test_each_node_shares_the_user_vhost_and_query_and_gets_the_schemes_default_port() -> None:
    assert node_urls("amqp://u:p@h1,h2:5673,h3/billing?heartbeat=5") == [
        "amqp://u:p@h1:5672/billing?heartbeat=5",
        "amqp://u:p@h2:5673/billing?heartbeat=5",
        "amqp://u:p@h3:5672/billing?heartbeat=5",
    ]
    assert node_urls("amqps://h1,h2/") == ["amqps://h1:5671/", "amqps://h2:5671/"]
    assert node_urls("amqp://h1,h2?heartbeat=5") == [
        "amqp://h1:5672?heartbeat=5",
        "amqp://h2:5672?heartbeat=5",
    ]


def test_the_hosts_named_in_messages_carry_no_password() -> None:
    assert hosts_of("amqp://u:hunter2@h1,h2:5673/v") == "h1:5672,h2:5673"


def test_an_empty_host_between_commas_is_refused() -> None:
    with pytest.raises(ValueError, match="empty host"):
        node_urls("amqp://u:p@h1,,h2/")


def test_a_list_of_node_urls_is_one_url_naming_every_node() -> None:
    app = taskq.App(
        ["amqp://u:pw@rabbit1/prod", "amqp://u:pw@rabbit2:5673/prod"], "sqlite+aiosqlite://"
    )
    assert app.settings.broker_url == "amqp://u:pw@rabbit1,rabbit2:5673/prod"
    assert node_urls(app.settings.broker_url) == [
        "amqp://u:pw@rabbit1:5672/prod",
        "amqp://u:pw@rabbit2:5673/prod",
    ]


def test_node_urls_that_differ_in_more_than_the_host_are_refused_without_the_password() -> None:
    with pytest.raises(taskq.ConfigurationError) as caught:
        joined(["amqp://u:s3cret@rabbit1/prod", "amqp://u:s3cret@rabbit2/staging"])
    assert "differ only in host and port" in str(caught.value)
    assert "s3cret" not in str(caught.value)
