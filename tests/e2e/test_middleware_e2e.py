"""Middleware across real processes: headers a submitting process adds reach the task in a
`taskq worker` subprocess and its row, and a plugin joins that worker by its entry-point
name, never just because it is installed."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import taskq
from taskq.middleware import SubmitNext
from tests.conftest import Backend
from tests.e2e import middleware_app
from tests.e2e.processes import Workers, cli_env, run_cli, sql

APP = "tests.e2e.middleware_app:app"

PLUGIN = '''
import taskq


class Stamp(taskq.Middleware):
    """Wraps every task's value, so that a test sees the plugin ran."""

    async def run(self, ctx, call_next):
        return {"stamped_by": "taskq-test-plugin", "value": await call_next(ctx)}
'''


class Tenant(taskq.Middleware):
    async def submit(self, submission: taskq.Submission, call_next: SubmitNext) -> str:
        submission.headers["tenant"] = "acme"
        return await call_next(submission)


def install_plugin(directory: Path) -> Path:
    """A distribution on `directory` (put it on PYTHONPATH) whose entry point `stamp` in
    the group `taskq.middleware` names `taskq_test_plugin:Stamp`."""
    directory.mkdir()
    (directory / "taskq_test_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = directory / "taskq_test_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: taskq-test-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[taskq.middleware]\nstamp = taskq_test_plugin:Stamp\n")
    return directory


async def test_headers_from_submit_reach_a_worker_process_and_the_row(
    production: Backend, workers: Workers
) -> None:
    # Given a worker process whose app has no middleware
    await workers.start(concurrency=2, app=APP)
    client = production.app(middleware=[Tenant()])
    # (the worker's task, registered under its name on this process's app too)
    headers_seen = client.task(name="mw.headers_seen")(middleware_app.headers_seen.fn)
    async with client:
        # When this process submits through its tenant middleware
        handle = await headers_seen.submit()
        seen = await handle.result(timeout=60)
        record = await handle.info()
    # Then the task, in the worker's process, sees the header, and so does the row
    assert seen["tenant"] == "acme"
    assert record.headers is not None and record.headers["tenant"] == "acme"
    rows = await sql(
        production.store_url,
        f"SELECT headers->>'tenant' AS tenant FROM taskq_tasks WHERE id = '{handle.id}'",
    )
    assert [row["tenant"] for row in rows] == ["acme"]
    # and `taskq status` shows it
    code, shown, err = await run_cli(
        "status", handle.id, env=cli_env(TASKQ_STORE_URL=production.store_url)
    )
    assert code == 0, err
    assert "tenant=acme" in shown


async def test_a_plugin_joins_a_worker_by_its_entry_point_name_only(
    production: Backend, workers: Workers, tmp_path: Path
) -> None:
    plugins = {"PYTHONPATH": str(install_plugin(tmp_path / "plugins"))}
    client = production.app()
    headers_seen = client.task(name="mw.headers_seen")(middleware_app.headers_seen.fn)
    async with client:
        # Given the plugin installed, a worker that does not name it leaves it out
        unnamed = await workers.start(concurrency=1, app=APP, env=plugins)
        assert await (await headers_seen.submit()).result(timeout=60) == {}
        await asyncio.to_thread(unnamed.stop)
        await workers.wait_consumers(0)
        # When a worker names it
        await workers.start(concurrency=1, app=APP, env=plugins, options=["--middleware", "stamp"])
        value = await (await headers_seen.submit()).result(timeout=60)
    # Then the plugin wrapped the task's value there
    assert value == {"stamped_by": "taskq-test-plugin", "value": {}}


async def test_an_unknown_plugin_name_stops_the_worker_with_a_clear_error(
    workers: Workers,
) -> None:
    worker = await workers.spawn(concurrency=1, app=APP, options=["--middleware", "nosuch"])
    code = await asyncio.to_thread(worker.process.wait, 60)
    assert code != 0
    output = worker.output()
    assert "no middleware named 'nosuch'" in output
    assert "Traceback" not in output
