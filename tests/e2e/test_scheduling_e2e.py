"""Scheduling across real processes: delays that outlive every taskq process (and a RabbitMQ
restart), leader failover under `kill -9`, locks and idempotency keys shared by two
processes, `taskq submit`, `taskq workers --json`.

RabbitMQ + PostgreSQL only (a fresh vhost and database per test). Every wait is on the
database, a file the processes write, or a process exit, each with a deadline.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import signal
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import taskq
from tests.conftest import Backend
from tests.e2e import worker_app
from tests.e2e.periodic_app import TICK_TASK
from tests.e2e.processes import (
    REPO_ROOT,
    WORKER_APP,
    Workers,
    cli_env,
    leader_pid,
    run_cli,
    sql,
    state_counts,
    wait_for_amqp,
    wait_until,
)
from tests.servers import RabbitNode

logger = logging.getLogger(__name__)  # figures the issues ask to see: pytest -o log_cli=true

PERIODIC_APP = "tests.e2e.periodic_app:app"
CLIENT = (sys.executable, "-m", "tests.e2e.client_process")


async def start_client(*argv: str, production: Backend) -> asyncio.subprocess.Process:
    """A `tests.e2e.client_process` subprocess on the test's broker and store."""
    return await asyncio.create_subprocess_exec(
        *CLIENT,
        *argv,
        cwd=REPO_ROOT,
        env=cli_env(TASKQ_BROKER_URL=production.broker_url, TASKQ_STORE_URL=production.store_url),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(process: asyncio.subprocess.Process, limit: float = 60) -> tuple[int, str]:
    """Wait for a client to exit; → (exit code, stdout); its stderr is in the failure."""
    try:
        async with asyncio.timeout(limit):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"client {process.pid} did not finish within {limit} s") from None
    assert process.returncode == 0, f"client exited {process.returncode}:\n{err.decode()}"
    return process.returncode, out.decode()


async def release_together(go: Path, count: int) -> None:
    """Wait until `count` clients are ready, then let them all go at once."""

    async def all_ready() -> bool:
        return len(list(go.parent.glob(f"{go.name}.ready.*"))) == count

    await wait_until(all_ready, within=30, what=f"{count} clients to be ready", interval=0.05)
    await asyncio.to_thread(go.touch)


def ran_labels(workers: Workers) -> collections.Counter[str]:
    lines = workers.order_file.read_text().splitlines() if workers.order_file.exists() else []
    return collections.Counter(lines)


# -- must-show 2: delayed tasks survive every taskq process stopping ------------------------


async def test_delayed_tasks_survive_every_taskq_process_stopping_and_a_broker_restart(
    private_production: Backend, private_workers: Workers, private_rabbit: RabbitNode
) -> None:
    # Given 100 tasks due in 10 s, submitted while no taskq process runs (10 s: time for a
    # worker to start, lead and stop before they are due, on a loaded machine too)
    e2e = worker_app.build(private_production.broker_url, private_production.store_url)
    labels = [f"delayed-{i}" for i in range(100)]
    async with e2e.app:
        await asyncio.gather(*(e2e.record.options(countdown=10).submit(x) for x in labels))
    assert await state_counts(private_production.store_url) == {"scheduled": 100}
    (times,) = await sql(
        private_production.store_url,
        "SELECT min(run_at) AS first, max(run_at) AS last FROM taskq_tasks",
    )
    first_due: float = times["first"].timestamp()
    last_due: float = times["last"].timestamp()

    # When a worker starts and leads, then every taskq process is stopped before they are due
    first = await private_workers.start(concurrency=10)

    async def first_leads() -> bool:
        return await leader_pid(private_production.store_url) == first.pid

    await wait_until(first_leads, within=15, what="the first worker to lead")
    await asyncio.to_thread(first.stop)
    assert first.process.returncode == 0, first.output()
    assert time.time() < first_due, "the worker was stopped too late for this test to mean much"
    assert await state_counts(private_production.store_url) == {"scheduled": 100}

    # And RabbitMQ restarts meanwhile (the delayed tasks live in PostgreSQL alone)
    try:
        await private_rabbit.ctl("stop_app")
    finally:
        await private_rabbit.ctl("start_app")
        await wait_for_amqp(private_production.broker_url)

    # And nothing runs them while no process runs, past their due time
    async def past_due() -> bool:
        return time.time() > last_due + 0.5

    await wait_until(past_due, within=10, what="the due time to pass", interval=0.05)
    assert await state_counts(private_production.store_url) == {"scheduled": 100}

    # And a new worker starts after the due time
    await private_workers.start(concurrency=10)

    # Then all 100 run, each exactly once, none before it was due
    async def all_succeeded() -> bool:
        return await state_counts(private_production.store_url) == {"succeeded": 100}

    await wait_until(all_succeeded, within=30, what="the 100 delayed tasks to succeed")
    assert ran_labels(private_workers) == collections.Counter(labels)
    early = await sql(
        private_production.store_url,
        "SELECT id FROM taskq_tasks WHERE started_at < run_at OR attempts <> 1",
    )
    assert early == []


