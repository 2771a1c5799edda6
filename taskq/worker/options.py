"""How a worker runs: one frozen value shared by `taskq worker`, `app.worker()` and `Worker`."""

from __future__ import annotations

import dataclasses

from taskq.broker import topology
from taskq.exceptions import ConfigurationError


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOptions:
    """A worker's settings, checked when made (a bad value is a `ConfigurationError`).

    `queues` None: every queue the app's tasks use. `shutdown_timeout` None: wait for running
    tasks without limit. `max_tasks` / `max_memory` (bytes): the worker stops itself past
    them, for its supervisor to replace. `health_port`: serve `/healthz` and `/readyz`.
    `blocked_threshold`: seconds the event loop may stay blocked before the watchdog logs the
    task to blame. `hard_time_limit` (seconds the loop may stay blocked) and `memory_limit`
    (bytes of resident memory): past them the worker process ends, charging the task to
    blame (see `taskq.worker.limits`). `observe_queues`: keep the queue-depth gauges up to
    date (metrics on). `tags`: the worker also runs tasks with those tags (each of its
    queues with every subset of them; at most 6, `taskq.broker.topology.queues_for`).
    """

    concurrency: int = 10
    queues: tuple[str, ...] | None = None
    scheduler: bool = True
    shutdown_timeout: float | None = None
    max_tasks: int | None = None
    max_memory: int | None = None
    health_port: int | None = None
    health_host: str = "127.0.0.1"
    blocked_threshold: float = 1.0
    hard_time_limit: float | None = None
    memory_limit: int | None = None
    observe_queues: bool = False
    tags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int):
            raise ConfigurationError(f"concurrency must be an int, not {self.concurrency!r}")
        if self.concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, not {self.concurrency}")
        if self.queues is not None:
            if isinstance(self.queues, str):
                raise ConfigurationError("queues must be a sequence of names, not one string")
            queues = tuple(self.queues)
            if not queues:
                raise ConfigurationError("queues must name at least one queue (or be None)")
            for queue in queues:
                topology.validate_queue_name(queue)
            object.__setattr__(self, "queues", queues)  # (a list given becomes a tuple)
        self._check_tags()
        _at_least("shutdown_timeout", self.shutdown_timeout, 0)
        _at_least("max_tasks", self.max_tasks, 1)
        _at_least("max_memory", self.max_memory, 1)
        _at_least("blocked_threshold", self.blocked_threshold, 0.001)
        _at_least("hard_time_limit", self.hard_time_limit, 0.5)
        _at_least("memory_limit", self.memory_limit, 1)
        if self.health_port is not None and not 0 <= self.health_port <= 65535:
            raise ConfigurationError(f"health_port must be 0 to 65535, not {self.health_port}")

    def _check_tags(self) -> None:
        """Tags are names (any iterable of them, kept as a frozenset), at most 6, and with
        the queues given they make names within the limit."""
        tags = topology.checked_tags(self.tags)
        object.__setattr__(self, "tags", tags)
        topology.queues_for(self.queues or ("default",), tags)  # (ConfigurationError if not)

    def replace(self, **changes: object) -> WorkerOptions:
        """A copy with `changes` (those given as None are left as they are)."""
        given = {name: value for name, value in changes.items() if value is not None}
        return dataclasses.replace(self, **given)  # type: ignore[arg-type]


def _at_least(name: str, value: float | None, least: float) -> None:
    if value is not None and value < least:
        raise ConfigurationError(f"{name} must be at least {least:g}, not {value}")
