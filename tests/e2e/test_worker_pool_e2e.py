"""Worker pools on RabbitMQ + PostgreSQL: the supervisor, recycling, shutdown, health, balance.

Each test runs `taskq worker tests.e2e.pool_app:app` as real subprocesses on a fresh vhost and
database. Crashes are real `kill -9`s; every wait polls a process table, RabbitMQ, the
database, a file the tasks write or an HTTP probe, each with a deadline.
"""

from __future__ import annotations

import asyncio
import collections
import http.client
import json
import logging
import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aio_pika
import psutil
import pytest

import taskq
from tests.conftest import Backend
from tests.e2e import pool_app
from tests.e2e.processes import (
    WorkerProcess,
    Workers,
    cli_env,
    queue_messages,
    run_cli,
    sql,
    state_counts,
    wait_for_amqp,
    wait_until,
)
from tests.servers import RabbitNode

logger = logging.getLogger(__name__)  # figures the issues ask to see: pytest -o log_cli=true

POOL_APP = "tests.e2e.pool_app:app"
GRACE = 10.0  # teardown's wait after SIGTERM: every test here uses short tasks


async def consumers_now(amqp_url: str, queue: str = "default") -> int:
    """Consumers on `queue` right now (a passive declare: milliseconds, unlike rabbitmqctl)."""
    connection = await aio_pika.connect(amqp_url, timeout=5)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        result = declared.declaration_result
        assert result is not None
        return result.consumer_count or 0


def started_lines(log: Path) -> list[tuple[str, int, int]]:
    """(task id, pid, attempt) per start that `pool_app.started` recorded."""
    if not log.exists():
        return []
    return [
        (task_id, int(pid), int(attempt))
        for task_id, pid, attempt in (line.split() for line in log.read_text().splitlines())
    ]


async def started_pid(log: Path, task_id: str, *, within: float = 30.0) -> int:
    """The pid of the process that started `task_id` (its first attempt)."""

    async def seen() -> bool:
        return any(line[0] == task_id for line in started_lines(log))

    await wait_until(seen, within=within, what=f"task {task_id} to start")
    return next(pid for found, pid, _ in started_lines(log) if found == task_id)


async def workers_table(store_url: str) -> list[dict[str, Any]]:
    """What `taskq workers --all --json` prints: one JSON object per line."""
    code, out, err = await run_cli(
        "workers", "--all", "--json", env=cli_env(TASKQ_STORE_URL=store_url)
    )
    assert code == 0, f"taskq workers --all --json exited {code}:\n{err}"
    return [json.loads(line) for line in out.splitlines() if line.strip()]


async def exit_code(worker: WorkerProcess, *, within: float) -> int:
    """Wait for the process to exit; fail if it is still running after `within` s."""

    async def exited() -> bool:
        return worker.process.poll() is not None

    await wait_until(exited, within=within, what=f"taskq worker (pid {worker.pid}) to exit")
    assert worker.process.returncode is not None
    return worker.process.returncode


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


async def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """GET http://127.0.0.1:PORT/PATH → (status, JSON body)."""
    return await asyncio.to_thread(_get, port, path)


async def test_kill_9_of_one_child_is_replaced_and_its_task_redelivered(
    production: Backend, workers: Workers, tmp_path: Path
) -> None:
    # Given `taskq worker --processes 2 --concurrency 2`, with a slow task running on a child
    pool = pool_app.build(production.broker_url, production.store_url)
    log = tmp_path / "started.log"
    supervisor = await workers.start(concurrency=2, processes=2, app=POOL_APP, grace=GRACE)
    before = supervisor.children()
    assert len(before) == 2, before
    async with pool.app:
        slow = await pool.nap.submit(60.0, 0.1, str(log))
        victim = await started_pid(log, slow.id)
        assert victim in before

        # When that child is killed with SIGKILL
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()

        # Then a new child is consuming within about 2 s: two consumers again, one new pid
        async def replaced() -> bool:
            children = supervisor.children()
            fresh = len(children) == 2 and victim not in children
            return fresh and await consumers_now(production.broker_url) == 2

        await wait_until(replaced, within=10, what="a new child consuming", interval=0.05)
        restart = time.monotonic() - killed_at
        logger.info(f"kill -9 to a new child consuming: {restart:.2f} s")
        assert restart < 3.0, f"the new child took {restart:.2f} s"
        after = supervisor.children()
        assert supervisor.process.poll() is None

        # And the killed child's task is redelivered and completes on its second attempt
        second = await slow.result(timeout=30)
        assert second in after
        info = await slow.info()
        assert (info.state, info.attempts) == (taskq.TaskStatus.SUCCEEDED, 2)
        assert [(pid, n) for _, pid, n in started_lines(log)] == [(victim, 1), (second, 2)]

    # And `taskq workers --all --json` shows the killed child dead, its successor running
    rows = {row["pid"]: row for row in await workers_table(production.store_url)}
    assert rows[victim]["state"] == "dead", rows[victim]
    assert all(rows[pid]["state"] == "running" for pid in after), rows


