"""Workflows (issue 18) across real processes: chain, group and chord run by `taskq worker`
subprocesses on RabbitMQ + PostgreSQL, and a chord of 1,000 members whose fan-in survives
one of its two workers being killed with SIGKILL twice: every member succeeds and the body
runs exactly once (a row in the ledger table per run).

The test process only submits and reads; every wait is a result, a process, or the database,
each with a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

import taskq
from taskq import chain, chord, group
from tests.conftest import Backend
from tests.e2e import workflow_app
from tests.e2e.processes import START_DEADLINE, WorkerProcess, Workers, sql
from tests.support import eventually

WORKFLOW_APP = "tests.e2e.workflow_app:app"
DEADLINE = 30.0
FAN_IN_DEADLINE = 120.0
MEMBERS = 1_000
MEMBER_SECONDS = 0.05
KILL_AT = (200, 550)  # members succeeded when the worker is killed, first and second time


async def test_chain_group_and_chord_run_in_worker_processes(
    production: Backend, workers: Workers
) -> None:
    # Given two worker processes with two slots each
    first, second = await start_workers(workers, 2, concurrency=2)
    wf = workflow_app.build(production.broker_url, production.store_url)
    async with wf.app:
        # When a chain, a group, a chord and a chain with a group in it are submitted
        handles = [
            await chain(wf.add.s(1, 2), wf.add.s(10), wf.square.s()).submit(),
            # (8 members of 0.2 s, prefetch 2 per worker: both processes run some)
            await group(wf.where.s(i, 0.2) for i in range(8)).submit(),
            await chord(group(wf.square.s(i) for i in range(10)), wf.total.s()).submit(),
            await chain(wf.add.s(1, 1), group(wf.add.s(i) for i in range(3)), wf.collect.s())
            .submit(),
        ]  # fmt: skip
        async with asyncio.timeout(DEADLINE):
            linear, fanned, joined, mixed = await asyncio.gather(
                *(handle.result() for handle in handles)
            )
        # Then each value is what the shape makes of its steps'
        assert linear == (1 + 2 + 10) ** 2
        assert [x for x, _ in fanned] == list(range(8))
        assert joined == sum(i * i for i in range(10))
        assert mixed == [2, 3, 4]
        # And the group's members ran in both worker processes (none in this one)
        assert {pid for _, pid in fanned} == {first.pid, second.pid}
        for handle in handles:
            assert await handle.status() is taskq.TaskStatus.SUCCEEDED
    rows = await sql(
        production.store_url,
        "SELECT state, count(*) AS n FROM taskq_tasks GROUP BY state",
    )
    assert {row["state"]: row["n"] for row in rows} == {"succeeded": 3 + 8 + 11 + 5}


async def start_workers(workers: Workers, n: int, *, concurrency: int) -> list[WorkerProcess]:
    """Start `n` workers at once; return once all of them consume."""
    started = [await workers.spawn(concurrency=concurrency, app=WORKFLOW_APP) for _ in range(n)]
    await workers.wait_consumers(workers.expected_consumers())
    return started


async def leader(workers: Workers, among: list[WorkerProcess]) -> WorkerProcess:
    """The one of `among` that leads, as its row in taskq_workers says (once one does)."""
    pids = await eventually(
        lambda: sql(
            workers.store_url,
            "SELECT pid FROM taskq_workers WHERE leader AND state = 'running'",
        ),
        lambda rows: len(rows) == 1,
        what="a leader",
        within=START_DEADLINE,
    )
    (found,) = [worker for worker in among if worker.pid == pids[0]["pid"]]
    return found


def at_least(threshold: int) -> Callable[[int], bool]:
    return lambda n: n >= threshold


async def members_succeeded(store_url: str, workflow_id: str) -> int:
    (row,) = await sql(
        store_url,
        "SELECT count(*) AS n FROM taskq_tasks WHERE workflow_id = "
        f"'{workflow_id}' AND state = 'succeeded' AND name = 'wfe.member'",
    )
    return int(row["n"])


@pytest.mark.timeout(FAN_IN_DEADLINE + 60)
async def test_a_chord_of_1000_members_runs_its_body_once_while_a_worker_is_killed_twice(
    production: Backend, workers: Workers
) -> None:
    # Given a ledger table the body writes to, and two worker processes (four slots each),
    # the one to be killed being the leader (which publishes the body once it is due)
    await sql(production.store_url, workflow_app.LEDGER_TABLE)
    victim = await leader(workers, await start_workers(workers, 2, concurrency=4))
    wf = workflow_app.build(production.broker_url, production.store_url)
    timings: dict[str, float] = {}
    began = time.monotonic()

    def mark(what: str) -> None:
        timings[what] = time.monotonic() - began

    async with wf.app:
        # When a chord of 1,000 members (50 ms each) is submitted
        handle = await chord(
            group(wf.member.s(i, MEMBER_SECONDS) for i in range(MEMBERS)), wf.ledger_body.s()
        ).submit()
        mark("submitted")

        # And the worker is killed with SIGKILL twice during the fan-in (restarted each time)
        async def kill_twice(worker: WorkerProcess) -> list[int]:
            done_at_kill = []
            for number, threshold in enumerate(KILL_AT, start=1):
                done = await eventually(
                    lambda: members_succeeded(production.store_url, handle.id),
                    at_least(threshold),
                    what=f"{threshold} members succeeded",
                    within=FAN_IN_DEADLINE,
                )
                await workers.kill(worker)
                mark(f"kill {number} ({done} members done)")
                done_at_kill.append(done)
                # (the first restart must consume before it is killed; the second need not
                # before the test goes on)
                if number < len(KILL_AT):
                    worker = await workers.start(concurrency=4, app=WORKFLOW_APP)
                else:
                    await workers.spawn(concurrency=4, app=WORKFLOW_APP)
                mark(f"restart {number}")
            return done_at_kill

        async with asyncio.timeout(FAN_IN_DEADLINE):
            done_at_kill = await kill_twice(victim)
            value = await handle.result()
        mark("result")

    # Then the body ran exactly once, with every member's value in order
    ledger = await sql(production.store_url, "SELECT attempt, members FROM wf_ledger")
    print(
        "\nchord of 1,000 with two SIGKILLs: "
        + ", ".join(f"{what} at {at:.2f} s" for what, at in timings.items())
        + f"; fan-in {timings['result'] - timings['submitted']:.2f} s"
    )
    assert [(row["attempt"], row["members"]) for row in ledger] == [(1, MEMBERS)]
    assert value == [i * i for i in range(MEMBERS)]
    # And both kills happened during the fan-in (members were still left to run)
    assert all(done < MEMBERS for done in done_at_kill), done_at_kill
    # And every member succeeded (some on a second attempt, after the kills), the body too
    rows = await sql(
        production.store_url,
        "SELECT name, state, count(*) AS n FROM taskq_tasks "
        f"WHERE workflow_id = '{handle.id}' GROUP BY name, state",
    )
    found = {(row["name"], row["state"]): row["n"] for row in rows}
    assert found == {("wfe.member", "succeeded"): MEMBERS, ("wfe.ledger_body", "succeeded"): 1}
    retried = await sql(
        production.store_url,
        f"SELECT count(*) AS n FROM taskq_tasks WHERE workflow_id = '{handle.id}' AND attempts > 1",
    )
    print(f"members run more than once (in flight at a kill): {retried[0]['n']}")
