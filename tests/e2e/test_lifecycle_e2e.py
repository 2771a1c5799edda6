"""Task lifecycle across real processes: cancel from another process, poison tasks that kill
their worker, garbage on the queue, and long tasks against RabbitMQ's consumer_timeout.

RabbitMQ + PostgreSQL only (a fresh vhost and database per test), with `taskq worker
tests.e2e.lifecycle_app:app` subprocesses. Every wait is on the database, a file the
worker's tasks write, RabbitMQ's own counters or a process exit, each with a deadline.

The long-task tests lower RabbitMQ's consumer_timeout (a node-wide setting, read when a
channel opens) to 3 s for their duration and restore the defaults in `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack

import taskq
from taskq import protocol
from taskq.client.rows import new_task_row
from tests.conftest import Backend
from tests.e2e import lifecycle_app
from tests.e2e.processes import (
    Ctl,
    WorkerProcess,
    Workers,
    cli_env,
    json_values,
    leader_pid,
    rabbitmqctl,
    run_cli,
    sql,
    wait_until,
)
from tests.servers import RabbitNode

LIFECYCLE_APP = "tests.e2e.lifecycle_app:app"
DEFAULT_CONSUMER_TIMEOUT_MS = 1_800_000
DEFAULT_CHANNEL_TICK_MS = 60_000


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def words(text: str) -> str:
    """CLI output with rich's line wrapping (80 columns without a terminal) undone."""
    return " ".join(text.split())


def cli_environment(production: Backend) -> dict[str, str]:
    return cli_env(TASKQ_BROKER_URL=production.broker_url, TASKQ_STORE_URL=production.store_url)


async def taskq_cli(production: Backend, *argv: str) -> str:
    """Run `taskq ARGV...` against the test's broker and store; → its stdout."""
    code, out, err = await run_cli(*argv, env=cli_environment(production))
    assert code == 0, f"taskq {' '.join(argv)} exited {code}:\n{out}\n{err}"
    return out


async def dead_letters_json(production: Backend, count: int) -> list[dict[str, Any]]:
    """`taskq dlq list default --json`, once it shows `count` letters (RabbitMQ moves a
    rejected message to the DLQ just after the row that says why is written)."""
    found: list[dict[str, Any]] = []

    async def listed() -> bool:
        nonlocal found
        found = json_values(await taskq_cli(production, "dlq", "list", "default", "--json"))
        return len(found) == count

    try:
        await wait_until(listed, within=15, what=f"{count} dead letters in default.dlq")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; listed: {found}") from None
    return found


async def queue_counts(vhost: str, queue: str, ctl: Ctl = rabbitmqctl) -> tuple[int, int]:
    """(ready, unacknowledged) messages of `queue`, as RabbitMQ counts them."""
    output = await ctl(
        "list_queues",
        "-p",
        vhost,
        "--no-table-headers",
        "name",
        "messages_ready",
        "messages_unacknowledged",
    )
    for line in output.splitlines():
        fields = line.split()
        if fields and fields[0] == queue:
            return int(fields[1]), int(fields[2])
    raise AssertionError(f"no queue {queue!r} in vhost {vhost!r}:\n{output}")


@contextlib.asynccontextmanager
async def lowered_consumer_timeout(node: RabbitNode, milliseconds: int) -> AsyncIterator[None]:
    """RabbitMQ closes a channel whose delivery stays unacked past `milliseconds`, checked
    every second. Both are read when a channel opens: start workers inside the block."""
    try:
        await node.ctl("eval", _set_env(consumer_timeout=milliseconds, channel_tick_interval=1000))
        yield
    finally:
        await node.ctl(
            "eval",
            _set_env(
                consumer_timeout=DEFAULT_CONSUMER_TIMEOUT_MS,
                channel_tick_interval=DEFAULT_CHANNEL_TICK_MS,
            ),
        )


def _set_env(**settings: int) -> str:
    """One `rabbitmqctl eval` expression setting each of `settings` (each call of rabbitmqctl
    starts an Erlang VM: half a second of CPU)."""
    return (
        ", ".join(f"ok = application:set_env(rabbit, {k}, {v})" for k, v in settings.items()) + "."
    )


# -- must-show 2: cancel a running task from another process --------------------------------