async def test_child_over_memory_limit_is_recycled_after_its_task(
    production: Backend, workers: Workers, tmp_path: Path
) -> None:
    # Given two children limited to 150 MB each
    pool = pool_app.build(production.broker_url, production.store_url)
    log = tmp_path / "started.log"
    supervisor = await workers.start(
        concurrency=2,
        processes=2,
        app=POOL_APP,
        options=["--max-memory-per-child", "150MB"],
        grace=GRACE,
    )
    before = supervisor.children()
    async with pool.app:
        # When a task on one child allocates (and keeps) 200 MB while tasks run on both
        hog = await pool.hog.submit(200, 1.5, str(log))
        hog_pid = await started_pid(log, hog.id)
        (other,) = (pid for pid in before if pid != hog_pid)
        naps = [await pool.nap.submit(1.0, 1.0, str(log)) for _ in range(6)]
        assert await hog.result(timeout=30) == hog_pid

        # Then that child exits once its tasks are done, and a new one takes its place
        async def recycled() -> bool:
            children = supervisor.children()
            return hog_pid not in children and len(children) == 2

        await wait_until(recycled, within=20, what="the hog's child to be replaced")
        await workers.wait_consumers(2)
        new = set(supervisor.children()) - set(before)
        assert len(new) == 1, (before, supervisor.children())
        (successor,) = new

        # And the other child ran tasks meanwhile and was never restarted
        results = await asyncio.gather(*(h.result(timeout=30) for h in naps))
        assert other in results, results
        assert other in supervisor.children()
        infos = await asyncio.gather(*(h.info() for h in naps))
        assert all(i.attempts == 1 for i in infos), infos

    # And nothing was lost; the hog's child stopped cleanly (a recycle, not a crash)
    assert await state_counts(production.store_url) == {"succeeded": 7}
    rows = {row["pid"]: row for row in await workers_table(production.store_url)}
    assert rows[hog_pid]["state"] == "stopped", rows[hog_pid]
    assert rows[successor]["state"] == rows[other]["state"] == "running"
    output = supervisor.output()
    over = re.search(r"resident memory (\d+) MiB is over max_memory_per_child", output)
    assert over, output
    assert f"(pid {hog_pid}) reached its limit: replacing it" in output
    logger.info(f"recycled at {over[1]} MiB resident (limit 150 MB); other child pid {other} kept")


async def test_child_is_replaced_after_max_tasks(production: Backend, workers: Workers) -> None:
    # Given one child that may run 5 tasks
    pool = pool_app.build(production.broker_url, production.store_url)
    supervisor = await workers.start(
        concurrency=1, app=POOL_APP, options=["--max-tasks-per-child", "5"], grace=GRACE
    )
    async with pool.app:
        # When 12 quick tasks are submitted
        handles = [await pool.pid.submit(0.0) for _ in range(12)]
        pids = await asyncio.gather(*(h.result(timeout=30) for h in handles))

    # Then all succeed, on at least three processes one after another (replaced twice)
    assert await state_counts(production.store_url) == {"succeeded": 12}
    per_pid = collections.Counter(pids)
    logger.info(f"tasks per child: {dict(per_pid)}")
    assert len(per_pid) >= 3, per_pid
    assert supervisor.output().count("reached its limit: replacing it") >= 2
    # And no child ran more than its limit
    assert max(per_pid.values()) <= 5, per_pid


