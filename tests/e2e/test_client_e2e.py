"""The client API across real processes: task events watched from another process, the
transactional submit (commit, rollback, a submitter killed right after its commit), and a
`submit_many` batch found again with `taskq tasks --batch`.

RabbitMQ + PostgreSQL only (a fresh vhost and database per test), with `taskq worker
tests.e2e.client_app:app` subprocesses. Every wait is on a process's output or exit, the
database, or a task's result, each with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import taskq
from tests.conftest import Backend
from tests.e2e import client_app
from tests.e2e.processes import (
    REPO_ROOT,
    Workers,
    cli_env,
    json_values,
    rabbitmqctl,
    run_cli,
    sql,
    wait_until,
)

CLIENT_APP = "tests.e2e.client_app:app"
CLIENT = (sys.executable, "-m", "tests.e2e.client_api_process")
STEPS = 10


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def start_client(*argv: str, production: Backend) -> asyncio.subprocess.Process:
    """A `tests.e2e.client_api_process` subprocess on the test's broker and store."""
    return await asyncio.create_subprocess_exec(
        *CLIENT,
        *argv,
        cwd=REPO_ROOT,
        env=cli_env(TASKQ_BROKER_URL=production.broker_url, TASKQ_STORE_URL=production.store_url),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def first_line(process: asyncio.subprocess.Process, *, within: float = 30) -> str:
    """The client's first line of output; fail (with its stderr) if it exits or is silent."""
    assert process.stdout is not None and process.stderr is not None
    try:
        async with asyncio.timeout(within):
            line = await process.stdout.readline()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"client {process.pid} printed nothing within {within} s") from None
    if not line:
        err = await process.stderr.read()
        await process.wait()
        raise AssertionError(f"client exited {process.returncode} silently:\n{err.decode()}")
    return line.decode().rstrip("\n")


async def finish(process: asyncio.subprocess.Process, *, expect: int = 0, limit: float = 30) -> str:
    """Wait for a client to exit with `expect`; → the rest of its stdout."""
    try:
        async with asyncio.timeout(limit):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"client {process.pid} did not finish within {limit} s") from None
    assert process.returncode == expect, (
        f"client exited {process.returncode}, not {expect}:\n{err.decode()}"
    )
    return out.decode()


async def messages_by_queue(vhost: str) -> dict[str, int]:
    """Messages (ready + unacknowledged) in each queue of `vhost`, as RabbitMQ counts them."""
    output = await rabbitmqctl("list_queues", "-p", vhost, "--no-table-headers", "name", "messages")
    rows = (line.split() for line in output.splitlines() if line.strip())
    return {name: int(count) for name, count in rows}


@pytest.fixture
async def engine(production: Backend) -> AsyncIterator[AsyncEngine]:
    """The application's own engine on the store's database, with a table of its own: the
    transactional submits write a task in the same transaction as an order row."""
    created = create_async_engine(production.store_url)
    async with created.begin() as conn:
        await conn.execute(text("CREATE TABLE e2e_orders (label text PRIMARY KEY)"))
    try:
        yield created
    finally:
        await created.dispose()


async def order_labels(production: Backend) -> list[str]:
    return [row["label"] for row in await sql(production.store_url, "SELECT label FROM e2e_orders")]


def event(kind: str, state: str, attempt: int, **fields: Any) -> dict[str, Any]:
    """One line as `client_api_process watch` prints it (unset fields at their defaults)."""
    line: dict[str, Any] = {"progress": None, "message": None, "data": {}, "seq": 0}
    return {"kind": kind, "state": state, "attempt": attempt, **line, **fields}


# -- must-show 1: handle.events() in another process ----------------------------------------


async def test_events_watched_from_another_process_show_every_state_and_progress_in_order(
    production: Backend, workers: Workers
) -> None:
    e2e = client_app.build(production.broker_url, production.store_url)
    async with e2e.app:
        # Given a task that reports progress 10 times, queued while no worker runs
        handle = await e2e.report.submit(STEPS)

        # And another process watching it with handle.events(): its first line (the state
        # the store had) means it is subscribed, before anything can run the task
        watcher = await start_client("watch", handle.id, production=production)
        ready = await first_line(watcher)

        # When a worker starts and runs the task
        await workers.start(concurrency=2, app=CLIENT_APP)

        # Then the watcher saw queued, running, each progress update in order, succeeded
        # last, and then its iterator ended (it exited 0)
        rest = await finish(watcher)
        assert await handle.result(timeout=15) == f"reported {STEPS}"
    seen = [json.loads(line) for line in [ready, *rest.splitlines()]]
    progress = [
        event(
            "progress",
            "running",
            1,
            progress=step / STEPS,
            message=f"step {step} of {STEPS}",
            data={"step": step},
            seq=step,
        )
        for step in range(1, STEPS + 1)
    ]
    assert seen == [
        event("state", "queued", 0),
        event("state", "running", 1),
        *progress,
        event("state", "succeeded", 1),
    ]


# -- must-show 2: transactional submit -------------------------------------------------------


