"""Per-submit settings: what a task's decorator sets and `task.options(...)` overrides."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from taskq.client.limits import ConcurrencyLimit, Quota, RateLimit
from taskq.retry import DEFAULT_BACKOFF, Backoff

UNSET: Any = object()  # "not given" in `options(...)`, where None is a value


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TaskOptions:
    """Per-submit settings; a task's decorator gives the defaults."""

    queue: str = "default"
    priority: int = 0
    timeout: float | None = None
    countdown: float | None = None
    eta: datetime | None = None
    idempotency_key: str | None = None
    expires: float | datetime | None = None
    max_retries: int = 0
    retry_for: tuple[type[BaseException], ...] = (Exception,)
    backoff: Backoff = DEFAULT_BACKOFF
    max_deliveries: int = 5
    # Return from submit() only once RabbitMQ confirmed the message (else PublishError);
    # by default a message RabbitMQ cannot take now is left to the leader to publish.
    confirm_publish: bool = False
    # A caller's AsyncConnection or AsyncSession: the task is written in its transaction.
    transaction: Any = None
    # Flow control (`taskq.client.limits`), and the tags a worker must have to run it.
    rate_limit: RateLimit | None = None
    concurrency_limit: ConcurrencyLimit | None = None
    quota: Quota | None = None
    tags: frozenset[str] = frozenset()

    def merged(self, **changes: Any) -> TaskOptions:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not UNSET})