async def test_sigterm_drains_then_hands_running_tasks_back(
    production: Backend, workers: Workers, tmp_path: Path
) -> None:
    # Given 20 tasks of 0.5 s to 4.9 s all running on one worker with a 2 s shutdown timeout
    pool = pool_app.build(production.broker_url, production.store_url)
    log = tmp_path / "started.log"
    worker = await workers.start(
        concurrency=20, app=POOL_APP, options=["--shutdown-timeout", "2"], grace=GRACE
    )
    short = [0.5 + 0.1 * i for i in range(10)]
    long = [4.0 + 0.1 * i for i in range(10)]
    async with pool.app:
        handles = [await pool.nap.submit(s, 0.2, str(log)) for s in short + long]

        async def all_started() -> bool:
            return len({line[0] for line in started_lines(log)}) == 20

        await wait_until(all_started, within=30, what="20 tasks to run")

        # When the worker gets SIGTERM
        worker.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = await exit_code(worker, within=15)
        took = time.monotonic() - signalled

        # Then it exits 0 after about the shutdown timeout
        assert code == 0, worker.output()
        logger.info(f"SIGTERM to exit: {took:.2f} s (--shutdown-timeout 2)")
        assert "10 tasks still running at shutdown; handing them back" in worker.output()
        # And the short tasks are recorded, the long ones are queued again (none running)
        ids = [h.id for h in handles]
        rows = await sql(production.store_url, "SELECT id::text, state FROM taskq_tasks")
        states = {row["id"]: row["state"] for row in rows}
        assert [states[i] for i in ids[:10]] == ["succeeded"] * 10, states
        assert [states[i] for i in ids[10:]] == ["queued"] * 10, states
        # And their messages are back in the queue
        assert await queue_messages(workers.vhost, "default") == 10

        # When a new worker starts
        await workers.start(concurrency=20, app=POOL_APP, grace=GRACE)
        await asyncio.gather(*(h.result(timeout=30) for h in handles))

        # Then it completes them all, the handed-back ones on their second attempt
        infos = await asyncio.gather(*(h.info() for h in handles))
        assert [i.attempts for i in infos] == [1] * 10 + [2] * 10
    assert await state_counts(production.store_url) == {"succeeded": 20}


async def test_sigterm_exits_at_the_timeout_with_a_plain_def_task_running(
    production: Backend, workers: Workers, tmp_path: Path
) -> None:
    # Given a plain def task sleeping 30 s in the thread pool of a worker with a 1 s timeout
    pool = pool_app.build(production.broker_url, production.store_url)
    log = tmp_path / "started.log"
    worker = await workers.start(
        concurrency=2, app=POOL_APP, options=["--shutdown-timeout", "1"], grace=GRACE
    )
    async with pool.app:
        handle = await pool.doze.submit(30.0, 0.1, str(log))
        await started_pid(log, handle.id)

        # When the worker gets SIGTERM
        worker.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        # Then it hands the task back and exits 0 soon after the timeout, not when the thread ends
        assert await exit_code(worker, within=8) == 0, worker.output()
        logger.info(
            f"SIGTERM to exit with a plain def running: {time.monotonic() - signalled:.2f} s"
        )
        assert (await handle.info()).state is taskq.TaskStatus.QUEUED
        assert await queue_messages(workers.vhost, "default") == 1

        # And a new worker runs it to completion, as attempt 2
        await workers.start(concurrency=2, app=POOL_APP, grace=GRACE)
        await handle.result(timeout=30)
        assert (await handle.info()).attempts == 2


@pytest.mark.parametrize("processes", [1, 2])
async def test_second_sigterm_hands_running_tasks_back_at_once(
    production: Backend, workers: Workers, tmp_path: Path, processes: int
) -> None:
    # Given 4 long tasks running on a worker that would wait 30 s for them to finish
    pool = pool_app.build(production.broker_url, production.store_url)
    log = tmp_path / "started.log"
    worker = await workers.start(
        concurrency=2, processes=processes, app=POOL_APP, options=["--no-scheduler"], grace=GRACE
    )
    async with pool.app:
        handles = [await pool.nap.submit(60.0, 60.0, str(log)) for _ in range(2 * processes)]

        async def all_started() -> bool:
            return len(started_lines(log)) == len(handles)

        await wait_until(all_started, within=30, what="the tasks to run")

    # When it gets SIGTERM, and once every process is draining, SIGTERM again
    worker.process.send_signal(signal.SIGTERM)

    async def draining() -> bool:
        return worker.output().count("SIGTERM: finishing running tasks") == processes

    await wait_until(draining, within=10, what="every process to start draining")
    worker.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()

    # Then it exits 0 at once
    assert await exit_code(worker, within=10) == 0, worker.output()
    logger.info(
        f"second SIGTERM to exit ({processes} processes): {time.monotonic() - signalled:.2f} s"
    )
    # And the running tasks are handed back: rows queued, none running, messages requeued
    assert await state_counts(production.store_url) == {"queued": len(handles)}
    assert await queue_messages(workers.vhost, "default") == len(handles)
    # And no worker row is left looking alive
    rows = await workers_table(production.store_url)
    assert {row["state"] for row in rows} == {"stopped"}, rows


