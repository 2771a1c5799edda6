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

import aio_pika
import msgpack

from tests.chaos.conftest import Scene
from tests.chaos.ledger import Verdict
from tests.e2e.processes import WorkerProcess, wait_for_amqp

DRAIN = 120.0


def holds(verdict: Verdict, *, dead: dict[str, int] | None = None) -> None:
    assert verdict.lost == 0, verdict
    assert verdict.stuck == 0, verdict
    assert verdict.duplicates == verdict.explained, verdict
    assert verdict.dead == (dead or {}), verdict


async def load(scene: Scene, n: int, seconds: float = 0.02) -> None:
    for _ in range(n):
        await scene.ledger.submit(scene.client.work, seconds)


async def test_kill_9_of_a_worker_mid_batch(scene: Scene) -> None:
    # Given two workers taking a batch of tasks
    first = await scene.start_worker()
    await scene.start_worker()
    await load(scene, 300 if not scene.full else 3000, seconds=0.05)
    # When one is killed with SIGKILL while it holds tasks, and replaced
    await asyncio.sleep(0.5)  # (let it take a share: the fault must land mid-batch)
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
    await asyncio.sleep(0.5)
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
    producing = asyncio.create_task(load(scene, 400, seconds=0.01))
    await asyncio.sleep(0.5)
    # When RabbitMQ stops for a few seconds and starts again
    await scene.rabbit.ctl("stop_app")
    await asyncio.sleep(3 if not scene.full else 15)  # (the outage itself)
    await scene.rabbit.ctl("start_app")
    await wait_for_amqp(scene.broker_url)
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
        await asyncio.sleep(2)  # (the fault's own rhythm)
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
    await asyncio.to_thread(scene.postgres.stop)
    await asyncio.sleep(5 if not scene.full else 20)  # (the outage itself)
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
    # Given two workers that both stand for leadership, and delayed tasks and retries due soon
    first = await scene.start_worker()
    second = await scene.start_worker()
    for _ in range(50):
        await scene.ledger.submit(scene.client.work, 0.01, countdown=2)
    for _ in range(10):
        await scene.ledger.submit(scene.client.flaky, 0.01)
    # When one is killed and the other frozen (SIGSTOP) for a while, then thawed
    await scene.workers.kill(first)  # type: ignore[arg-type]
    os.kill(second.pid, signal.SIGSTOP)  # type: ignore[attr-defined]
    await scene.start_worker()
    await asyncio.sleep(5)  # (the freeze itself: a new leader takes over meanwhile)
    os.kill(second.pid, signal.SIGCONT)  # type: ignore[attr-defined]
    await scene.ledger.drain(DRAIN)
    # Then each delayed task ran once (a thawed old leader publishes nothing twice)
    verdict = scene.record(await scene.ledger.verdict())
    holds(verdict)
    assert verdict.duplicates == 0, verdict
