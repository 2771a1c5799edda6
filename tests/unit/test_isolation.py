"""Suspects after a crash run alone (taskq/worker/isolation.py), without stalling the worker."""

from __future__ import annotations

import asyncio

import pytest

from taskq.worker import isolation
from taskq.worker.isolation import Isolation

DEADLINE = 5.0


async def test_a_suspect_waits_for_running_tasks_and_holds_new_ones_back() -> None:
    places = Isolation()
    log: list[str] = []
    first_done = asyncio.Event()
    suspect_done = asyncio.Event()

    async def ordinary(name: str, until: asyncio.Event | None = None) -> None:
        async with places.place(redelivered=False):
            log.append(f"{name} starts")
            if until is not None:
                await until.wait()
            log.append(f"{name} ends")

    async def suspect() -> None:
        async with places.place(redelivered=True) as turn:
            turn.claimed(suspect=True)
            await turn.alone()
            log.append("suspect starts")
            await suspect_done.wait()
            log.append("suspect ends")

    # Given a task running, then a suspect, then a new task
    running = asyncio.create_task(ordinary("first", first_done))
    await asyncio.sleep(0)
    alone = asyncio.create_task(suspect())
    await asyncio.sleep(0)
    later = asyncio.create_task(ordinary("later"))
    await asyncio.sleep(0.01)
    # Then the suspect waits for the running task, and the new one waits too
    assert log == ["first starts"]
    first_done.set()
    await asyncio.sleep(0.01)
    assert log == ["first starts", "first ends", "suspect starts"]
    # And once the suspect ends, the new task starts
    suspect_done.set()
    await asyncio.wait_for(asyncio.gather(running, alone, later), DEADLINE)
    assert log[-3:] == ["suspect ends", "later starts", "later ends"]


async def test_redeliveries_claim_one_at_a_time_and_a_cleared_one_lets_the_next_go() -> None:
    places = Isolation()
    claimed: list[str] = []
    release_first = asyncio.Event()

    async def redelivery(name: str, hold: asyncio.Event | None = None) -> None:
        async with places.place(redelivered=True) as turn:
            claimed.append(name)
            if hold is not None:
                await hold.wait()
            turn.claimed(suspect=False)
            await asyncio.sleep(0.01)

    first = asyncio.create_task(redelivery("a", release_first))
    second = asyncio.create_task(redelivery("b"))
    await asyncio.sleep(0.01)
    assert claimed == ["a"]  # b has not claimed while a claims
    release_first.set()
    await asyncio.wait_for(asyncio.gather(first, second), DEADLINE)
    assert claimed == ["a", "b"]


async def test_a_long_suspect_runs_alone_only_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "ALONE_FOR", 0.05)
    places = Isolation()
    forever = asyncio.Event()
    started = asyncio.Event()

    async def suspect() -> None:
        async with places.place(redelivered=True) as turn:
            turn.claimed(suspect=True)
            await turn.alone()
            await forever.wait()

    async def ordinary() -> None:
        async with places.place(redelivered=False):
            started.set()

    long = asyncio.create_task(suspect())
    await asyncio.sleep(0.01)
    # A task that comes while the suspect runs alone starts once ALONE_FOR has passed
    await asyncio.wait_for(ordinary(), DEADLINE)
    assert started.is_set()
    forever.set()
    await asyncio.wait_for(long, DEADLINE)
