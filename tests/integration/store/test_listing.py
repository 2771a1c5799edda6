"""Reads for people, on both dialects: tasks a page at a time by key (ties in created_at
included), the overview's summary, and the schedules as the leader describes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from taskq.status import TaskStatus
from taskq.store import PageMark, Store
from taskq.store.tables import tasks
from tests.integration.store.test_operations import CREATED, new_task


async def test_pages_by_key_return_every_task_once_newest_first_even_with_ties(
    store: Store,
) -> None:
    # Given 9 tasks, three of them created at the very same moment each
    made = [new_task(created_at=CREATED + timedelta(seconds=n // 3)) for n in range(9)]
    for task in made:
        await store.insert_task(task)

    # When they are read 2 at a time, each page after the last one's mark
    seen: list[str] = []
    after = None
    while page := await store.find_tasks(limit=2, after=after):
        seen += [record.id for record in page]
        after = PageMark(page[-1].created_at, page[-1].id)

    # Then each comes once, newest first, ties by id (descending)
    expected = sorted(made, key=lambda task: (task.created_at, task.id), reverse=True)
    assert seen == [task.id for task in expected]
    assert PageMark.parse(str(after)) == after


async def test_the_summary_counts_unfinished_tasks_and_those_of_the_hour(store: Store) -> None:
    now = datetime.now(UTC)
    old = new_task(TaskStatus.SUCCEEDED, created_at=now - timedelta(days=2))
    done = [new_task(TaskStatus.SUCCEEDED, created_at=now - timedelta(minutes=5)) for _ in range(3)]
    failed = new_task(TaskStatus.FAILED, queue="other", created_at=now - timedelta(minutes=5))
    waiting = new_task(TaskStatus.QUEUED, created_at=now - timedelta(days=3))
    for task in (old, *done, failed, waiting):
        await store.insert_task(task)
    finished_at = (now - timedelta(minutes=2)).replace(second=30)
    finished = update(tasks).where(tasks.c.state.in_(["succeeded", "failed"]))
    await store._run(lambda conn: conn.execute(finished.values(finished_at=finished_at)))

    summary = await store.summarise(now - timedelta(hours=1))

    assert summary.counts == {"default": {"succeeded": 3, "queued": 1}, "other": {"failed": 1}}
    minute = finished_at.replace(second=0, microsecond=0)
    assert sorted(summary.per_minute) == [(minute, "failed", 1), (minute, "succeeded", 3)]


async def test_a_schedule_is_described_and_its_last_tick_only_moves_on(store: Store) -> None:
    await store.record_tick("hourly", CREATED)
    [seen] = await store.list_schedules()
    assert (seen.name, seen.task, seen.ticked_at) == ("hourly", None, None)

    describe = {"task": "app.tick", "spec": "every 1:00:00", "timezone": "UTC"}
    await store.describe_schedule("hourly", **describe, next_tick=CREATED, ticked_at=CREATED)
    await store.describe_schedule(
        "hourly", **describe, next_tick=CREATED + timedelta(hours=1), ticked_at=None
    )
    [seen] = await store.list_schedules()
    assert (seen.task, seen.spec, seen.timezone) == ("app.tick", "every 1:00:00", "UTC")
    assert (seen.next_tick, seen.ticked_at) == (CREATED + timedelta(hours=1), CREATED)
