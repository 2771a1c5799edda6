"""`taskq status` and `taskq cancel` take a task id's first characters where they name one
task, and `taskq status --json` prints the row (issue 23, first run); both backends."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from typer.testing import CliRunner

from taskq.cli import app as cli
from taskq.store import NewTask
from tests.conftest import Backend


def invoke(*argv: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(argv))
    return result.exit_code, result.output


async def test_a_unique_prefix_names_its_task_and_an_ambiguous_one_says_so(
    backend: Backend,
) -> None:
    # Given stored tasks, two of them with ids that share their first 8 characters
    app = backend.app()

    @app.task(name="ids.noop")
    async def noop() -> None:
        pass

    async with app:
        handle = await noop.submit()
        twins = [f"abcdef01-0000-4000-8000-00000000000{n}" for n in (1, 2)]
        for twin in twins:
            await app.store.insert_task(_row(twin))
        found = await app.store.ids_starting_with(handle.id[:8])
    assert found == [handle.id]
    # When `taskq status` is given a unique prefix, with --json
    code, output = await asyncio.to_thread(
        invoke, "status", handle.id[:8], "--json", "--store-url", backend.store_url
    )
    # Then it prints that task's row
    assert code == 0, output
    shown = json.loads(output)
    assert (shown["id"], shown["name"], shown["state"]) == (handle.id, "ids.noop", "queued")
    # And a prefix two ids share, or one too short, is refused with a reason
    code, output = await asyncio.to_thread(
        invoke, "status", "abcdef01", "--store-url", backend.store_url
    )
    assert code == 1 and "starts several task ids" in output, output
    code, output = await asyncio.to_thread(
        invoke, "status", "abc", "--store-url", backend.store_url
    )
    assert code == 1 and "too short" in output, output


def _row(task_id: str) -> NewTask:
    return NewTask(
        id=task_id, name="ids.noop", queue="default", priority=0, args=[], kwargs={},
        timeout=None, created_at=datetime.now(UTC),
    )  # fmt: skip
