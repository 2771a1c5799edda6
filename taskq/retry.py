"""Retry policies, and `Retry`, the exception a task raises to ask for another attempt.

    @app.task(max_retries=5, retry_for=(ConnectionError,), backoff=Backoff.exponential())
    async def fetch(url: str) -> bytes: ...

Retries wait as `scheduled` rows in the store (never in a worker's memory); the leader
publishes each when it is due.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Literal


class Retry(Exception):
    """Raise inside a task to run it again after `delay` seconds (else the task's backoff).

    It counts against the task's `max_retries`; with none left, the task fails.
    """

    def __init__(self, delay: float | None = None, reason: str = "") -> None:
        super().__init__(reason or "the task asked to be retried")
        self.delay = delay


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before retry number n (1, 2, ...).

    `Backoff.fixed(10)`: always 10 s. `Backoff.exponential(base=1, factor=2, max_delay=300)`:
    up to 1, 2, 4, ... s, capped at 300 s, with full jitter (a uniform draw between 0 and
    that bound) unless `jitter=False`, so a burst of failures does not retry in lockstep.
    """

    kind: Literal["fixed", "exponential"]
    base: float
    factor: float = 2.0
    max_delay: float = 300.0
    jitter: bool = True

    @classmethod
    def fixed(cls, delay: float) -> Backoff:
        return cls("fixed", delay, jitter=False)

    @classmethod
    def exponential(
        cls,
        base: float = 1.0,
        *,
        factor: float = 2.0,
        max_delay: float = 300.0,
        jitter: bool = True,
    ) -> Backoff:
        return cls("exponential", base, factor, max_delay, jitter)

    def __post_init__(self) -> None:
        if self.base < 0 or self.max_delay < 0 or self.factor < 1:
            raise ValueError("backoff needs base >= 0, max_delay >= 0 and factor >= 1")

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds before retry number `retry` (1 for the first retry)."""
        if self.kind == "fixed":
            return self.base
        bound = min(self.max_delay, self.base * self.factor ** (retry - 1))
        return (rng or random).uniform(0, bound) if self.jitter else bound


DEFAULT_BACKOFF = Backoff.exponential()
