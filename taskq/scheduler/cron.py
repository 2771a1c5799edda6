"""Periodic schedules: cron expressions with a time zone, ticks, and the missed-tick policy.

Every tick has a deterministic idempotency key, so however many schedulers submit it (two
leaders for a moment, a failover, a retry), it becomes one task.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from taskq.exceptions import ConfigurationError

Missed = Literal["latest", "all", "skip"]
MAX_CATCH_UP = 1000  # ticks submitted at most in one pass with missed="all"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Periodic:
    """A task submitted on every tick of `cron` (5 fields, or 6 with seconds last).

    A tick is late, not missed, while it is less than `misfire_grace` seconds old: late
    ticks are all submitted (a leader failover loses none). Ticks older than that, after
    downtime, follow `missed`: "latest" submits only the newest of them (the default),
    "all" submits every one, "skip" submits none.
    """

    name: str
    task: str
    cron: str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    timezone: str = "UTC"
    missed: Missed = "latest"
    misfire_grace: float = 60.0

    def __post_init__(self) -> None:
        if not croniter.is_valid(self.cron):
            raise ConfigurationError(f"periodic task {self.name!r}: invalid cron {self.cron!r}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(
                f"periodic task {self.name!r}: unknown time zone {self.timezone!r}"
            ) from None
        if self.missed not in ("latest", "all", "skip"):
            raise ConfigurationError("missed must be 'latest', 'all' or 'skip'")

    def ticks_after(self, start: datetime, end: datetime) -> list[datetime]:
        """Ticks in (start, end], in UTC."""
        zone = ZoneInfo(self.timezone)
        ticks: list[datetime] = []
        it = croniter(self.cron, start.astimezone(zone))
        while len(ticks) <= MAX_CATCH_UP:
            tick = it.get_next(datetime).astimezone(UTC)
            if tick > end:
                break
            ticks.append(tick)
        return ticks

    def due(self, last_tick: datetime, now: datetime) -> list[datetime]:
        """The ticks to submit now, given the last one submitted."""
        ticks = self.ticks_after(last_tick, now)
        grace = now - timedelta(seconds=self.misfire_grace)
        missed = [t for t in ticks if t < grace]
        late = [t for t in ticks if t >= grace]
        if self.missed == "latest":
            missed = missed[-1:]
        elif self.missed == "skip":
            missed = []
        return missed + late

    def next_after(self, moment: datetime) -> datetime:
        it = croniter(self.cron, moment.astimezone(ZoneInfo(self.timezone)))
        tick: datetime = it.get_next(datetime)
        return tick.astimezone(UTC)


def tick_key(schedule: str, tick: datetime) -> str:
    """The idempotency key of one tick: the same on every scheduler, for ever."""
    return f"periodic:{schedule}:{tick.astimezone(UTC).isoformat()}"
