"""The app `taskq worker tests.chaos.chaos_app:app` runs in the chaos suite.

Each task run that completes writes (task id, attempt, pid, time) to `chaos_effects` in a
transaction of its own, before its outcome: the ledger's evidence of what ran, and how
often. The write waits out a database outage (a task must not fail because of the fault
under test).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from datetime import timedelta
from typing import Any

import asyncpg

import taskq

EFFECTS_TABLE = """CREATE TABLE IF NOT EXISTS chaos_effects (
    run uuid PRIMARY KEY, task_id uuid NOT NULL, attempt int NOT NULL, pid int NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp())"""
EFFECT_DEADLINE = 120.0
TICKS_ENV = "CHAOS_TICKS"

_connection: asyncpg.Connection | None = None
_turn: asyncio.Lock | None = None  # one statement at a time on it (asyncpg's rule)
_BROKEN = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


async def _record_effect() -> None:
    global _turn
    _turn = _turn or asyncio.Lock()
    async with _turn:
        await _insert_effect()


async def _insert_effect() -> None:
    global _connection
    ctx = taskq.context()
    # The run's own key: an insert retried after its commit went unanswered (the server
    # died with the answer on its way) must not count as a second run.
    run = uuid.uuid4()
    deadline = asyncio.get_running_loop().time() + EFFECT_DEADLINE
    while True:
        try:
            if _connection is None or _connection.is_closed():
                url = os.environ["TASKQ_STORE_URL"].replace(
                    "postgresql+asyncpg://", "postgresql://"
                )
                _connection = await asyncpg.connect(url, timeout=5)
            await _connection.execute(
                "INSERT INTO chaos_effects (run, task_id, attempt, pid) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (run) DO NOTHING",
                run,
                ctx.id,
                ctx.attempt,
                os.getpid(),
            )
            return
        except _BROKEN:
            if _connection is not None:
                _connection.terminate()
            _connection = None
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def work(seconds: float) -> int:
    await asyncio.sleep(seconds)
    await _record_effect()
    return taskq.context().attempt


async def flaky(seconds: float) -> int:
    """Fails its first two attempts (a retry with backoff each), then succeeds."""
    await asyncio.sleep(seconds)
    if taskq.context().attempt < 3:
        raise RuntimeError("not yet")
    await _record_effect()
    return taskq.context().attempt


async def spin() -> None:
    """An `async def` that never yields: only a hard limit can end it."""
    while True:
        pass


_leaked: list[bytearray] = []


async def leak(megabytes: int) -> int:
    """Keep `megabytes` for good (a leak), then record the effect."""
    _leaked.append(bytearray(megabytes * 2**20))
    await _record_effect()
    return len(_leaked)


async def poison() -> None:
    await asyncio.sleep(0.05)
    os._exit(1)


@dataclasses.dataclass(frozen=True)
class ChaosApp:
    app: taskq.App
    work: taskq.Task[[float], int]
    flaky: taskq.Task[[float], int]
    poison: taskq.Task[[], None]
    spin: taskq.Task[[], None]
    leak: taskq.Task[[int], int]


async def tick() -> None:
    await _record_effect()


def build(broker_url: str | None = None, store_url: str | None = None, **settings: Any) -> ChaosApp:
    """The app with its tasks under fixed names; URLs and `settings` left out come from
    TASKQ_*. With CHAOS_TICKS set, it also ticks every second (`chaos.tick`)."""
    app = taskq.App(broker_url, store_url, **settings)
    if os.environ.get(TICKS_ENV):
        app.periodic(every=timedelta(seconds=1), name="chaos.tick", missed="all")(tick)
    return ChaosApp(
        app=app,
        work=app.task(name="chaos.work")(work),
        flaky=app.task(name="chaos.flaky", max_retries=3, retry_for=(RuntimeError,))(flaky),
        poison=app.task(name="chaos.poison")(poison),
        spin=app.task(name="chaos.spin")(spin),
        leak=app.task(name="chaos.leak")(leak),
    )


app = build().app
