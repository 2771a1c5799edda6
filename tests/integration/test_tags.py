"""Routing by worker tags inside one process, on the embedded default (memory broker +
SQLite) and on RabbitMQ + PostgreSQL: a tagged task runs only on a worker with all its tags,
on every path that publishes (submit, submit_many, a workflow, a delayed task the leader
publishes, a dead letter replayed), and waits `queued` while no such worker runs.
(tests/e2e/test_tags_e2e.py does the same with `taskq worker` processes.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import taskq
from tests.conftest import Backend
from tests.support import eventually

DEADLINE = 15.0
Status = taskq.TaskStatus


async def stays(read: Callable[[], Awaitable[Status]], state: Status, *, seconds: float) -> None:
    """`read()` gives `state` on every look for `seconds` (a bounded check that something
    does not happen)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert await read() is state
        await asyncio.sleep(0.05)


def tagged_app(backend: Backend) -> tuple[taskq.App, taskq.Task[[int], int]]:
    app = backend.app()

    @app.task(name="tags.double")
    async def double(i: int) -> int:
        return 2 * i

    return app, double


async def test_tagged_tasks_run_only_on_a_worker_with_all_their_tags(backend: Backend) -> None:
    # Given a worker tagged gpu and eu, and one without tags
    app, double = tagged_app(backend)
    async with app, app.worker(tags={"gpu", "eu"}) as tagged, app.worker() as plain:
        # When tasks tagged gpu, eu, both, and none are submitted
        gpu = await double.options(tags={"gpu"}).submit(1)
        both = await double.options(tags={"eu", "gpu"}).submit(2)
        untagged = [await double.submit(i) for i in range(20)]
        # Then the tagged ones run on the tagged worker, from their tagged queues
        for handle, value in ((gpu, 2), (both, 4)):
            assert await handle.result(timeout=DEADLINE) == value
            info = await handle.info()
            assert info.worker_id == tagged.id
        assert (await gpu.info()).queue == "default@gpu"
        assert (await both.info()).queue == "default@eu+gpu"
        # ... and the untagged ones on either (the plain worker takes its share)
        assert [await h.result(timeout=DEADLINE) for h in untagged] == [2 * i for i in range(20)]
        ran_on = {(await h.info()).worker_id for h in untagged}
        assert ran_on <= {tagged.id, plain.id}
        assert (await untagged[0].info()).queue == "default"


async def test_a_task_whose_tags_no_worker_has_waits_then_runs(backend: Backend) -> None:
    # Given a worker tagged gpu only
    app, double = tagged_app(backend)
    async with app:
        async with app.worker(tags={"gpu"}):
            # When a task tagged eu (and one tagged gpu and eu) is submitted
            eu = await double.options(tags={"eu"}).submit(3)
            both = await double.options(tags={"gpu", "eu"}).submit(4)
            # Then neither starts: they wait queued, their messages kept in their queues
            await stays(eu.status, Status.QUEUED, seconds=1.0)
            assert await both.status() is Status.QUEUED
            stats = await app.broker.stats("default@eu")
            assert stats is not None and stats.ready == 1 and stats.consumers == 0
        # And once a worker tagged eu and gpu starts, both run
        async with app.worker(tags={"eu", "gpu"}) as tagged:
            assert await eu.result(timeout=DEADLINE) == 6
            assert await both.result(timeout=DEADLINE) == 8
            assert (await eu.info()).worker_id == tagged.id


async def test_every_publishing_path_routes_by_tags(backend: Backend) -> None:
    # Given a worker tagged gpu, and tasks tagged gpu sent every way taskq publishes
    app, double = tagged_app(backend)
    gpu = double.options(tags={"gpu"})
    async with app, app.worker(tags={"gpu"}) as tagged:
        batch = await gpu.submit_many([(1,), (2,), (3,)])  # one insert, pipelined publishes
        delayed = await gpu.options(countdown=0.2).submit(5)  # the leader publishes it
        flow = await taskq.chain(gpu.s(1), gpu.s()).submit()  # a workflow, step released
        # Then each runs, on the tagged worker, from the tagged queue
        assert [await h.result(timeout=DEADLINE) for h in batch] == [2, 4, 6]
        assert await delayed.result(timeout=DEADLINE) == 10
        assert await flow.result(timeout=DEADLINE) == 4
        for handle in (*batch, delayed):
            info = await handle.info()
            assert (info.queue, info.worker_id) == ("default@gpu", tagged.id)


async def test_a_tagged_dead_letter_is_replayed_to_its_tagged_queue(backend: Backend) -> None:
    # Given a task tagged gpu that failed once, dead-lettered into default@gpu.dlq
    app = backend.app()
    fail = {"now": True}

    @app.task(name="tags.flaky", tags={"gpu"})
    async def flaky() -> str:
        if fail["now"]:
            raise RuntimeError("not yet")
        return "done"

    async with app, app.worker(tags={"gpu"}) as tagged:
        handle = await flaky.submit()
        await eventually(handle.info, lambda info: info.dead_reason is not None, what="dead")
        dead = app.dlq("default@gpu")
        letters = await eventually(dead.list, what="a dead letter in default@gpu.dlq")
        assert [letter.task_id for letter in letters] == [handle.id]
        # When it is replayed
        fail["now"] = False
        assert await dead.replay() == 1
        # Then it runs again on the tagged worker
        assert await handle.result(timeout=DEADLINE) == "done"
        assert (await handle.info()).worker_id == tagged.id
