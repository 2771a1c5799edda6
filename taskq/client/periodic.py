"""Periodic schedules: cron expressions with a time zone, ticks, and the missed-tick policy.

Every tick has a deterministic idempotency key, so however many schedulers submit it (two
leaders for a moment, a failover, a retry), it becomes one task.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from taskq.exceptions import ConfigurationError

if TYPE_CHECKING:
    from croniter import croniter

Missed = Literal["latest", "all", "skip"]
MAX_CATCH_UP = 1000  # at most this many (the newest) ticks are submitted in one pass
_JUST_AFTER = timedelta(microseconds=1)  # so a tick exactly at `moment` counts as before it


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Periodic:
    """A task submitted on every tick of `cron` (5 fields, or 6 with seconds last).

    When no scheduler ran for at most `misfire_grace` seconds (a leader failover), every
    tick of the gap is still submitted. After a longer downtime, `missed` decides: "latest"
    submits only the newest missed tick (the default), "all" every one, "skip" none.
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
        if not _croniter().is_valid(self.cron):
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
        """Ticks in (start, end], in UTC; only the newest MAX_CATCH_UP if there are more."""
        zone = ZoneInfo(self.timezone)
        ticks: collections.deque[datetime] = collections.deque(maxlen=MAX_CATCH_UP)
        it = _croniter()(self.cron, start.astimezone(zone))
        while (tick := it.get_next(datetime).astimezone(UTC)) <= end:
            ticks.append(tick)
        return list(ticks)

    def latest_before(self, moment: datetime) -> datetime:
        """The newest tick at or before `moment`, in UTC."""
        it = _croniter()(self.cron, moment.astimezone(ZoneInfo(self.timezone)) + _JUST_AFTER)
        tick: datetime = it.get_prev(datetime)
        return tick.astimezone(UTC)

    def due(self, last_tick: datetime, now: datetime) -> list[datetime]:
        """The ticks in (last_tick, now] to submit now.

        A gap of at most `misfire_grace` (a leader failover, a slow pass) is caught up tick
        by tick. A longer gap is downtime, and `missed` decides.
        """
        if now - last_tick <= timedelta(seconds=self.misfire_grace):
            return self.ticks_after(last_tick, now)
        if self.missed == "latest":
            latest = self.latest_before(now)
            return [latest] if latest > last_tick else []
        if self.missed == "skip":
            return []
        return self.ticks_after(last_tick, now)

    def next_after(self, moment: datetime) -> datetime:
        it = _croniter()(self.cron, moment.astimezone(ZoneInfo(self.timezone)))
        tick: datetime = it.get_next(datetime)
        return tick.astimezone(UTC)


def _croniter() -> type[croniter]:
    """croniter, imported on first use: apps without periodic tasks never load it (and
    dateutil), 0.6 MB in each of their workers."""
    from croniter import croniter

    return croniter


def tick_key(schedule: str, tick: datetime) -> str:
    """The idempotency key of one tick: the same on every scheduler, for ever."""
    return f"periodic:{schedule}:{tick.astimezone(UTC).isoformat()}"