# -- must-show 3: failover -----------------------------------------------------------------


def read_ticks(workers: Workers) -> list[tuple[datetime, float, int]]:
    """(tick, run start, pid) per run of the periodic task, in the order they were written."""
    if not workers.ticks_file.exists():
        return []
    runs = []
    for line in workers.ticks_file.read_text().splitlines():
        tick, ran, pid = line.split()
        runs.append((datetime.fromisoformat(tick), float(ran), int(pid)))
    return runs


async def test_kill_9_of_the_leader_hands_over_without_losing_or_doubling_ticks(
    production: Backend, workers: Workers
) -> None:
    # Given three candidates: a `taskq scheduler` that leads, and two `taskq worker`s
    store = production.store_url
    scheduler = await workers.start_scheduler(app=PERIODIC_APP)

    async def scheduler_leads() -> bool:
        return await leader_pid(store) == scheduler.pid

    await wait_until(scheduler_leads, within=15, what="taskq scheduler to lead")
    standby = [await workers.start(concurrency=4, app=PERIODIC_APP) for _ in range(2)]

    # And a task scheduled every second has been running for a few ticks
    async def some_ticks() -> bool:
        return len(read_ticks(workers)) >= 4

    await wait_until(some_ticks, within=20, what="four runs of the periodic task")
    first_tick = min(tick for tick, _, _ in read_ticks(workers))

    # When the leader is killed with SIGKILL, and a task due 1 s later is submitted at once
    e2e = worker_app.build(production.broker_url, production.store_url)
    async with e2e.app:
        killed = time.monotonic()
        killed_at = datetime.now(UTC)
        await workers.kill(scheduler)
        probe = await e2e.record.options(countdown=1).submit("probe")

        # Then a new leader publishes it within a few seconds
        async def published() -> bool:
            return await probe.status() is not taskq.TaskStatus.SCHEDULED

        await wait_until(published, within=20, what="a new leader to publish the due task")
        takeover = time.monotonic() - killed
        logger.info(
            f"failover: a task due 1 s after the kill -9 was published {takeover:.2f} s after it"
        )
        assert takeover < 10
        await probe.result(timeout=30)

    # And `taskq workers` shows one of the survivors as the one leader
    async def survivor_leads() -> bool:
        return await leader_pid(store) in {worker.pid for worker in standby}

    await wait_until(survivor_leads, within=15, what="a surviving worker to be marked leader")

    # And every second of a 10-s window across the failover has its tick run, exactly once
    last_tick = max(
        first_tick + timedelta(seconds=10),
        killed_at.replace(microsecond=0) + timedelta(seconds=5),
    )
    window = [
        first_tick + timedelta(seconds=i)
        for i in range(int((last_tick - first_tick).total_seconds()) + 1)
    ]

    async def window_ran() -> bool:
        return set(window) <= {tick for tick, _, _ in read_ticks(workers)}

    try:
        await wait_until(window_ran, within=30, what="every tick of the window to run")
    except AssertionError:
        seen = {tick for tick, _, _ in read_ticks(workers)}
        missing = [tick.isoformat() for tick in window if tick not in seen]
        raise AssertionError(f"ticks that never ran: {missing} (killed at {killed_at})") from None
    runs = read_ticks(workers)
    per_tick = collections.Counter(tick for tick, _, _ in runs)
    twice = [tick.isoformat() for tick, count in per_tick.items() if count > 1]
    assert twice == [], f"ticks run more than once: {twice}"
    assert all(ran >= tick.timestamp() for tick, ran, _ in runs), "a tick ran early"
    # (in the store too: one row per tick, each run once)
    stored = await sql(
        store,
        "SELECT idempotency_key, state, attempts FROM taskq_tasks "
        f"WHERE idempotency_key LIKE 'periodic:{TICK_TASK}:%'",
    )
    keys = [row["idempotency_key"] for row in stored]
    assert len(keys) == len(set(keys))
    in_window = {f"periodic:{TICK_TASK}:{tick.isoformat()}" for tick in window}
    assert in_window <= set(keys)
    assert all(
        (row["state"], row["attempts"]) == ("succeeded", 1)
        for row in stored
        if row["idempotency_key"] in in_window
    )
    # And the leader said when the next tick would come as it took over
    assert f"periodic {TICK_TASK} (every 0:00:01): next tick at" in scheduler.output()

    # And `taskq schedules` lists the schedule, its next three ticks and its last handled one
    env = cli_env(TASKQ_BROKER_URL=production.broker_url, TASKQ_STORE_URL=store)
    code, output, errors = await run_cli("schedules", PERIODIC_APP, "--json", env=env)
    assert code == 0, errors
    (listed,) = [json.loads(line) for line in output.splitlines()]
    ticks = [datetime.fromisoformat(tick) for tick in listed["next"]]
    assert (listed["name"], listed["spec"]) == (TICK_TASK, "every 0:00:01")
    assert [b - a for a, b in itertools.pairwise(ticks)] == [timedelta(seconds=1)] * 2
    assert datetime.fromisoformat(listed["last"]) >= last_tick


