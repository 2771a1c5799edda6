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
    """A task submitted on every tick of `cron` (five fields, read in `timezone`; with
    `seconds`, a seconds field too) or of `every` (an interval, ticks at whole multiples of
    it since the Unix epoch, so every scheduler agrees on them).

    When no scheduler ran for at most `misfire_grace` seconds (a leader failover), every
    tick of the gap is still submitted. After a longer downtime, `missed` decides: "latest"
    submits only the newest missed tick (the default), "all" every one, "skip" none.
    """

    name: str
    task: str
    cron: str | None = None
    seconds: str | None = None
    every: timedelta | None = None
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    timezone: str = "UTC"
    missed: Missed = "latest"
    misfire_grace: float = 60.0

    def __post_init__(self) -> None:
        where = f"periodic task {self.name!r}"
        if (self.cron is None) == (self.every is None):
            raise ConfigurationError(f"{where}: give cron= or every=, one of the two")
        if self.every is not None:
            if self.seconds is not None:
                raise ConfigurationError(f"{where}: seconds= goes with cron=, not every=")
            if self.every < timedelta(seconds=1) or self.every % timedelta(seconds=1):
                raise ConfigurationError(f"{where}: every= must be whole seconds, at least 1")
        else:
            _check_cron(where, self.cron or "", self.seconds)
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(f"{where}: unknown time zone {self.timezone!r}") from None
        if self.missed not in ("latest", "all", "skip"):
            raise ConfigurationError("missed must be 'latest', 'all' or 'skip'")

    @property
    def spec(self) -> str:
        """How it ticks, as a person would read it: `cron */5 * * * *`, `every 0:00:30`."""
        if self.every is not None:
            return f"every {self.every}"
        return f"cron {self.cron}" + ("" if self.seconds is None else f", seconds {self.seconds}")

    def ticks_after(self, start: datetime, end: datetime) -> list[datetime]:
        """Ticks in (start, end], in UTC; only the newest MAX_CATCH_UP if there are more."""
        ticks: collections.deque[datetime] = collections.deque(maxlen=MAX_CATCH_UP)
        if self.every is not None:
            tick = self.next_after(max(start, end - self.every * MAX_CATCH_UP))
            while tick <= end:
                ticks.append(tick)
                tick += self.every
            return list(ticks)
        it = self._iterator(start)
        while (tick := it.get_next(datetime).astimezone(UTC)) <= end:
            ticks.append(tick)
        return list(ticks)

    def latest_before(self, moment: datetime) -> datetime:
        """The newest tick at or before `moment`, in UTC."""
        if self.every is not None:
            return _EPOCH + (moment.astimezone(UTC) - _EPOCH) // self.every * self.every
        tick: datetime = self._iterator(moment + _JUST_AFTER).get_prev(datetime)
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
        """The first tick after `moment`, in UTC."""
        if self.every is not None:
            return self.latest_before(moment) + self.every
        tick: datetime = self._iterator(moment).get_next(datetime)
        return tick.astimezone(UTC)

    def next_ticks(self, moment: datetime, count: int = 3) -> list[datetime]:
        ticks = [self.next_after(moment)]
        while len(ticks) < count:
            ticks.append(self.next_after(ticks[-1]))
        return ticks

    def _iterator(self, start: datetime) -> Any:
        """croniter over the expression (croniter puts a seconds field last)."""
        expression = f"{self.cron}" if self.seconds is None else f"{self.cron} {self.seconds}"
        return _croniter()(expression, start.astimezone(ZoneInfo(self.timezone)))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _check_cron(where: str, cron: str, seconds: str | None) -> None:
    fields = cron.split()
    if len(fields) == 6 and seconds is None:
        first = f'cron="{" ".join(fields[1:])}", seconds="{fields[0]}"'
        last = f'cron="{" ".join(fields[:5])}", seconds="{fields[5]}"'
        raise ConfigurationError(
            f"{where}: cron {cron!r} has six fields, and schedulers disagree on where the "
            f"seconds go. Seconds first (Quartz, most schedulers): {first}. Seconds last "
            f"(croniter): {last}. Write the one you mean: five fields, and seconds= apart"
        )
    if len(fields) != 5 and not (len(fields) == 1 and cron.startswith("@")):  # (@daily, ...)
        raise ConfigurationError(
            f"{where}: invalid cron {cron!r}: it must have five fields (minute hour day month "
            "weekday); a seconds field goes in seconds="
        )
    expression = cron if seconds is None else f"{cron} {seconds}"
    if (seconds is not None and len(seconds.split()) != 1) or not _croniter().is_valid(expression):
        shown = cron if seconds is None else f"{cron!r} with seconds {seconds!r}"
        raise ConfigurationError(f"{where}: invalid cron {shown}")


def _croniter() -> type[croniter]:
    """croniter, imported on first use: apps without periodic tasks never load it (and
    dateutil), 0.6 MB in each of their workers."""
    from croniter import croniter

    return croniter


def tick_key(schedule: str, tick: datetime) -> str:
    """The idempotency key of one tick: the same on every scheduler, for ever."""
    return f"periodic:{schedule}:{tick.astimezone(UTC).isoformat()}"
