"""Chaos scenarios: a fault under load, then the ledger's verdict (tests/chaos/ledger.py).

Every scenario must end with nothing lost and nothing stuck; a task that ran twice must be
explained by a crash and counted in its attempts. Each prints its figures as a row of the
table at the end of the run (and in docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aio_pika
import asyncpg
import msgpack

from tests.chaos import chaos_app
from tests.chaos.conftest import Scene
from tests.chaos.ledger import Verdict
from tests.e2e.processes import (
    WorkerProcess,
    cli_env,
    plain_postgres_url,
    run_cli,
    wait_for_amqp,
)
from tests.support import eventually

DRAIN = 120.0


async def ran_some(scene: Scene, n: int) -> None:
    """Until the tasks have recorded `n` runs: workers are mid-batch."""
    await eventually(scene.ledger.effects, lambda ran: ran >= n, what=f"{n} runs", within=60)


async def acknowledged(scene: Scene, n: int) -> None:
    """Until `n` submits have returned."""
    await eventually(
        lambda: asyncio.sleep(0, len(scene.ledger.acknowledged)),
        lambda count: count >= n,
        what=f"{n} acknowledged submits",
        within=60,
    )


async def consuming_again(scene: Scene, consumers: int) -> None:
    """Until queue `default` has its consumers back (RabbitMQ's own count)."""
    vhost = scene.broker_url.rsplit("/", 1)[1]

    async def counted() -> int:
        output = await scene.rabbit.ctl(
            "list_queues", "-p", vhost, "--no-table-headers", "name", "consumers"
        )
        found = dict(line.split() for line in output.splitlines() if line.strip())
        return int(found.get("default", 0))

    await eventually(counted, lambda n: n >= consumers, what="the consumers back", within=60)


def heartbeats_failed(scene: Scene) -> int:
    """Failed heartbeats the live workers have logged so far."""
    return sum(
        1
        for worker in scene.workers.alive()
        for line in worker.output().splitlines()
        if "heartbeat of" in line and "failed" in line
    )


async def tick_count(scene: Scene) -> int:
    (row,) = await scene.ledger.rows(
        "SELECT count(*) AS n FROM taskq_tasks WHERE name = 'chaos.tick' AND state = 'succeeded'"
    )
    return int(row["n"])


def holds(verdict: Verdict, *, dead: dict[str, int] | None = None) -> None:
    assert verdict.lost == 0, verdict
    assert verdict.stuck == 0, verdict
    assert verdict.duplicates == verdict.explained, verdict
    assert verdict.dead == (dead or {}), verdict


async def load(scene: Scene, n: int, seconds: float = 0.02) -> None:
    for _ in range(n):
        await scene.ledger.submit(scene.client.work, seconds)


async def load_until(scene: Scene, done: asyncio.Event, seconds: float) -> None:
    """Submit steadily until `done` (a fixed count could run out before a fault begins)."""
    while not done.is_set():
        await scene.ledger.submit(scene.client.work, seconds)


async def test_kill_9_of_a_worker_mid_batch(scene: Scene) -> None:
    # Given two workers taking a batch of tasks
    first = await scene.start_worker()
    await scene.start_worker()
    await load(scene, 300 if not scene.full else 3000, seconds=0.05)
    # When one is killed with SIGKILL while it holds tasks (mid-batch), and replaced
    await ran_some(scene, 20)
    await scene.workers.kill(first)  # type: ignore[arg-type]
    await scene.start_worker()
    await scene.ledger.drain(DRAIN)
    holds(scene.record(await scene.ledger.verdict()))


async def test_sigterm_drain_with_short_and_long_grace(scene: Scene) -> None:
    # Given workers stopped gracefully under load: one with a short grace (its running tasks
    # are handed back), one with a long one (they finish)
    short = await scene.start_worker(grace=0.5)
    long = await scene.start_worker(grace=30)
    await load(scene, 200, seconds=0.3)
    await ran_some(scene, 16)  # (a first wave done: the next one runs when SIGTERM lands)
    for worker in (short, long):
        await asyncio.to_thread(worker.stop)  # type: ignore[attr-defined]
    # When fresh workers take over
    await scene.start_worker()
    await scene.ledger.drain(DRAIN)
    holds(scene.record(await scene.ledger.verdict()))


async def test_poison_next_to_innocent_tasks(scene: Scene) -> None:
    # Given a task that kills its worker among 30 that do not, the worker restarted after
    # each death (as systemd would)
    worker: WorkerProcess = await scene.workers.spawn(
        concurrency=2, app="tests.chaos.chaos_app:app"
    )
    await scene.ledger.submit(scene.client.work, 1.0)
    await scene.ledger.submit(scene.client.poison)
    await load(scene, 30)

    async def restart_the_dead() -> None:
        nonlocal worker
        if worker.process.poll() is not None:
            worker = await scene.workers.spawn(concurrency=2, app="tests.chaos.chaos_app:app")

    await scene.ledger.drain(DRAIN, step=restart_the_dead)
    # Then only the poison is dead-lettered
    holds(scene.record(await scene.ledger.verdict()), dead={"max_deliveries": 1})


async def test_broker_stop_and_start_under_load(scene: Scene) -> None:
    # Given workers and a producer submitting steadily
    await scene.start_worker()
    done = asyncio.Event()
    producing = asyncio.create_task(load_until(scene, done, seconds=0.01))
    await acknowledged(scene, 50)
    # When RabbitMQ stops while the producer goes on (its submits wait in the store for the
    # relay), and starts again
    await scene.rabbit.ctl("stop_app")
    await acknowledged(scene, len(scene.ledger.acknowledged) + (50 if not scene.full else 1000))
    await scene.rabbit.ctl("start_app")
    await wait_for_amqp(scene.broker_url)
    await acknowledged(scene, len(scene.ledger.acknowledged) + 50)
    done.set()
    await producing
    await scene.ledger.drain(DRAIN)
    verdict = scene.record(await scene.ledger.verdict())
    holds(verdict)
    assert verdict.unknown == 0, verdict  # (a submit needs PostgreSQL, not RabbitMQ)


async def test_connections_closed_every_few_seconds(scene: Scene) -> None:
    # Given workers running 1 s tasks
    await scene.start_worker(concurrency=16)
    await scene.start_worker(concurrency=16)
    await load(scene, 150, seconds=1.0)
    # When RabbitMQ closes every connection every 2 s for a while
    until = time.monotonic() + (15 if not scene.full else 60)
    while time.monotonic() < until:
        await consuming_again(scene, 2)  # (each close as soon as both workers are back)
        await scene.rabbit.ctl("close_all_connections", "chaos test")
    await wait_for_amqp(scene.broker_url)
    await scene.ledger.drain(DRAIN)
    verdict = scene.record(await scene.ledger.verdict())
    holds(verdict)
    # And no task ran twice: a dropped connection is no crash
    assert verdict.duplicates == 0, verdict


async def test_postgres_restart_and_stop_under_load(scene: Scene) -> None:
    # Given workers and a steady load
    await scene.start_worker()
    await load(scene, 200, seconds=0.02)
    # When PostgreSQL restarts, then stops for a while and starts again
    await asyncio.to_thread(scene.postgres.restart)
    await load(scene, 100, seconds=0.02)
    failed = heartbeats_failed(scene)
    await asyncio.to_thread(scene.postgres.stop)
    # (the outage lasts until the worker has felt it: a heartbeat failed, or 4 in --chaos-full)
    await eventually(
        lambda: asyncio.sleep(0, heartbeats_failed(scene)),
        lambda n: n >= failed + (1 if not scene.full else 4),
        what="a heartbeat to fail while PostgreSQL is down",
        within=60,
    )
    await asyncio.to_thread(scene.postgres.start)
    await load(scene, 100, seconds=0.02)
    await scene.ledger.drain(DRAIN)
    holds(scene.record(await scene.ledger.verdict()))


async def test_garbage_wrong_schema_oversize_and_unknown_messages(scene: Scene) -> None:
    # Given a worker, and hostile bytes published straight to its queue beside real tasks
    await scene.start_worker()
    await load(scene, 50)
    connection = await aio_pika.connect(scene.broker_url)
    try:
        channel = await connection.channel()
        hostile = [
            b"\xc1 not msgpack",
            msgpack.packb({"v": 1, "id": "not-a-uuid", "task": "chaos.work", "queue": "default"}),
            msgpack.packb([1, 2, 3]),
            os.urandom(2 * 1024 * 1024),  # over the 1 MiB limit
            msgpack.packb(
                {"v": 1, "id": "0b6c5f8e-6f2a-4c8e-9a43-3b1f1d2c9e10", "task": "no.such.task",
                 "queue": "default", "args": [], "kwargs": {}}
            ),
        ]  # fmt: skip
        exchange = await channel.get_exchange("taskq.tasks")
        for body in hostile:
            await exchange.publish(aio_pika.Message(body), routing_key="default")
    finally:
        await connection.close()
    await load(scene, 50)
    await scene.ledger.drain(DRAIN)
    # Then the real tasks all ran, and each hostile message was dead-lettered once
    verdict = scene.record(await scene.ledger.verdict())
    holds(verdict, dead={"malformed": 4, "unknown_task": 1})


async def test_a_leader_killed_and_a_leader_frozen_while_delayed_tasks_are_due(
    scene: Scene,
) -> None:
    # Given two workers that both stand for leadership, a schedule ticking every second, and
    # delayed tasks and retries due soon
    ticking = {chaos_app.TICKS_ENV: "1"}
    first = await scene.start_worker(env=ticking)
    second = await scene.start_worker(env=ticking)
    for _ in range(50):
        await scene.ledger.submit(scene.client.work, 0.01, countdown=2)
    for _ in range(10):
        await scene.ledger.submit(scene.client.flaky, 0.01)
    # When one is killed and the other frozen (SIGSTOP) for a while, then thawed
    await scene.workers.kill(first)  # type: ignore[arg-type]
    os.kill(second.pid, signal.SIGSTOP)  # type: ignore[attr-defined]
    await scene.start_worker(env=ticking)
    # (the freeze lasts until the delayed tasks are due by the store's clock: they come due
    # while one leader is dead and the other frozen; the frozen one may still hold the lock)
    await eventually(
        lambda: scene.ledger.rows(
            "SELECT count(*) AS n FROM taskq_tasks WHERE name = 'chaos.work' AND run_at < now()"
        ),
        lambda rows: rows[0]["n"] == 50,
        what="the delayed tasks to come due",
    )
    os.kill(second.pid, signal.SIGCONT)  # type: ignore[attr-defined]
    await eventually(
        lambda: tick_count(scene), lambda n: n >= 5, what="five ticks run", within=60
    )  # fmt: skip
    await scene.ledger.drain(DRAIN)
    # Then each delayed task ran once (a thawed old leader publishes nothing twice)
    verdict = scene.record(await scene.ledger.verdict())
    holds(verdict)
    assert verdict.duplicates == 0, verdict
    # And ticks went on through the handover, each tick submitted and run once
    ticks = await scene.ledger.rows(
        "SELECT t.run_at, count(*) AS tasks, count(e.task_id) AS runs FROM taskq_tasks t "
        "LEFT JOIN chaos_effects e ON e.task_id = t.id WHERE t.name = 'chaos.tick' "
        "AND t.state = 'succeeded' GROUP BY t.run_at"
    )
    assert len(ticks) >= 5, ticks
    assert all((tick["tasks"], tick["runs"]) == (1, 1) for tick in ticks), ticks


async def test_an_async_def_that_never_yields(scene: Scene) -> None:
    # Given workers with a 2 s hard time limit, and a task that never yields among others
    await scene.start_worker(options=["--hard-time-limit", "2"])
    await scene.ledger.submit(scene.client.spin)
    await load(scene, 50)
    await scene.ledger.drain(DRAIN)
    # Then it alone is ended and dead-lettered; every other task ran
    holds(scene.record(await scene.ledger.verdict()), dead={"time_limit": 1})


async def test_a_task_leaking_memory_past_max_memory_per_child(scene: Scene) -> None:
    # Given a worker recycled past 200 MB, and tasks that each leak 40 MiB
    await scene.start_worker(concurrency=2, options=["--max-memory-per-child", "200MB"])
    for _ in range(12):
        await scene.ledger.submit(scene.client.leak, 40)
    await load(scene, 30)
    await scene.ledger.drain(DRAIN)
    # Then the worker is replaced as it grows, and nothing is lost or run twice
    verdict = scene.record(await scene.ledger.verdict())
    holds(verdict)
    assert verdict.duplicates == 0, verdict


async def test_a_queue_length_limit_reached(scene: Scene) -> None:
    # Given a queue limited to 20 messages that refuses more (no worker consumes yet)
    vhost = scene.broker_url.rsplit("/", 1)[1]
    await scene.rabbit.ctl(
        "set_policy", "-p", vhost, "--apply-to", "queues", "limit", "^default$",
        '{"max-length": 20, "overflow": "reject-publish"}',
    )  # fmt: skip
    await scene.client.app.declare("default")
    # When 50 tasks are submitted
    await load(scene, 50)
    # Then the submits past the limit raise (unknown to the ledger), and once a worker
    # drains the queue every acknowledged task runs
    await scene.start_worker()
    await scene.ledger.drain(DRAIN)
    verdict = scene.record(await scene.ledger.verdict())
    holds(verdict)
    assert verdict.acknowledged >= 20 and verdict.acknowledged + verdict.unknown == 50, verdict


async def test_expiry_while_no_worker_runs(scene: Scene) -> None:
    # Given tasks that expire in 1 s, submitted while no worker runs, and others that do not
    for _ in range(20):
        await scene.ledger.submit(scene.client.work, 0.01, expires=1)
    await load(scene, 20)
    # (past their expiry, by the store's clock: what the scenario is about)
    await eventually(
        lambda: scene.ledger.rows("SELECT count(*) AS n FROM taskq_tasks WHERE expires_at < now()"),
        lambda rows: rows[0]["n"] == 20,
        what="the 20 tasks past their expiry",
    )
    # When a worker starts
    await scene.start_worker()
    await scene.ledger.drain(DRAIN)
    # Then the expired never ran and are dead-lettered as expired; the others ran
    holds(scene.record(await scene.ledger.verdict()), dead={"expired": 20})


async def test_a_lost_publisher_confirm(scene: Scene) -> None:
    # Given a worker, and submits in flight when every connection is closed
    await scene.start_worker()
    producing = asyncio.create_task(load(scene, 200, seconds=0.01))
    await acknowledged(scene, 10)  # (submits under way when the connections close)
    await scene.rabbit.ctl("close_all_connections", "chaos: confirms lost")
    await producing
    await wait_for_amqp(scene.broker_url)
    await scene.ledger.drain(DRAIN)
    # Then a submit whose confirm was lost was retried or relayed: nothing is lost or doubled
    verdict = scene.record(await scene.ledger.verdict())
    holds(verdict)
    assert verdict.duplicates == 0, verdict


async def test_consumer_timeout_exceeded(timeout_scene: Scene) -> None:
    scene = timeout_scene
    # Given a worker that would ack early only after 600 s, on a node whose consumer_timeout
    # is 5 s, and tasks of 12 s beside quick ones
    await scene.start_worker(env={"TASKQ_LEASE_AFTER": "600"})
    for _ in range(3):
        await scene.ledger.submit(scene.client.work, 12.0)
    await load(scene, 30)
    await scene.ledger.drain(DRAIN)
    # Then each long task ran once, kept by a lease after RabbitMQ closed its channel
    verdict = scene.record(await scene.ledger.verdict())
    holds(verdict)
    assert verdict.duplicates == 0, verdict
    log = "".join(text for _, text in scene.workers.outputs())
    assert "consumer_timeout" in log, log[-2000:]


async def test_credentials_never_appear_in_any_output(scene: Scene, tmp_path: Path) -> None:
    # Given a broker user and a database role with distinctive passwords
    secret = "Chaos-S3cr3t-Pw-7f3a"
    vhost = scene.broker_url.rsplit("/", 1)[1]
    await scene.rabbit.ctl("add_user", "chaos", secret)
    await scene.rabbit.ctl("set_permissions", "-p", vhost, "chaos", ".*", ".*", ".*")
    database = scene.store_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(plain_postgres_url(scene.postgres.url()), timeout=10)
    try:
        await admin.execute(f"CREATE ROLE chaos LOGIN SUPERUSER PASSWORD '{secret}'")
    finally:
        await admin.close()
    broker = f"amqp://chaos:{secret}@127.0.0.1:{scene.rabbit.port}/{vhost}"
    store = f"postgresql+asyncpg://chaos:{secret}@127.0.0.1:{scene.postgres.port}/{database}"
    # When workers run with them through faults, and the CLI is used, right and wrong
    scene.workers.amqp_url, scene.workers.store_url = broker, store
    await scene.start_worker()
    await load(scene, 50)
    await scene.rabbit.ctl("close_all_connections", "chaos: credentials")
    await scene.ledger.drain(DRAIN)
    env = cli_env(TASKQ_BROKER_URL=broker, TASKQ_STORE_URL=store)
    wrong = cli_env(
        TASKQ_BROKER_URL=broker.replace(secret, secret + "x"),
        TASKQ_STORE_URL=store.replace(secret, secret + "x"),
    )
    outputs = [text for _, text in scene.workers.outputs()]
    for argv, environment in (
        (("status",), env),
        (("workers",), env),
        (("tasks", "--limit", "5"), env),
        (("dlq", "list"), env),
        (("status",), wrong),
        (("worker", "tests.chaos.chaos_app:app"), wrong),
    ):
        _, out, err = await run_cli(*argv, env=environment, limit=60)
        outputs += [out, err]
    # Then the password appears in none of them
    holds(scene.record(await scene.ledger.verdict()))
    leaked = [text for text in outputs if secret in text]
    assert leaked == [], leaked[0][-2000:]