async def test_workers_json_lists_one_object_per_line_with_the_leader(
    production: Backend, workers: Workers
) -> None:
    # Given a worker that does not stand for leadership, then a `taskq scheduler`
    worker = await workers.start(concurrency=2, scheduler=False)
    scheduler = await workers.start_scheduler()

    # Then the scheduler leads: it is the only candidate
    async def scheduler_leads() -> bool:
        return await leader_pid(production.store_url) == scheduler.pid

    await wait_until(scheduler_leads, within=15, what="taskq scheduler to lead")

    # And `taskq workers --json` prints one JSON object per line, with role, pid, state, leader
    code, out, err = await run_cli("workers", "--json", env=workers.env())
    assert code == 0, err
    rows = []
    for line in filter(str.strip, out.splitlines()):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"`taskq workers --json` printed a line that is no JSON object: {line!r}")
    assert {(r["role"], r["pid"], r["state"], r["leader"]) for r in rows} == {
        ("worker", worker.pid, "running", False),
        ("scheduler", scheduler.pid, "running", True),
    }
    assert len(rows) == 2


# -- must-show 4: locks across processes ---------------------------------------------------

HOLDERS, ROUNDS = 4, 10


async def test_lock_holders_in_two_processes_never_overlap(
    production: Backend, tmp_path: Path
) -> None:
    # Given two processes, each with 4 coroutines that take one lock 10 times
    log, go = tmp_path / "lock.log", tmp_path / "go"
    clients = [
        await start_client(
            "lock-loop",
            "--log",
            str(log),
            "--go",
            str(go),
            "--holders",
            str(HOLDERS),
            "--rounds",
            str(ROUNDS),
            production=production,
        )
        for _ in range(2)
    ]
    # When they start together
    await release_together(go, 2)
    # Then each holder found itself alone every time (checked inside the lock, exit code 0)
    for client in clients:
        await finish(client)

    # And the log they wrote is strict enter/exit pairs of one holder, in time order
    lines = [line.split() for line in log.read_text().splitlines()]
    assert len(lines) == 2 * 2 * HOLDERS * ROUNDS
    pairs = list(zip(lines[::2], lines[1::2], strict=True))
    for enter, leave in pairs:
        assert (enter[0], leave[0]) == ("enter", "exit"), (enter, leave)
        assert enter[1:3] == leave[1:3], (enter, leave)
        assert float(enter[3]) <= float(leave[3])
    for (_, earlier), (later, _) in itertools.pairwise(pairs):
        assert float(earlier[3]) <= float(later[3]), (earlier, later)
    # And both processes held it, taking turns
    holders = [enter[1] for enter, _ in pairs]
    assert set(holders) == {str(client.pid) for client in clients}
    assert sum(a != b for a, b in itertools.pairwise(holders)) >= 2, holders