async def test_cancel_from_this_process_stops_the_task_in_a_worker_process(
    production: Backend, workers: Workers, tmp_path: Path
) -> None:
    # Given a task in a long await in a `taskq worker` subprocess
    e2e = lifecycle_app.build(production.broker_url, production.store_url)
    await workers.start(concurrency=2, app=LIFECYCLE_APP)
    started, cleaned = tmp_path / "started", tmp_path / "cleaned"
    async with e2e.app:
        handle = await e2e.hold.submit(60.0, str(started), str(cleaned))
        await wait_until(
            lambda: asyncio.to_thread(started.exists), within=15, what="the task to start"
        )
        assert await handle.status() is taskq.TaskStatus.RUNNING

        # When this process cancels it through its handle
        begun = time.monotonic()
        assert await handle.cancel() is True

        # Then within about a second its row says cancelled, and its `finally` has run
        async def cancelled() -> bool:
            return await handle.status() is taskq.TaskStatus.CANCELLED

        await wait_until(cancelled, within=5, what="the row to say cancelled", interval=0.02)
        took = time.monotonic() - begun
        assert took < 1.0, f"cancelled {took:.3f} s after cancel()"
        assert lines(cleaned) == ["finally ran"]
        try:
            await handle.result(timeout=5)
        except taskq.TaskCancelled:
            pass
        else:
            raise AssertionError("result() of a cancelled task did not raise TaskCancelled")
        assert [a["state"] for a in await handle.attempts()] == ["cancelled"]


async def test_taskq_cancel_prints_the_state_it_left_the_task_in(
    production: Backend, workers: Workers, tmp_path: Path
) -> None:
    # Given a task in a long await in a `taskq worker` subprocess
    e2e = lifecycle_app.build(production.broker_url, production.store_url)
    await workers.start(concurrency=2, app=LIFECYCLE_APP)
    started, cleaned = tmp_path / "started", tmp_path / "cleaned"
    async with e2e.app:
        handle = await e2e.hold.submit(60.0, str(started), str(cleaned))
        await wait_until(
            lambda: asyncio.to_thread(started.exists), within=15, what="the task to start"
        )

        # When an operator runs `taskq cancel ID`
        shown = await taskq_cli(production, "cancel", handle.id)

        # Then it waited for the worker, and prints the state the task ended in
        assert words(shown) == f"task {handle.id} is cancelled"
        assert await handle.status() is taskq.TaskStatus.CANCELLED
        assert lines(cleaned) == ["finally ran"]

        # And a second `taskq cancel` says the task had finished and changes nothing
        before = await handle.info()
        again = await taskq_cli(production, "cancel", handle.id)
        assert words(again) == (
            f"task {handle.id} had already finished (cancelled); nothing changed"
        )
        assert await handle.info() == before


# -- must-show 4: a poison task that kills its worker ---------------------------------------


async def run_workers_until(
    workers: Workers, done: Any, *, within: float, env: dict[str, str] | None = None
) -> tuple[list[WorkerProcess], WorkerProcess]:
    """Start a worker; each time it dies, start another, until `done()` holds.

    → (the workers that died, the one still running)."""
    deadline = time.monotonic() + within
    died: list[WorkerProcess] = []
    while True:
        worker = await workers.spawn(concurrency=4, app=LIFECYCLE_APP, env=env)

        async def exited_or_done(worker: WorkerProcess = worker) -> bool:
            return worker.process.poll() is not None or bool(await done())

        remaining = deadline - time.monotonic()
        await wait_until(exited_or_done, within=max(remaining, 0.1), what="the poison's end")
        if worker.process.poll() is None:
            return died, worker
        died.append(worker)