async def test_task_submitted_in_a_committed_transaction_runs(
    production: Backend, workers: Workers, engine: AsyncEngine
) -> None:
    # Given a running worker (which leads, so it publishes committed transactional tasks)
    e2e = client_app.build(production.broker_url, production.store_url)
    await workers.start(concurrency=2, app=CLIENT_APP)
    async with e2e.app:
        # When a task is submitted in the application's transaction, with its order row
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO e2e_orders (label) VALUES ('committed')"))
            handle = await e2e.mark.options(transaction=conn).submit("committed")
            # (until the commit, no other connection sees the task)
            with pytest.raises(taskq.TaskNotFound):
                await e2e.app.get(handle.id)

        # Then once it commits, the task runs once and its result comes back
        assert await handle.result(timeout=15) == "committed"
        info = await handle.info()
    assert (info.state, info.attempts) == (taskq.TaskStatus.SUCCEEDED, 1)
    assert lines(workers.order_file) == ["committed"]
    assert await order_labels(production) == ["committed"]


async def test_task_submitted_in_a_rolled_back_transaction_leaves_nothing_and_never_runs(
    production: Backend, workers: Workers, engine: AsyncEngine
) -> None:
    # Given a running worker (which leads, so it publishes committed transactional tasks)
    e2e = client_app.build(production.broker_url, production.store_url)
    await workers.start(concurrency=2, app=CLIENT_APP)
    async with e2e.app:
        # And a task submitted in the application's transaction, with its order row: in
        # that transaction, its row is there, `scheduled`
        async with engine.connect() as conn:
            await conn.begin()
            await conn.execute(text("INSERT INTO e2e_orders (label) VALUES ('rolled-back')"))
            doomed = await e2e.mark.options(transaction=conn).submit("rolled-back")
            inside = await conn.execute(
                text("SELECT state FROM taskq_tasks WHERE id = CAST(:id AS uuid)"),
                {"id": doomed.id},
            )
            assert inside.scalar_one() == "scheduled"

            # When the transaction rolls back
            await conn.rollback()

        # Then there is no such task
        with pytest.raises(taskq.TaskNotFound):
            await e2e.app.get(doomed.id)

        # And a sentinel submitted the same way afterwards, and committed, runs: the leader
        # has published what was committed since, and the rolled-back task was not part of it
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO e2e_orders (label) VALUES ('sentinel')"))
            sentinel = await e2e.mark.options(transaction=conn).submit("sentinel")
        assert await sentinel.result(timeout=15) == "sentinel"

    # And the queue is empty (once the sentinel's ack, sent just after its outcome was
    # stored, has landed), and only the sentinel ran and is stored
    async def queue_empty() -> bool:
        return (await messages_by_queue(workers.vhost))["default"] == 0

    await wait_until(queue_empty, within=10, what="queue 'default' to be empty")
    assert lines(workers.order_file) == ["sentinel"]
    stored = await sql(production.store_url, "SELECT id::text AS id, state FROM taskq_tasks")
    assert [(row["id"], row["state"]) for row in stored] == [(sentinel.id, "succeeded")]
    assert await order_labels(production) == ["sentinel"]


async def test_task_committed_by_a_process_killed_right_after_the_commit_still_runs(
    production: Backend, workers: Workers
) -> None:
    # Given a process that submits a task in its own transaction, commits, and is killed
    # (SIGKILL) right after the commit, while no worker (and so no leader) runs
    submitter = await start_client(
        "submit-in-transaction-and-die", "survivor", production=production
    )
    task_id = (await finish(submitter, expect=-signal.SIGKILL)).strip()

    e2e = client_app.build(production.broker_url, production.store_url)
    async with e2e.app:
        # Then the task is stored, `scheduled`, and nothing was published
        handle = await e2e.app.get(task_id)
        assert await handle.status() is taskq.TaskStatus.SCHEDULED
        assert sum((await messages_by_queue(workers.vhost)).values()) == 0

        # When a worker starts (and leads)
        await workers.start(concurrency=2, app=CLIENT_APP)

        # Then it publishes the task, which runs once and succeeds with its result
        assert await handle.result(timeout=15) == "survivor"
        info = await handle.info()
    assert (info.state, info.attempts) == (taskq.TaskStatus.SUCCEEDED, 1)
    assert lines(workers.order_file) == ["survivor"]


# -- must-show 3: submit_many ---------------------------------------------------------------


async def test_submit_many_of_200_all_complete_and_taskq_tasks_lists_exactly_the_batch(
    production: Backend, workers: Workers
) -> None:
    # Given a running worker, and tasks of the same name outside the batch
    e2e = client_app.build(production.broker_url, production.store_url)
    await workers.start(concurrency=20, app=CLIENT_APP)
    async with e2e.app:
        others = [await e2e.noop.submit(-1), *await e2e.noop.submit_many([(-2,), (-3,)])]

        # When 200 tasks are submitted as one batch
        batch = await e2e.noop.submit_many([(i,) for i in range(200)])
        assert len(batch) == 200

        # Then all complete, and gather returns every result in item order
        assert await e2e.app.gather(batch, timeout=30) == [i * 2 for i in range(200)]
        assert await e2e.app.gather(others, timeout=30) == [-2, -4, -6]

    # And `taskq tasks --batch ID --json` lists exactly the batch's tasks, all succeeded
    code, out, err = await run_cli(
        "tasks",
        "--batch",
        batch.id,
        "--json",
        "--limit",
        "1000",
        env=cli_env(TASKQ_STORE_URL=production.store_url),
    )
    assert code == 0, f"taskq tasks exited {code}:\n{err}"
    listed = json_values(out)
    assert len(listed) == 200
    assert {row["id"] for row in listed} == {handle.id for handle in batch}
    assert {(row["state"], row["batch_id"], row["name"]) for row in listed} == {
        ("succeeded", batch.id, "e2e.noop")
    }