async def test_lock_held_by_a_killed_process_is_released(
    production: Backend, tmp_path: Path
) -> None:
    # Given a process that holds a lock
    ready = tmp_path / "held"
    holder = await start_client(
        "lock-hold", "--name", "crash", "--ready", str(ready), production=production
    )
    try:

        async def holding() -> bool:
            if holder.returncode is not None:
                raise AssertionError(f"the holder exited with {holder.returncode}")
            return ready.exists()

        await wait_until(holding, within=30, what="the holder to take the lock")
        app = production.app()
        async with app:
            with pytest.raises(taskq.LockTimeout):
                async with app.lock("crash", timeout=0.5):
                    pytest.fail("the lock was granted while another process holds it")

            # When that process is killed with SIGKILL
            holder.kill()
            assert await holder.wait() == -signal.SIGKILL
            begun = time.monotonic()

            # Then another process gets the lock within a few seconds
            async with app.lock("crash", timeout=10):
                waited = time.monotonic() - begun
        logger.info(f"lock of a kill -9'd holder acquired {waited:.3f} s after the kill")
        assert waited < 5
    finally:
        if holder.returncode is None:
            holder.kill()
        await holder.communicate()


# -- must-show 5: idempotency across processes ---------------------------------------------


async def test_same_key_from_two_processes_makes_one_task_that_runs_once(
    production: Backend, workers: Workers, tmp_path: Path
) -> None:
    # Given two processes that each submit one task 10 times at once with the same key
    go, key = tmp_path / "go", f"invoice-{uuid.uuid4()}"
    clients = [
        await start_client(
            "submit-keyed",
            "--key",
            key,
            "--label",
            "keyed",
            "--go",
            str(go),
            production=production,
        )
        for _ in range(2)
    ]
    # When they are released together
    await release_together(go, 2)
    outputs = [(await finish(client))[1] for client in clients]

    # Then all 20 submits returned the same id, and there is one row
    ids = [line for output in outputs for line in output.split()]
    assert len(ids) == 20 and len(set(ids)) == 1, ids
    rows = await sql(production.store_url, "SELECT id, idempotency_key FROM taskq_tasks")
    assert [(str(row["id"]), row["idempotency_key"]) for row in rows] == [(ids[0], key)]

    # And a one-slot worker (tasks in queue order) runs it once: a task queued after every
    # copy that could exist has run, so any second copy would have run too
    await workers.start(concurrency=1)
    e2e = worker_app.build(production.broker_url, production.store_url)
    async with e2e.app:
        await (await e2e.app.get(ids[0])).result(timeout=30)
        await (await e2e.record.submit("after")).result(timeout=30)
    assert ran_labels(workers) == collections.Counter({"keyed": 1, "after": 1})
    assert await state_counts(production.store_url) == {"succeeded": 2}


# -- taskq submit ---------------------------------------------------------------------------


async def test_cli_submit_with_countdown_or_eta_runs_when_due(
    production: Backend, workers: Workers
) -> None:
    # Given a worker that leads
    await workers.start(concurrency=2)
    begun = time.time()
    eta = datetime.fromtimestamp(int(begun) + 3, UTC)

    # When operators submit with --countdown 1 and with --eta (and --kwargs)
    (code, out, err), (eta_code, eta_out, eta_err) = await asyncio.gather(
        run_cli(
            "submit",
            WORKER_APP,
            "e2e.record",
            "--args",
            '["from-cli"]',
            "--countdown",
            "1",
            env=workers.env(),
        ),
        run_cli(
            "submit",
            WORKER_APP,
            "e2e.record",
            "--kwargs",
            '{"label": "at-eta"}',
            "--eta",
            eta.isoformat(),
            env=workers.env(),
        ),
    )
    # Then each prints the id of its task
    assert (code, eta_code) == (0, 0), err + eta_err
    task_id, eta_id = str(uuid.UUID(out.strip())), str(uuid.UUID(eta_out.strip()))

    # And each row runs once, not before it was due
    async def both_succeeded() -> bool:
        return await state_counts(production.store_url) == {"succeeded": 2}

    await wait_until(both_succeeded, within=30, what="both submitted tasks to succeed")
    found = {
        str(row["id"]): row
        for row in await sql(
            production.store_url, "SELECT id, created_at, run_at, started_at FROM taskq_tasks"
        )
    }
    countdown_row, eta_row = found[task_id], found[eta_id]
    assert countdown_row["run_at"].timestamp() >= begun + 1
    assert countdown_row["run_at"] - countdown_row["created_at"] >= timedelta(seconds=0.999)
    assert countdown_row["started_at"] >= countdown_row["run_at"]
    assert eta_row["run_at"] == eta
    assert eta_row["started_at"] >= eta
    assert ran_labels(workers) == collections.Counter({"from-cli": 1, "at-eta": 1})