async def test_poison_task_is_dead_lettered_after_max_deliveries_and_replays_once_fixed(
    production: Backend, workers: Workers, tmp_path: Path
) -> None:
    # Given a task that kills its worker process while a flag file exists, with
    # max_deliveries=3, queued among ordinary tasks on the same queue
    e2e = lifecycle_app.build(production.broker_url, production.store_url)
    flag, runs = tmp_path / "poison-flag", tmp_path / "poison-runs"
    flag.touch()
    async with e2e.app:
        others = [await e2e.noop.submit(i) for i in range(10)]
        poisoned = await e2e.poison.submit(str(flag), str(runs))
        others += [await e2e.noop.submit(i) for i in range(10, 20)]

        # When a worker is started, and restarted each time it dies
        async def poison_ended() -> bool:
            return (await poisoned.status()).is_final

        died, survivor = await run_workers_until(workers, poison_ended, within=90)

        # Then the task killed exactly max_deliveries workers, then was dead-lettered
        limit = lifecycle_app.POISON_MAX_DELIVERIES
        assert [w.process.returncode for w in died] == [1] * limit
        assert len(lines(runs)) == limit
        info = await poisoned.info()
        assert (info.state, info.dead_reason) == (taskq.TaskStatus.FAILED, "max_deliveries")
        assert info.error is not None and info.error.type == "MaxDeliveriesExceeded"

        # And every other task on the queue completed
        results = await asyncio.gather(*(h.result(timeout=30) for h in others))
        assert results == [i * 2 for i in range(20)]

        # And `taskq dlq list` shows it, with the reason
        (letter,) = await dead_letters_json(production, 1)
        assert (letter["task_id"], letter["task"], letter["reason"]) == (
            poisoned.id,
            "lifecycle.poison",
            "max_deliveries",
        )
        assert letter["error_type"] == "MaxDeliveriesExceeded"

        # When the task is fixed and `taskq dlq replay` sends it back
        flag.unlink()
        replayed = await taskq_cli(
            production, "dlq", "replay", "default", "--id", poisoned.id, "--yes"
        )
        assert words(replayed) == "replayed 1 task(s) from default.dlq"

        # Then it runs once more, on the surviving worker, and succeeds
        assert await poisoned.result(timeout=30) == "survived"
        assert len(lines(runs)) == limit + 1
        assert await dead_letters_json(production, 0) == []
    assert survivor.process.poll() is None, survivor.output()


# -- must-show 5: garbage on the queue -------------------------------------------------------


async def test_garbage_on_the_queue_is_dead_lettered_with_reasons_and_the_worker_runs_on(
    production: Backend, workers: Workers
) -> None:
    # Given a running worker
    e2e = lifecycle_app.build(production.broker_url, production.store_url)
    worker = await workers.start(concurrency=4, app=LIFECYCLE_APP)
    app = e2e.app
    async with app:
        # And a task row whose message will arrive malformed (as from a buggy producer)
        malformed_id = str(uuid.uuid4())
        stored = protocol.Envelope(
            id=malformed_id,
            task="e2e.noop",
            queue="default",
            args=[1],
            kwargs={},
            created_at=time.time(),
        )
        await app.store.insert_task(new_task_row(stored))
        unknown = protocol.Envelope(
            id=str(uuid.uuid4()),
            task="nobody.registered.this",
            queue="default",
            args=[],
            kwargs={},
            created_at=time.time(),
        )
        wrong_types = {
            "v": protocol.VERSION,
            "id": malformed_id,
            "task": "e2e.noop",
            "queue": "default",
            "args": "not a list",
            "kwargs": {},
        }
        garbage = [
            (os.urandom(64), "random-bytes"),
            (msgpack.packb([1, 2, 3]), "msgpack-list"),
            (msgpack.packb(wrong_types), malformed_id),
            (protocol.encode(unknown, max_bytes=app.settings.max_payload_bytes), unknown.id),
        ]

        # When garbage is published to its queue: random bytes, msgpack of the wrong shape
        # (without and with a task id), and a valid envelope naming an unknown task
        await app.declare("default")
        for body, message_id in garbage:
            await app.broker.publish("default", body, priority=0, message_id=message_id)

        # Then the worker keeps running tasks
        after = await e2e.noop.submit(21)
        assert await after.result(timeout=15) == 42

        # And all four are in default.dlq; those that name a task say why, by task id
        letters = await dead_letters_json(production, 4)
        by_id = {x["task_id"]: x for x in letters if x["task_id"] is not None}
        nameless = [x for x in letters if x["task_id"] is None]
        assert (by_id[malformed_id]["reason"], by_id[malformed_id]["error_type"]) == (
            "malformed",
            "ProtocolError",
        )
        assert (by_id[unknown.id]["reason"], by_id[unknown.id]["error_type"]) == (
            "unknown_task",
            "UnknownTask",
        )
        assert len(nameless) == 2
        browsed = await app.dlq("default").list()
        assert sorted(letter.reason for letter in browsed) == sorted(x["reason"] for x in letters)

        # And the rows that exist record why
        rows = {
            str(row["id"]): row
            for row in await sql(
                production.store_url, "SELECT id, state, dead_reason FROM taskq_tasks"
            )
        }
        assert (rows[malformed_id]["state"], rows[malformed_id]["dead_reason"]) == (
            "failed",
            "malformed",
        )
        assert (rows[unknown.id]["state"], rows[unknown.id]["dead_reason"]) == (
            "failed",
            "unknown_task",
        )
        assert worker.process.poll() is None, worker.output()

        # And the two that name no task (random bytes, a msgpack list) are listed as
        # malformed too: the reason taskq gives, not the broker's bare "rejected"
        assert [x["reason"] for x in nameless] == ["malformed", "malformed"], nameless


