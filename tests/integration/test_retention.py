"""Retention run by the leader, on the embedded default and in production: finished tasks
older than TASKQ_RETENTION (or their task's own `retention=`) are deleted, others kept; and
`taskq prune` by hand."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner, Result

import taskq
from taskq.cli import app as cli
from taskq.exceptions import ConfigurationError
from tests.conftest import Backend
from tests.support import eventually

DAY = timedelta(days=1)


async def backdate(store_url: str, ids: list[str], age: timedelta) -> None:
    """Make finished rows look as if they were made and finished `age` ago."""
    from taskq.store.tables import tasks

    moment = datetime.now(UTC) - age
    engine = create_async_engine(store_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                update(tasks)
                .where(tasks.c.id.in_(ids))
                .values(created_at=moment, finished_at=moment)
            )
    finally:
        await engine.dispose()


async def existing(app: taskq.App, ids: list[str]) -> set[str]:
    return set(await app.store.get_tasks(ids))


async def test_the_leader_deletes_finished_tasks_past_their_retention(backend: Backend) -> None:
    # Given an app keeping tasks 30 days, a tick task keeping 1 day, an archive task for ever
    app = backend.app(retention="30d")

    @app.task(name="work")
    async def work() -> None:
        pass

    @app.task(name="tick", retention=timedelta(days=1))
    async def tick() -> None:
        pass

    @app.task(name="archive", retention="off")
    async def archive() -> None:
        pass

    async with app:
        # And finished tasks of each, some 40 days old, some 2 days old
        async with app.worker(concurrency=4, scheduler=False):
            handles = {
                (task.name, age): [await task.submit() for _ in range(3)]
                for task in (work, tick, archive)
                for age in (40, 2)
            }
            await app.gather([h for group in handles.values() for h in group], timeout=20)
        ids = {key: [h.id for h in group] for key, group in handles.items()}
        for (_, age), group in ids.items():
            await backdate(backend.store_url, group, age * DAY)
        # And one waiting task as old as the oldest
        waiting = await work.options(countdown=3600).submit()
        await backdate(backend.store_url, [waiting.id], 40 * DAY)

        # When a worker leads
        async with app.worker(concurrency=1, scheduler=True):
            gone = ids["work", 40] + ids["tick", 40] + ids["tick", 2]
            await eventually(
                lambda: existing(app, gone), lambda found: not found, what="pruned rows left"
            )

        # Then the rows past their retention are gone, and every other row stays
        kept = ids["work", 2] + ids["archive", 40] + ids["archive", 2] + [waiting.id]
        assert await existing(app, kept) == set(kept)
        assert await waiting.status() is taskq.TaskStatus.SCHEDULED


def test_retention_is_checked_when_declared() -> None:
    app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:")
    with pytest.raises(ConfigurationError, match="retention"):
        app.task(name="bad", retention="soon")(lambda: None)
    with pytest.raises(ConfigurationError, match="at least a minute"):
        app.task(name="short", retention="10s")(lambda: None)
    with pytest.raises(ConfigurationError, match="TASKQ_RETENTION"):
        taskq.App("memory://", "sqlite+aiosqlite:///:memory:", retention="a month")


async def test_taskq_prune_counts_then_deletes_only_old_finished_tasks(backend: Backend) -> None:
    # Given finished tasks 10 days old and 1 day old
    app = backend.app(retention="off")

    @app.task(name="work")
    async def work() -> None:
        pass

    async with app:
        async with app.worker(concurrency=4, scheduler=False):
            old = [await work.submit() for _ in range(4)]
            new = [await work.submit() for _ in range(2)]
            await app.gather(old + new, timeout=20)
        await backdate(backend.store_url, [h.id for h in old], 10 * DAY)
        await backdate(backend.store_url, [h.id for h in new], 1 * DAY)

        def taskq_prune(*args: str) -> Result:  # (the command runs its own event loop)
            env = {"TASKQ_STORE_URL": backend.store_url}
            return CliRunner().invoke(cli, ["prune", *args], env=env)

        # When `taskq prune --older-than 7d --dry-run` runs, then without --dry-run
        dry = await asyncio.to_thread(taskq_prune, "--older-than", "7d", "--dry-run")
        real = await asyncio.to_thread(taskq_prune, "--older-than", "7d")
        bad = await asyncio.to_thread(taskq_prune, "--older-than", "a week")

        # Then the dry run counts 4 and deletes nothing; the real one deletes those 4
        assert dry.exit_code == 0, dry.output
        assert "would delete 4 finished tasks" in dry.output
        assert real.exit_code == 0, real.output
        assert "deleted 4 finished tasks" in real.output
        assert await existing(app, [h.id for h in old]) == set()
        assert await existing(app, [h.id for h in new]) == {h.id for h in new}
        # And a bad period is one clear line
        assert bad.exit_code == 1
        assert "'a week' is not a duration" in bad.output
