"""End to end on RabbitMQ + PostgreSQL: a producer here, `taskq worker` subprocesses there.

Each test gets a fresh vhost and database (tests/conftest.py). Nothing sleeps and hopes:
waits are on results, on RabbitMQ's consumer list or on the database, each with a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest

import taskq
from tests.conftest import Backend
from tests.e2e import worker_app
from tests.e2e.processes import (
    REPO_ROOT,
    WORKER_COMMAND,
    Workers,
    cli_env,
    run_command,
    sql,
    state_counts,
    wait_for_amqp,
    wait_until,
)
from tests.servers import RabbitNode

logger = logging.getLogger(__name__)  # figures the issues ask to see: pytest -o log_cli=true

# `taskq worker` log lines start with a timestamp; anything else on stderr is for humans.
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


async def test_thousand_tasks_across_processes_all_succeed(
    production: Backend, workers: Workers
) -> None:
    # Given one `taskq worker` subprocess
    e2e = worker_app.build(production.broker_url, production.store_url)
    await workers.start(concurrency=20)
    async with e2e.app:
        # When 1,000 tasks are submitted from this process
        handles = await asyncio.gather(*(e2e.noop.submit(i) for i in range(1000)))
        results = await asyncio.gather(*(h.result(timeout=90) for h in handles))

    # Then every result comes back and every row in PostgreSQL is `succeeded`
    assert results == [i * 2 for i in range(1000)]
    assert await state_counts(production.store_url) == {"succeeded": 1000}
    rows = await sql(production.store_url, "SELECT args, result FROM taskq_tasks")
    assert sorted((r["args"], r["result"]) for r in rows) == sorted(
        (f"[{i}]", str(i * 2)) for i in range(1000)
    )


async def test_high_priority_runs_before_low_on_one_slot(
    production: Backend, workers: Workers
) -> None:
    # Given 50 low-priority then 50 high-priority tasks queued while no worker runs
    e2e = worker_app.build(production.broker_url, production.store_url)
    async with e2e.app:
        handles = [await e2e.record.submit(f"low-{i}") for i in range(50)]
        urgent = e2e.record.options(priority=9)
        handles += [await urgent.submit(f"high-{i}") for i in range(50)]
        assert await state_counts(production.store_url) == {"queued": 100}

        # When a worker with one slot starts and runs them all
        await workers.start(concurrency=1)
        await asyncio.gather(*(h.result(timeout=60) for h in handles))

    # Then every high one ran before any low one, each exactly once
    order = workers.order_file.read_text().splitlines()
    assert sorted(order) == sorted(
        [f"low-{i}" for i in range(50)] + [f"high-{i}" for i in range(50)]
    )
    assert all(label.startswith("high-") for label in order[:50]), order
    assert all(label.startswith("low-") for label in order[50:]), order
    assert await state_counts(production.store_url) == {"succeeded": 100}


async def test_kill_9_mid_task_is_rerun_by_a_new_worker(
    production: Backend, workers: Workers, tmp_path: Path
) -> None:
    # Given a worker in the middle of a long task, with quick tasks around it
    e2e = worker_app.build(production.broker_url, production.store_url)
    marker = tmp_path / "slow-started"
    first = await workers.start(concurrency=4)
    async with e2e.app:
        quick = list(await asyncio.gather(*(e2e.noop.submit(i) for i in range(10))))
        slow = await e2e.slow.submit(30.0, str(marker))
        await wait_until(
            lambda: asyncio.to_thread(marker.exists), within=30, what="the slow task to start"
        )

        # When the worker is killed with SIGKILL, more tasks arrive, and a new worker starts
        await workers.kill(first)
        crashed = await slow.info()
        assert (crashed.state, crashed.attempts) == (taskq.TaskStatus.RUNNING, 1)
        quick += await asyncio.gather(*(e2e.noop.submit(i) for i in range(10, 20)))
        await workers.start(concurrency=4)

        # Then the task completes on its second attempt
        assert await slow.result(timeout=30) == 2
        info = await slow.info()
        assert (info.state, info.attempts) == (taskq.TaskStatus.SUCCEEDED, 2)
        # And no other task is lost or stuck in `running`
        assert await asyncio.gather(*(h.result(timeout=30) for h in quick)) == [
            i * 2 for i in range(20)
        ]
    assert await state_counts(production.store_url) == {"succeeded": 21}


async def test_broker_restart_under_load_loses_nothing(
    private_production: Backend, private_workers: Workers, private_rabbit: RabbitNode
) -> None:
    # Given a running worker and a producer with a generous publish timeout that waits on
    # each task's result as soon as it has a handle
    e2e = worker_app.build(
        private_production.broker_url, private_production.store_url, publish_timeout=30
    )
    worker = await private_workers.start(concurrency=10)
    stopped = asyncio.Event()
    submitted: dict[int, asyncio.Task[int]] = {}
    refused: dict[int, taskq.PublishError] = {}

    async def restart_broker() -> None:
        try:
            await private_rabbit.ctl("stop_app")
        finally:
            stopped.set()
        await private_rabbit.ctl("start_app")

    async def submit(i: int) -> None:
        if i >= 250:
            await stopped.wait()  # the second half is submitted while the broker is down
        try:
            handle = await e2e.noop.submit(i)
        except taskq.PublishError as exc:
            refused[i] = exc
        else:
            submitted[i] = asyncio.create_task(handle.result(timeout=90))

    async def produce(first: int) -> None:
        for i in range(first, 500, 10):
            await submit(i)

    restart = asyncio.create_task(restart_broker())
    try:
        async with e2e.app:
            # When RabbitMQ is stopped and started while 500 tasks are submitted
            await asyncio.gather(*(produce(first) for first in range(10)))
            await restart
            await wait_for_amqp(private_production.broker_url)

            # Then every submit returned a handle: a task RabbitMQ could not take was left
            # to the leader's relay (issue 17, defect 5: they used to raise PublishError)
            assert len(submitted) + len(refused) == 500
            assert not refused, list(refused.values())[:3]
            # And every returned handle ends `succeeded` with its value
            results = await asyncio.gather(*submitted.values())
            assert results == [i * 2 for i in submitted]
    finally:
        for waiting in submitted.values():
            waiting.cancel()
        await asyncio.gather(restart, *submitted.values(), return_exceptions=True)
        await private_rabbit.ctl("start_app")
        await wait_for_amqp(private_production.broker_url)

    # And a refused submit was not dropped silently: its row is `failed` with the
    # PublishError, or its message got through and it ran
    rows = await sql(private_production.store_url, "SELECT state, args, error FROM taskq_tasks")
    assert len(rows) == 500
    by_arg = {int(r["args"].strip("[]")): r for r in rows}
    for i in refused:
        row = by_arg[i]
        assert row["state"] in ("failed", "succeeded"), (i, row)
        if row["state"] == "failed":
            assert '"PublishError"' in row["error"], (i, row)
    counts = await state_counts(private_production.store_url)
    assert counts.get("queued", 0) == counts.get("running", 0) == 0, counts
    logger.info(f"{len(submitted)} submits returned a handle, {len(refused)} raised PublishError")

    # And the worker still stops gracefully: nothing hangs on a channel the restart closed
    worker.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.process.wait, 15) == 0, worker.output()


async def test_wrong_broker_password_fails_fast_naming_host_not_password(
    postgres_url: str,
) -> None:
    # Given an app whose broker URL has a wrong password
    app = taskq.App(broker_url="amqp://guest:wrongpass@127.0.0.1:5672/", store_url=postgres_url)
    # When it opens
    started = time.monotonic()
    with pytest.raises(taskq.BrokerConnectionError) as caught:
        async with app:
            pass
    # Then it fails within seconds, naming the host and not the password
    assert time.monotonic() - started < 10
    assert "127.0.0.1" in str(caught.value)
    assert "wrongpass" not in str(caught.value)


async def test_unreachable_broker_fails_fast_naming_host(postgres_url: str) -> None:
    # Given an app whose broker port has nothing listening
    app = taskq.App(broker_url="amqp://guest:guest@127.0.0.1:1/", store_url=postgres_url)
    # When it opens
    started = time.monotonic()
    with pytest.raises(taskq.BrokerConnectionError) as caught:
        async with app:
            pass
    # Then it fails within seconds, naming the host
    assert time.monotonic() - started < 10
    assert "127.0.0.1" in str(caught.value)


def run_worker_cli(broker_url: str, store_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        WORKER_COMMAND,
        cwd=REPO_ROOT,
        env=cli_env(TASKQ_BROKER_URL=broker_url, TASKQ_STORE_URL=store_url),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )


def human_lines(output: str) -> list[str]:
    """The lines of `output` that are not log records."""
    return [line for line in output.splitlines() if line.strip() and not LOG_LINE.match(line)]


def test_cli_worker_wrong_password_one_line_error(postgres_url: str) -> None:
    # When `taskq worker` starts with a wrong broker password
    done = run_worker_cli("amqp://guest:wrongpass@127.0.0.1:5672/", postgres_url)
    # Then it exits non-zero with one error line naming the host, no password, no traceback
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "wrongpass" not in output
    assert "Traceback" not in output
    lines = human_lines(done.stderr)
    assert len(lines) == 1, f"expected a one-line error, got:\n{done.stderr}"
    assert lines[0].startswith("error: ") and "127.0.0.1" in lines[0], lines


async def test_schema_behind_gives_upgrade_hint(amqp_url: str, empty_postgres_url: str) -> None:
    # Given a database with no taskq schema yet
    app = taskq.App(broker_url=amqp_url, store_url=empty_postgres_url)
    # When an app opens on it, then it is refused with the command that fixes it
    with pytest.raises(taskq.SchemaOutOfDate) as caught:
        async with app:
            pass
    assert "taskq db upgrade" in str(caught.value)


def test_cli_worker_schema_behind_prints_upgrade_hint(
    amqp_url: str, empty_postgres_url: str
) -> None:
    # When `taskq worker` starts on a database with no taskq schema yet
    done = run_worker_cli(amqp_url, empty_postgres_url)
    # Then it exits non-zero with one error line that names `taskq db upgrade`
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = human_lines(done.stderr)
    assert len(lines) == 1, f"expected a one-line error, got:\n{done.stderr}"
    assert lines[0].startswith("error: ") and "taskq db upgrade" in lines[0], lines


async def test_wheel_in_fresh_venv_runs_db_upgrade(tmp_path: Path, empty_postgres_url: str) -> None:
    # Given the wheel, installed in a new virtualenv outside the repository
    dist = tmp_path / "dist"
    code, output = await run_command(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "-w",
        str(dist),
        str(REPO_ROOT),
        limit=120,
    )
    assert code == 0, f"pip wheel failed:\n{output}"
    (wheel,) = dist.glob("taskq-*.whl")
    env_dir = tmp_path / "venv"
    await asyncio.to_thread(venv.create, env_dir, with_pip=True)
    assert REPO_ROOT not in env_dir.resolve().parents
    code, output = await run_command(
        str(env_dir / "bin" / "python"), "-m", "pip", "install", str(wheel), limit=150
    )
    assert code == 0, (
        f"pip install of the wheel failed (is the package registry reachable?):\n{output}"
    )

    # When its `taskq db upgrade` runs against an empty database, from outside the repository
    code, output = await run_command(
        str(env_dir / "bin" / "taskq"),
        *("db", "upgrade", "--store-url", empty_postgres_url),
        cwd=tmp_path,
        env=cli_env(),
    )

    # Then it succeeds, using the migrations shipped in the wheel, and the table exists
    assert code == 0, output
    code, shipped = await run_command(
        str(env_dir / "bin" / "python"),
        "-c",
        "from taskq.store import migrations; print(migrations.script_location())",
        cwd=tmp_path,
        env=cli_env(),
    )
    assert code == 0, shipped
    assert Path(shipped.strip()).is_relative_to(env_dir), shipped
    rows = await sql(empty_postgres_url, "SELECT to_regclass('public.taskq_tasks')::text AS found")
    assert rows[0]["found"] == "taskq_tasks"