async def test_sigint_to_the_whole_process_group_drains_like_one_signal(
    production: Backend, workers: Workers, tmp_path: Path
) -> None:
    # Given a 2-process worker running 4 tasks of 3 s
    pool = pool_app.build(production.broker_url, production.store_url)
    log = tmp_path / "started.log"
    worker = await workers.start(
        concurrency=2, processes=2, app=POOL_APP, options=["--no-scheduler"], grace=GRACE
    )
    async with pool.app:
        handles = [await pool.nap.submit(3.0, 3.0, str(log)) for _ in range(4)]

        async def all_started() -> bool:
            return len(started_lines(log)) == len(handles)

        await wait_until(all_started, within=30, what="the tasks to run")

        # When SIGINT reaches every process of its group at once (Ctrl-C in a terminal;
        # systemd's default KillMode=control-group does the same with SIGTERM)
        os.killpg(worker.pid, signal.SIGINT)

        # Then it is one request to stop: the tasks finish, and the worker exits 0
        assert await exit_code(worker, within=15) == 0, worker.output()
        assert "again: stopping now" not in worker.output()
        infos = await asyncio.gather(*(h.info() for h in handles))
        assert [(i.state, i.attempts) for i in infos] == [(taskq.TaskStatus.SUCCEEDED, 1)] * 4


async def test_two_workers_share_tasks_by_their_concurrency(
    production: Backend, workers: Workers
) -> None:
    # Given two workers of concurrency 2 and 8
    pool = pool_app.build(production.broker_url, production.store_url)
    small = await workers.start(concurrency=2, app=POOL_APP, grace=GRACE)
    large = await workers.start(concurrency=8, app=POOL_APP, grace=GRACE)
    async with pool.app:
        # When 200 equal tasks (0.05 s each) are submitted
        handles = await asyncio.gather(*(pool.pid.submit(0.05) for _ in range(200)))
        pids = collections.Counter(await asyncio.gather(*(h.result(timeout=60) for h in handles)))

    # Then they run about 1:4, as their free slots are
    assert set(pids) == {small.pid, large.pid}, pids
    ratio = pids[large.pid] / pids[small.pid]
    logger.info(
        f"concurrency 2 ran {pids[small.pid]}, concurrency 8 ran {pids[large.pid]}: 1:{ratio:.2f}"
    )
    assert 2.5 <= ratio <= 6, pids
    assert await state_counts(production.store_url) == {"succeeded": 200}


async def test_the_supervisors_readiness_follows_the_broker(
    private_production: Backend, private_workers: Workers, private_rabbit: RabbitNode
) -> None:
    """Before, `--processes N`'s /readyz said ready while RabbitMQ was unreachable: it
    only counted its children (issue 17, defect 14)."""
    # Given `taskq worker --processes 2` serving probes
    port = free_port()
    await private_workers.start(
        concurrency=2, processes=2, app=POOL_APP, options=["--health-port", str(port)]
    )
    ready = {"ready": True, "children": True, "broker": True, "store": True}

    async def ready_now() -> bool:
        return await probe(port, "/readyz") == (200, ready)

    await wait_until(ready_now, within=15, what="/readyz to say ready")
    try:
        # When RabbitMQ stops
        await private_rabbit.ctl("stop_app")

        # Then /readyz turns 503, naming the broker
        async def unready() -> bool:
            status, body = await probe(port, "/readyz")
            return status == 503 and body.get("broker") is False

        await wait_until(unready, within=15, what="/readyz to report the broker down")
    finally:
        await private_rabbit.ctl("start_app")
        await wait_for_amqp(private_production.broker_url)

    # And once RabbitMQ is back, it is ready again
    await wait_until(ready_now, within=30, what="/readyz to recover")


