"""Finding tasks: `app.list_tasks()`, `taskq tasks` and `taskq status`."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

import taskq
from tests.conftest import Backend
from tests.integration.client.helpers import (
    DEADLINE,
    Status,
    final_state,
    insert_old_task,
    stored_progress,
    table_rows,
    taskq_cli,
)

# -- list_tasks -------------------------------------------------------------------------------


async def test_list_tasks_filters_by_state_name_and_queue(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="alpha")
    async def alpha() -> None:
        pass

    @app.task(name="beta")
    async def beta() -> None:
        raise ValueError("beta fails")

    async with app:
        # Given tasks in five states, of two names, on two queues
        async with app.worker():
            succeeded = await alpha.submit()
            failed = await beta.submit()
            assert await final_state(succeeded) is Status.SUCCEEDED
            assert await final_state(failed) is Status.FAILED
        queued = await alpha.options(queue="other").submit()
        scheduled = await beta.options(countdown=3600).submit()
        cancelled = await alpha.submit()
        assert await cancelled.cancel() is True

        async def ids(**filters: Any) -> set[str]:
            return {record.id for record in await app.list_tasks(**filters)}

        # Then each filter, and their combination, selects the matching tasks
        assert await ids() == {h.id for h in (succeeded, failed, queued, scheduled, cancelled)}
        assert await ids(state="queued") == {queued.id}
        assert await ids(state=Status.SUCCEEDED) == {succeeded.id}
        assert await ids(state=["failed", Status.CANCELLED]) == {failed.id, cancelled.id}
        assert await ids(state={Status.SCHEDULED}) == {scheduled.id}
        assert await ids(name="beta") == {failed.id, scheduled.id}
        assert await ids(queue="other") == {queued.id}
        assert await ids(name="alpha", state="cancelled", queue="default") == {cancelled.id}
        assert await ids(name="beta", state="queued") == set()
        # And the records are whole rows
        (record,) = await app.list_tasks(state="failed")
        assert record.error is not None and record.error.message == "beta fails"


async def test_list_tasks_since_limit_and_newest_first(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="item")
    async def item(i: int) -> None:
        pass

    async with app:
        # Given a task created an hour ago and three created now, one after another
        old = await insert_old_task(app, "item", age=timedelta(hours=1))
        first = await item.submit(1)
        boundary = datetime.now(UTC)
        newer = [await item.submit(2), await item.submit(3)]

        async def ids(**filters: Any) -> list[str]:
            return [record.id for record in await app.list_tasks(**filters)]

        # Then they are listed newest first, and limit keeps the newest
        newest_first = [newer[1].id, newer[0].id, first.id, old]
        assert await ids() == newest_first
        assert await ids(limit=2) == newest_first[:2]
        # And since (a timedelta back, or an aware datetime) leaves out older tasks
        assert await ids(since=timedelta(minutes=10)) == newest_first[:3]
        assert await ids(since=timedelta(hours=2)) == newest_first
        assert await ids(since=boundary) == newest_first[:2]
        # And a naive datetime is refused: its zone would be a guess
        with pytest.raises(taskq.ConfigurationError, match="timezone-aware"):
            await app.list_tasks(since=datetime.now())
        # And a batch filter must be a UUID
        with pytest.raises(taskq.TaskNotFound, match="batch id"):
            await app.list_tasks(batch="yesterday")


async def test_list_tasks_since_with_an_offset_other_than_utc(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    app = backend.app()

    @app.task(name="now")
    async def now() -> None:
        pass

    async with app:
        handle = await now.submit()
        # An hour ago, written in another zone: the same instant
        an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).astimezone(
            timezone(timedelta(hours=5))
        )
        assert [r.id for r in await app.list_tasks(since=an_hour_ago)] == [handle.id]


# -- CLI: taskq tasks, taskq status -----------------------------------------------------------


async def test_cli_tasks_lists_ids_and_states_as_a_table_and_as_json(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="listed")
    async def listed(i: int) -> int:
        return i

    async with app:
        async with app.worker():
            succeeded = await listed.submit(1)
            await succeeded.result(timeout=DEADLINE)
        queued = await listed.options(queue="other").submit(2)
        scheduled = await listed.options(countdown=3600).submit(3)
    store = ["--store-url", backend.store_url]

    # The table: a row per task, with its id and state
    shown = await taskq_cli("tasks", *store)
    assert shown.exit_code == 0, shown.output
    rows = table_rows(shown.stdout)
    assert {task_id: row[2] for task_id, row in rows.items()} == {
        succeeded.id: "succeeded",
        queued.id: "queued",
        scheduled.id: "scheduled",
    }, shown.stdout
    assert rows[queued.id][:2] == ["listed", "other"]

    # JSON lines, filtered by state (repeatable) and queue
    shown = await taskq_cli("tasks", "--json", "--state", "queued", "--state", "scheduled", *store)
    assert shown.exit_code == 0, shown.output
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert {(line["id"], line["state"]) for line in lines} == {
        (queued.id, "queued"),
        (scheduled.id, "scheduled"),
    }
    shown = await taskq_cli("tasks", "--json", "--queue", "other", "--name", "listed", *store)
    (line,) = [json.loads(text) for text in shown.stdout.splitlines()]
    assert (line["id"], line["queue"], line["name"], line["batch_id"]) == (
        queued.id,
        "other",
        "listed",
        None,
    )
    assert datetime.fromisoformat(line["created_at"]).tzinfo is not None

    # --limit keeps the newest, and says there may be more
    shown = await taskq_cli("tasks", "--limit", "1", *store)
    assert list(table_rows(shown.stdout)) == [scheduled.id]
    assert "--limit shows more" in shown.stdout


async def test_cli_tasks_since_and_batch(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="batched")
    async def batched(i: int) -> None:
        pass

    async with app:
        old = await insert_old_task(app, "batched", age=timedelta(hours=1))
        single = await batched.submit(0)
        batch = await batched.submit_many([(1,), (2,)])
    store = ["--store-url", backend.store_url]

    async def listed(*options: str) -> set[str]:
        shown = await taskq_cli("tasks", "--json", *options, *store)
        assert shown.exit_code == 0, shown.output
        return {json.loads(line)["id"] for line in shown.stdout.splitlines()}

    recent = {single.id, *(h.id for h in batch)}
    assert await listed("--since", "10m") == recent
    assert await listed("--since", "2h") == recent | {old}
    since = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    assert await listed("--since", since) == recent
    assert await listed("--batch", batch.id) == {h.id for h in batch}
    shown = await taskq_cli("tasks", "--json", "--batch", batch.id, *store)
    assert {json.loads(line)["batch_id"] for line in shown.stdout.splitlines()} == {batch.id}


async def test_cli_tasks_refuses_an_invalid_batch_or_since_clearly(backend: Backend) -> None:
    store = ["--store-url", backend.store_url]
    shown = await taskq_cli("tasks", "--batch", "last-night", *store)
    assert shown.exit_code == 1
    assert "--batch 'last-night' is not a batch id" in shown.stderr
    assert "Traceback" not in shown.output
    shown = await taskq_cli("tasks", "--since", "yesterday", *store)
    assert shown.exit_code == 1
    assert "--since 'yesterday' is not a duration" in shown.stderr
    assert "or an ISO 8601 time" in shown.stderr


async def test_cli_tasks_since_an_iso_time_with_an_offset_other_than_utc(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    app = backend.app()

    @app.task(name="now")
    async def now() -> None:
        pass

    async with app:
        handle = await now.submit()
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).astimezone(timezone(timedelta(hours=5)))
    shown = await taskq_cli(
        "tasks", "--json", "--since", an_hour_ago.isoformat(), "--store-url", backend.store_url
    )
    assert shown.exit_code == 0, shown.output
    assert [json.loads(line)["id"] for line in shown.stdout.splitlines()] == [handle.id]


async def test_cli_status_shows_the_progress_of_a_running_task_and_its_batch(
    backend: Backend,
) -> None:
    app = backend.app()
    release = asyncio.Event()

    @app.task(name="import_rows")
    async def import_rows() -> None:
        await taskq.context().progress(0.4, "40 of 100 rows")
        await asyncio.wait_for(release.wait(), DEADLINE)

    async with app, app.worker():
        (handle,) = batch = await import_rows.submit_many([()])
        try:
            await stored_progress(handle, 1)
            shown = await taskq_cli("status", handle.id, "--store-url", backend.store_url)
            table = await taskq_cli("tasks", "--store-url", backend.store_url)
        finally:
            release.set()
        await handle.result(timeout=DEADLINE)
        done = await taskq_cli("status", handle.id, "--store-url", backend.store_url)

    assert shown.exit_code == 0, shown.output
    fields = dict(line.split(None, 1) for line in shown.stdout.splitlines() if line.strip())
    assert fields["state"].strip() == "running"
    assert fields["progress"].strip() == "40% 40 of 100 rows"
    assert fields["batch"].strip() == batch.id
    # And `taskq tasks` shows the progress next to the state
    assert table_rows(table.stdout)[handle.id][2] == "running 40% 40 of 100 rows"
    # And once finished, the progress line is gone (the batch stays)
    assert "progress" not in done.stdout and batch.id in done.stdout