# -- long tasks and RabbitMQ's consumer_timeout ---------------------------------------------


async def test_a_task_past_consumer_timeout_without_a_lease_still_runs_once(
    private_production: Backend,
    private_workers: Workers,
    private_rabbit: RabbitNode,
    tmp_path: Path,
) -> None:
    """RabbitMQ closes the channel of a delivery unacked past consumer_timeout and
    redelivers the message; the worker that runs the task keeps it by a lease from then on
    and acks the copy, so it runs once (issue 17, defect 4: it used to run again)."""
    e2e = lifecycle_app.build(private_production.broker_url, private_production.store_url)
    runs = tmp_path / "runs"
    async with lowered_consumer_timeout(private_rabbit, 3000):
        # Given a worker that would ack early only after 600 s, and a 3 s consumer_timeout
        await private_workers.start(
            concurrency=2, app=LIFECYCLE_APP, env={"TASKQ_LEASE_AFTER": "600"}
        )
        async with e2e.app:
            # When a task runs for 6 s
            handle = await e2e.long.submit(6.0, str(runs))

            # Then RabbitMQ took the message back, and the worker kept the run by a lease
            assert await handle.result(timeout=20) == 1
            info = await handle.info()
    assert (info.state, info.attempts) == (taskq.TaskStatus.SUCCEEDED, 1)
    assert len(lines(runs)) == 1
    worker_log = "".join(text for _, text in private_workers.outputs())
    assert "consumer_timeout" in worker_log and "kept by a lease" in worker_log


async def test_lease_keeps_a_task_past_consumer_timeout_running_exactly_once(
    private_production: Backend,
    private_workers: Workers,
    private_rabbit: RabbitNode,
    tmp_path: Path,
) -> None:
    """The fix: past `lease_after` the worker acks the message and keeps the task by a lease
    in the store, so consumer_timeout has nothing to time out."""
    e2e = lifecycle_app.build(private_production.broker_url, private_production.store_url)
    runs = tmp_path / "runs"
    async with lowered_consumer_timeout(private_rabbit, 3000):
        # Given a worker that acks after 1 s, and a 3 s consumer_timeout
        await private_workers.start(
            concurrency=2, app=LIFECYCLE_APP, env={"TASKQ_LEASE_AFTER": "1"}
        )
        async with e2e.app:
            # When a task runs for 8 s
            begun = time.monotonic()
            handle = await e2e.long.submit(8.0, str(runs))

            # Then within a few seconds it is kept by a lease and its message is acked
            async def leased() -> bool:
                return (await handle.info()).lease_until is not None

            await wait_until(leased, within=10, what="the task to be kept by a lease")
            assert await queue_counts(private_workers.vhost, "default", private_rabbit.ctl) == (
                0,
                0,
            )

            # And it runs to the end exactly once
            assert await handle.result(timeout=30) == 1
            assert time.monotonic() - begun >= 8.0
            info = await handle.info()
    assert (info.state, info.attempts) == (taskq.TaskStatus.SUCCEEDED, 1)
    assert len(lines(runs)) == 1


async def test_leader_requeues_a_leased_task_whose_worker_was_killed(
    production: Backend, workers: Workers, tmp_path: Path
) -> None:
    # Given a `taskq scheduler` that leads, and a worker that acks long tasks after 1 s
    # and holds their leases for 10 s (renewed by its heartbeat)
    e2e = lifecycle_app.build(production.broker_url, production.store_url)
    runs = tmp_path / "runs"
    lease = {"TASKQ_LEASE_AFTER": "1", "TASKQ_LEASE_DURATION": "10"}
    scheduler = await workers.start_scheduler(app=LIFECYCLE_APP)

    async def scheduler_leads() -> bool:
        return await leader_pid(production.store_url) == scheduler.pid

    await wait_until(scheduler_leads, within=15, what="taskq scheduler to lead")
    doomed = await workers.start(concurrency=2, app=LIFECYCLE_APP, scheduler=False, env=lease)
    async with e2e.app:
        handle = await e2e.long.submit(60.0, str(runs))

        async def leased() -> bool:
            # (the lease is committed first, then the message acked: wait for both)
            if (await handle.info()).lease_until is None:
                return False
            return await queue_counts(workers.vhost, "default") == (0, 0)

        await wait_until(leased, within=15, what="the task kept by a lease, its message acked")

        # When its worker is killed with SIGKILL (its message was acked: RabbitMQ has
        # nothing to redeliver) and another worker is running
        await workers.kill(doomed)
        crashed = await handle.info()
        assert (crashed.state, crashed.attempts) == (taskq.TaskStatus.RUNNING, 1)
        assert crashed.lease_until is not None
        assert await queue_counts(workers.vhost, "default") == (0, 0)
        await workers.start(concurrency=2, app=LIFECYCLE_APP, scheduler=False, env=lease)

        # Then once the lease lapses the leader requeues the task, and it completes
        assert await handle.result(timeout=40) == 2
        attempts = await handle.attempts()
        info = await handle.info()
    assert (info.state, info.attempts) == (taskq.TaskStatus.SUCCEEDED, 2)
    assert [a["state"] for a in attempts] == ["succeeded"]
    assert attempts[0]["attempt"] == 2
    assert attempts[0]["started_at"] >= crashed.lease_until
    assert [line.split()[1] for line in lines(runs)] == ["1", "2"]