async def test_health_probes_follow_the_broker(
    private_production: Backend, private_workers: Workers, private_rabbit: RabbitNode
) -> None:
    # Given a worker serving probes on a free port
    port = free_port()
    worker = await private_workers.start(
        concurrency=2, app=POOL_APP, options=["--health-port", str(port)], grace=GRACE
    )

    # Then /healthz and /readyz answer 200, and only on 127.0.0.1 (no --health-host)
    assert await probe(port, "/healthz") == (200, {"status": "ok"})
    assert await probe(port, "/readyz") == (200, {"ready": True, "broker": True, "store": True})
    listening = {
        c.laddr
        for c in psutil.Process(worker.pid).net_connections("tcp")
        if c.status == psutil.CONN_LISTEN
    }
    assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", port)], listening
    assert (await probe(port, "/nope"))[0] == 404

    try:
        # When RabbitMQ stops
        stopping = time.monotonic()
        await private_rabbit.ctl("stop_app")

        # Then /readyz turns 503 with broker false within seconds; /healthz stays 200
        async def unready() -> bool:
            return await probe(port, "/readyz") == (
                503,
                {"ready": False, "broker": False, "store": True},
            )

        await wait_until(unready, within=10, what="/readyz to report the broker down")
        logger.info(f"/readyz 503 {time.monotonic() - stopping:.2f} s after stop_app began")
        assert await probe(port, "/healthz") == (200, {"status": "ok"})
    finally:
        await private_rabbit.ctl("start_app")
        await wait_for_amqp(private_production.broker_url)
    started = time.monotonic()

    # And once RabbitMQ is back, /readyz is 200 again
    async def ready() -> bool:
        return (await probe(port, "/readyz"))[0] == 200

    await wait_until(ready, within=30, what="/readyz to recover")
    logger.info(f"/readyz 200 again {time.monotonic() - started:.2f} s after RabbitMQ answered")
    assert await probe(port, "/readyz") == (200, {"ready": True, "broker": True, "store": True})


async def test_watchdog_names_the_task_that_blocks_the_loop(
    production: Backend, workers: Workers
) -> None:
    # Given a worker with the default 1 s blocked-loop threshold
    pool = pool_app.build(production.broker_url, production.store_url)
    worker = await workers.start(concurrency=2, app=POOL_APP, grace=GRACE)
    async with pool.app:
        # When an async task calls time.sleep(1.5)
        handle = await pool.block_loop.submit(1.5)
        await handle.result(timeout=30)

    # Then the worker's stderr names it in an "event loop blocked" warning
    blamed = re.compile(
        rf"WARNING .*event loop blocked for \d+\.\d s by task pool\.block_loop\[{handle.id}\]"
    )

    async def logged() -> bool:
        return blamed.search(worker.output()) is not None

    await wait_until(logged, within=10, what="the watchdog's warning")


async def test_child_crashing_at_start_makes_the_supervisor_give_up(postgres_url: str) -> None:
    # Given children that cannot start (nothing listens at the broker's port)
    env = cli_env(TASKQ_BROKER_URL="amqp://guest:guest@127.0.0.1:1/", TASKQ_STORE_URL=postgres_url)

    # When `taskq worker --processes 2` runs
    began = time.monotonic()
    code, _, err = await run_cli("worker", POOL_APP, "--processes", "2", env=env, limit=60)
    took = time.monotonic() - began

    # Then it exits 1 within a minute, saying each child keeps crashing, after backing off
    logger.info(f"gave up after {took:.1f} s")
    assert code == 1, err
    for slot in (0, 1):
        assert err.count(f"child {slot} started") == 5, err
        assert f"child {slot} died 5 times within 10 s of starting" in err, err
    for backoff in ("0.5", "1.0", "2.0", "4.0"):
        assert f"restarting in {backoff} s" in err, err


async def test_app_that_fails_to_import_stops_the_supervisor_at_once(postgres_url: str) -> None:
    # When `taskq worker BAD:app --processes 2` names a module that does not exist
    env = cli_env(TASKQ_STORE_URL=postgres_url)
    code, _, err = await run_cli(
        "worker", "tests.e2e.no_such_module:app", "--processes", "2", env=env, limit=30
    )

    # Then it exits 1 with one error line, having started no child
    assert code == 1, err
    assert "error: cannot import 'tests.e2e.no_such_module'" in err, err
    assert "child 0 started" not in err, err
