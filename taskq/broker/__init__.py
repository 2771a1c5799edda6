"""Brokers by URL scheme: `memory://` (embedded) and `amqp://` / `amqps://` (RabbitMQ)."""

from __future__ import annotations

from taskq.broker.base import (
    Broker,
    Browsed,
    Delivery,
    EventSubscription,
    QueueStats,
    Subscription,
)
from taskq.config import Settings
from taskq.exceptions import ConfigurationError

__all__ = [
    "Broker",
    "Browsed",
    "Delivery",
    "EventSubscription",
    "QueueStats",
    "Subscription",
    "from_settings",
    "from_url",
]


def from_url(
    url: str,
    *,
    max_priority: int,
    publish_timeout: float,
    namespace: str = "",
    queue_type: str = "classic",
    lanes: tuple[int, ...] = (0,),
) -> Broker:
    """The broker for `url`, not yet connected. (`namespace` prefixes RabbitMQ's names; a
    memory broker belongs to one app already. `queue_type`: RabbitMQ's, for task queues;
    `lanes`: the lowest priority of each lane, where queues have no priorities.)"""
    scheme = url.partition("://")[0]
    if scheme == "memory":
        from taskq.broker.memory import MemoryBroker

        return MemoryBroker(max_priority=max_priority)
    if scheme in ("amqp", "amqps"):
        from taskq.broker.rabbitmq import RabbitMQBroker

        return RabbitMQBroker(
            url,
            max_priority=max_priority,
            publish_timeout=publish_timeout,
            namespace=namespace,
            queue_type=queue_type,
            lanes=lanes,
        )
    raise ConfigurationError(f"broker URL scheme {scheme!r} is not supported (memory, amqp, amqps)")


def from_settings(settings: Settings, *, publish_timeout: float | None = None) -> Broker:
    """The broker of `settings` (its URL, priorities, namespace and queue type), not yet
    connected; `publish_timeout` overrides the settings' (a CLI or a health check)."""
    return from_url(
        settings.broker_url,
        max_priority=settings.max_priority,
        publish_timeout=settings.publish_timeout if publish_timeout is None else publish_timeout,
        namespace=settings.namespace,
        queue_type=settings.queue_type,
        lanes=settings.lane_floors,
    )