async def test_graceful_stop_after_a_leased_task_does_not_hand_back_a_running_task(
    production: Backend, workers: Workers, tmp_path: Path
) -> None:
    """A task that was acked early must not count twice as settled: on a graceful stop the
    consumer channel stays open until every running task's message is settled, so a task
    still within its `lease_after` is not handed to another worker while it runs."""
    e2e = lifecycle_app.build(production.broker_url, production.store_url)
    lease = {"TASKQ_LEASE_AFTER": "2"}
    leased_runs, running_runs = tmp_path / "leased-runs", tmp_path / "running-runs"
    first = await workers.start(concurrency=2, app=LIFECYCLE_APP, env=lease)
    async with e2e.app:
        # Given a worker that ran a task long enough to be acked early and kept by a lease
        leased = await e2e.long.submit(2.5, str(leased_runs))

        async def kept_by_lease() -> bool:
            return (await leased.info()).lease_until is not None

        await wait_until(kept_by_lease, within=15, what="the first task to be kept by a lease")
        assert await leased.result(timeout=15) == 1

        # And that now runs a second task, still short of lease_after (its message unacked)
        running = await e2e.long.submit(6.0, str(running_runs))
        await wait_until(
            lambda: asyncio.to_thread(running_runs.exists),
            within=15,
            what="the second task to start",
            interval=0.02,
        )

        # When the worker is stopped gracefully (SIGTERM) while it runs, and a second
        # worker starts
        first.process.send_signal(signal.SIGTERM)
        await workers.spawn(concurrency=2, app=LIFECYCLE_APP, env=lease)

        # Then the first worker finishes the task: it runs once, as attempt 1
        assert await running.result(timeout=30) == 1
        assert await asyncio.to_thread(first.process.wait, 30) == 0
    assert len(lines(running_runs)) == 1


async def test_task_prefetched_behind_leased_tasks_runs_exactly_once(
    private_production: Backend,
    private_workers: Workers,
    private_rabbit: RabbitNode,
    tmp_path: Path,
) -> None:
    """Leased tasks hold no prefetch slot, so RabbitMQ hands their worker more messages
    than it has free slots; such a message waits in the worker, unacked, and must still
    not outlive consumer_timeout into a second delivery that runs the task twice."""
    e2e = lifecycle_app.build(private_production.broker_url, private_production.store_url)
    long_runs, waiting_runs = tmp_path / "long-runs", tmp_path / "waiting-runs"
    async with lowered_consumer_timeout(private_rabbit, 3000):
        # Given a worker with two slots that acks long tasks after 1 s, and a 3 s
        # consumer_timeout
        await private_workers.start(
            concurrency=2, app=LIFECYCLE_APP, env={"TASKQ_LEASE_AFTER": "1"}
        )
        async with e2e.app:
            # And two 8 s tasks on leases, which fill its slots
            long = [await e2e.long.submit(8.0, str(long_runs)) for _ in range(2)]

            async def both_leased() -> bool:
                return all([(await h.info()).lease_until is not None for h in long])

            await wait_until(both_leased, within=10, what="both long tasks to be on leases")

            # When a short task is queued behind them
            waiting = await e2e.long.submit(0.5, str(waiting_runs))

            # Then every task runs exactly once
            assert await waiting.result(timeout=30) == 1
            assert await asyncio.gather(*(h.result(timeout=30) for h in long)) == [1, 1]
            info = await waiting.info()
    assert (info.state, info.attempts) == (taskq.TaskStatus.SUCCEEDED, 1)
    assert len(lines(waiting_runs)) == 1
    assert len(lines(long_runs)) == 2
