"""Periodic schedules: which ticks are due after a gap, time zones, tick keys, validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

import taskq
from taskq.client.periodic import MAX_CATCH_UP, Missed, Periodic, tick_key

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
POLICIES: tuple[Missed, ...] = ("latest", "all", "skip")


def schedule(cron: str, **changes: object) -> Periodic:
    return Periodic(name="report", task="report", cron=cron, **changes)  # type: ignore[arg-type]


def seconds(first: datetime, count: int) -> list[datetime]:
    return [first + timedelta(seconds=i) for i in range(count)]


# -- ticks that are late, not missed: a failover or a slow pass loses none -------------------


@pytest.mark.parametrize("missed", POLICIES)
def test_gap_within_grace_returns_every_late_tick(missed: Missed) -> None:
    # Given a schedule every second whose last tick was 10 s ago (grace: 60 s)
    every_second = schedule("* * * * *", seconds="*", missed=missed)
    # When the scheduler asks what is due, then every tick of the gap is, whatever the policy
    assert every_second.due(T0, T0 + timedelta(seconds=10)) == seconds(
        T0 + timedelta(seconds=1), 10
    )


@pytest.mark.parametrize("missed", POLICIES)
def test_gap_within_a_wider_grace_returns_every_late_minute(missed: Missed) -> None:
    every_minute = schedule("* * * * *", missed=missed, misfire_grace=600)
    due = every_minute.due(T0, T0 + timedelta(minutes=5, seconds=20))
    assert due == [T0 + timedelta(minutes=m) for m in range(1, 6)]


def test_nothing_is_due_between_ticks() -> None:
    every_minute = schedule("* * * * *")
    assert every_minute.due(T0, T0 + timedelta(seconds=59)) == []
    assert every_minute.due(T0, T0 + timedelta(seconds=60)) == [T0 + timedelta(minutes=1)]


# -- after downtime longer than the grace, the policy decides -------------------------------


def test_after_downtime_latest_submits_only_the_newest_missed_tick() -> None:
    every_minute = schedule("* * * * *", missed="latest", misfire_grace=60)
    assert every_minute.due(T0, T0 + timedelta(minutes=10, seconds=5)) == [
        T0 + timedelta(minutes=10)
    ]


def test_after_downtime_all_submits_every_missed_tick() -> None:
    every_minute = schedule("* * * * *", missed="all", misfire_grace=60)
    due = every_minute.due(T0, T0 + timedelta(minutes=10, seconds=5))
    assert due == [T0 + timedelta(minutes=m) for m in range(1, 11)]


def test_after_downtime_skip_submits_nothing() -> None:
    every_minute = schedule("* * * * *", missed="skip", misfire_grace=60)
    assert every_minute.due(T0, T0 + timedelta(minutes=10, seconds=5)) == []


def test_the_default_policy_is_latest_with_a_minute_of_grace() -> None:
    every_minute = schedule("* * * * *")
    assert (every_minute.missed, every_minute.misfire_grace) == ("latest", 60.0)


# A gap with more ticks than MAX_CATCH_UP: two hours of a schedule that ticks every second.
LONG_GAP_END = T0 + timedelta(hours=2)


def test_after_a_long_downtime_latest_is_still_the_newest_tick() -> None:
    every_second = schedule("* * * * *", seconds="*", missed="latest")
    assert every_second.due(T0, LONG_GAP_END) == [LONG_GAP_END]


def test_after_a_long_downtime_all_is_capped_to_the_newest_ticks() -> None:
    every_second = schedule("* * * * *", seconds="*", missed="all")
    due = every_second.due(T0, LONG_GAP_END)
    assert len(due) == MAX_CATCH_UP
    assert due == seconds(LONG_GAP_END - timedelta(seconds=MAX_CATCH_UP - 1), MAX_CATCH_UP)


def test_after_a_long_downtime_skip_submits_nothing() -> None:
    every_second = schedule("* * * * *", seconds="*", missed="skip")
    assert every_second.due(T0, LONG_GAP_END) == []


# -- cron fields and time zones -------------------------------------------------------------


def test_a_seconds_field_goes_in_seconds() -> None:
    # seconds="30": every minute, at second 30 (not: at minute 30)
    at_second_30 = schedule("* * * * *", seconds="30")
    assert at_second_30.ticks_after(T0, T0 + timedelta(minutes=2)) == [
        T0 + timedelta(seconds=30),
        T0 + timedelta(seconds=90),
    ]
    every_2_s = schedule("* * * * *", seconds="*/2")
    assert every_2_s.ticks_after(T0, T0 + timedelta(seconds=5)) == [
        T0 + timedelta(seconds=2),
        T0 + timedelta(seconds=4),
    ]


def test_six_fields_are_refused_with_both_readings() -> None:
    # "*/2 * * * * *" means every 2 s with seconds first, and every second of even
    # minutes with seconds last (croniter's reading, which ran it that way before)
    with pytest.raises(taskq.ConfigurationError) as caught:
        schedule("*/2 * * * * *")
    message = str(caught.value)
    assert 'Seconds first (Quartz, most schedulers): cron="* * * * *", seconds="*/2"' in message
    assert 'Seconds last (croniter): cron="*/2 * * * *", seconds="*"' in message


def test_every_ticks_at_multiples_of_the_interval_since_the_epoch() -> None:
    every_30_s = Periodic(name="poll", task="poll", every=timedelta(seconds=30))
    start = T0 + timedelta(seconds=7)
    assert every_30_s.ticks_after(start, start + timedelta(seconds=65)) == [
        T0 + timedelta(seconds=30),
        T0 + timedelta(seconds=60),
    ]
    assert every_30_s.next_ticks(start) == [T0 + timedelta(seconds=s) for s in (30, 60, 90)]
    assert every_30_s.latest_before(start) == T0
    with pytest.raises(taskq.ConfigurationError):
        Periodic(name="poll", task="poll", every=timedelta(milliseconds=1500))
    with pytest.raises(taskq.ConfigurationError):
        Periodic(name="poll", task="poll", cron="* * * * *", every=timedelta(seconds=1))


def test_ticks_after_excludes_start_and_includes_end() -> None:
    every_minute = schedule("* * * * *")
    assert every_minute.ticks_after(T0, T0 + timedelta(minutes=2)) == [
        T0 + timedelta(minutes=1),
        T0 + timedelta(minutes=2),
    ]


def test_daily_in_paris_follows_the_spring_dst_change() -> None:
    # Given 09:30 every day in Paris; on 2026-03-29 clocks go from CET (+1) to CEST (+2)
    daily = schedule("30 9 * * *", timezone="Europe/Paris")
    # Then the UTC instant moves one hour earlier from that day on
    ticks = daily.ticks_after(datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC))
    assert ticks == [
        datetime(2026, 3, 27, 8, 30, tzinfo=UTC),
        datetime(2026, 3, 28, 8, 30, tzinfo=UTC),
        datetime(2026, 3, 29, 7, 30, tzinfo=UTC),
        datetime(2026, 3, 30, 7, 30, tzinfo=UTC),
    ]
    paris = ZoneInfo("Europe/Paris")
    assert {(t.astimezone(paris).hour, t.astimezone(paris).minute) for t in ticks} == {(9, 30)}
    assert all(t.tzinfo is UTC for t in ticks)


def test_daily_in_paris_follows_the_autumn_dst_change() -> None:
    # On 2026-10-25 clocks go from CEST (+2) back to CET (+1)
    daily = schedule("30 9 * * *", timezone="Europe/Paris")
    ticks = daily.ticks_after(
        datetime(2026, 10, 24, tzinfo=UTC), datetime(2026, 10, 27, tzinfo=UTC)
    )
    assert ticks == [
        datetime(2026, 10, 24, 7, 30, tzinfo=UTC),
        datetime(2026, 10, 25, 8, 30, tzinfo=UTC),
        datetime(2026, 10, 26, 8, 30, tzinfo=UTC),
    ]
    assert daily.next_after(datetime(2026, 10, 24, 12, 0, tzinfo=UTC)) == datetime(
        2026, 10, 25, 8, 30, tzinfo=UTC
    )


def test_due_across_the_dst_change_in_paris() -> None:
    daily = schedule("30 9 * * *", timezone="Europe/Paris", misfire_grace=7 * 86400)
    due = daily.due(
        datetime(2026, 3, 28, 9, 0, tzinfo=UTC), datetime(2026, 3, 30, 9, 0, tzinfo=UTC)
    )
    assert due == [
        datetime(2026, 3, 29, 7, 30, tzinfo=UTC),
        datetime(2026, 3, 30, 7, 30, tzinfo=UTC),
    ]


# -- tick keys: the same on every scheduler, for ever -----------------------------------------


def test_tick_key_is_deterministic_and_independent_of_the_time_zone_shown() -> None:
    tick = datetime(2026, 3, 29, 7, 30, tzinfo=UTC)
    in_paris = tick.astimezone(ZoneInfo("Europe/Paris"))
    assert tick_key("report", tick) == tick_key("report", in_paris) == tick_key("report", tick)
    # Pinned: keys written by one version must match the keys of the next one
    assert tick_key("report", tick) == "periodic:report:2026-03-29T07:30:00+00:00"


def test_tick_keys_differ_per_tick_and_per_schedule() -> None:
    ticks = schedule("* * * * *", seconds="*").ticks_after(T0, T0 + timedelta(seconds=5))
    keys = {tick_key("report", t) for t in ticks} | {tick_key("cleanup", t) for t in ticks}
    assert len(keys) == 2 * len(ticks) == 10


def test_two_schedulers_compute_the_same_keys() -> None:
    # Two candidates building the schedule independently (as after a failover)
    first, second = schedule("* * * * *", seconds="*/5"), schedule("* * * * *", seconds="*/5")
    now = T0 + timedelta(seconds=30)
    assert [tick_key("report", t) for t in first.due(T0, now)] == [
        tick_key("report", t) for t in second.due(T0, now)
    ]


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("cron", ["", "every minute", "61 * * * *", "* * * *", "* * 32 * *"])
def test_invalid_cron_is_a_configuration_error(cron: str) -> None:
    with pytest.raises(taskq.ConfigurationError, match="invalid cron"):
        schedule(cron)


def test_unknown_time_zone_is_a_configuration_error() -> None:
    with pytest.raises(taskq.ConfigurationError, match="unknown time zone"):
        schedule("* * * * *", timezone="Europe/Atlantis")


def test_unknown_missed_policy_is_a_configuration_error() -> None:
    with pytest.raises(taskq.ConfigurationError, match="missed"):
        schedule("* * * * *", missed="sometimes")


def test_app_periodic_refuses_an_invalid_cron_and_an_unknown_time_zone() -> None:
    app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:")

    async def job() -> None:
        return None

    with pytest.raises(taskq.ConfigurationError, match="invalid cron"):
        app.periodic(cron="not a cron", name="bad-cron")(job)
    with pytest.raises(taskq.ConfigurationError, match="unknown time zone"):
        app.periodic(cron="* * * * *", timezone="Mars/Olympus", name="bad-zone")(job)
    assert app.schedules == {}
