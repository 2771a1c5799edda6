"""The ledger of a chaos scenario, after Jepsen's total-queue check.

The driver records every `submit()` that returned (acknowledged) and every one that raised
(unknown); tasks record their effects themselves (`chaos_app`). After the fault and a
drain with a deadline, the verdict counts:

- lost: acknowledged, yet no final row and no dead letter;
- duplicates: tasks whose effect was recorded more than once, and how many of those are
  explained (the row counts at least as many attempts: a crash, counted);
- stuck: rows not final, or `running` with no live worker;
- what is left in the queue, and the dead letters by reason.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

import taskq
from tests.e2e.processes import plain_postgres_url

FINAL = ("succeeded", "failed", "cancelled", "expired")


@dataclasses.dataclass
class Verdict:
    scenario: str
    acknowledged: int
    unknown: int
    lost: int
    duplicates: int
    explained: int
    stuck: int
    queued: int
    dead: dict[str, int]
    seconds: float
    letters: tuple[str, ...] = ()  # the first dead letters, with their tasks' errors
    unexplained: tuple[str, ...] = ()  # the first duplicates with too few attempts, runs

    def row(self) -> str:
        dead = ", ".join(f"{reason} {n}" for reason, n in sorted(self.dead.items())) or "-"
        return (
            f"| {self.scenario} | {self.acknowledged} | {self.unknown} | {self.lost} | "
            f"{self.duplicates} ({self.explained} explained) | {self.stuck} | {self.queued} | "
            f"{dead} | {self.seconds:.1f} |"
        )


HEADER = (
    "| scenario | acknowledged | unknown | lost | duplicates | stuck | left in queue | "
    "dead letters | seconds |\n|---|---|---|---|---|---|---|---|---|"
)


class Ledger:
    def __init__(self, scenario: str, app: taskq.App, store_url: str) -> None:
        self.scenario = scenario
        self.app = app
        self.store_url = plain_postgres_url(store_url)
        self.acknowledged: dict[str, str] = {}  # task id → what was submitted
        self.unknown = 0
        self.began = time.monotonic()

    async def submit(self, task: taskq.Task[Any, Any], *args: Any, **options: Any) -> None:
        bound = task.options(**options) if options else task
        try:
            handle = await bound.submit(*args)
        except taskq.TaskqError:
            self.unknown += 1
            return
        self.acknowledged[handle.id] = task.name

    async def rows(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(self.store_url, timeout=10)
        try:
            return list(await connection.fetch(sql, *args))
        finally:
            await connection.close()

    async def effects(self) -> int:
        """How many runs the tasks have recorded so far."""
        (row,) = await self.rows("SELECT count(*) AS n FROM chaos_effects")
        return int(row["n"])

    async def drain(
        self, within: float, *, step: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Until every acknowledged task has a final row (or the deadline); `step` runs on
        each poll (e.g. restarting workers that died)."""
        deadline = time.monotonic() + within
        while True:
            if step is not None:
                await step()
            (open_rows,) = await self.rows(
                "SELECT count(*) AS n FROM taskq_tasks WHERE id = ANY($1::uuid[]) "
                "AND state <> ALL($2::text[])",
                list(self.acknowledged),
                list(FINAL),
            )
            if open_rows["n"] == 0 or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.2)  # (a poll with a deadline)

    async def verdict(self, queue: str = "default") -> Verdict:
        ids = list(self.acknowledged)
        tasks = {
            str(r["id"]): r
            for r in await self.rows(
                "SELECT id, state, attempts FROM taskq_tasks WHERE id = ANY($1::uuid[])",
                ids,
            )
        }
        letters = await self.app.dlq(queue).list(limit=100_000)
        dead_ids = {letter.task_id for letter in letters}
        final = {task_id for task_id, r in tasks.items() if r["state"] in FINAL}
        lost = sum(1 for task_id in ids if task_id not in final and task_id not in dead_ids)
        stuck = len(tasks) - len(final)  # (after the drain: not final, running or waiting)
        runs = collections.defaultdict(list)
        for r in await self.rows("SELECT task_id, attempt, pid FROM chaos_effects ORDER BY at"):
            runs[str(r["task_id"])].append(f"attempt {r['attempt']} pid {r['pid']}")
        effects = {task_id: len(ran) for task_id, ran in runs.items()}
        duplicated = [task_id for task_id, n in effects.items() if n > 1]
        unexplained = [
            task_id for task_id in duplicated
            if task_id not in tasks or tasks[task_id]["attempts"] < effects[task_id]
        ]  # fmt: skip
        explained = len(duplicated) - len(unexplained)
        stats = await self.app.broker.stats(queue)
        return Verdict(
            scenario=self.scenario,
            acknowledged=len(ids),
            unknown=self.unknown,
            lost=lost,
            duplicates=len(duplicated),
            explained=explained,
            stuck=stuck,
            queued=0 if stats is None else stats.ready,
            dead=dict(collections.Counter(letter.reason for letter in letters)),
            seconds=time.monotonic() - self.began,
            letters=tuple(
                f"{letter.task} {letter.task_id}: {letter.reason} "
                f"({letter.error_type}: {letter.error_message})"
                for letter in letters[:5]
            ),
            unexplained=tuple(
                f"{task_id} ({tasks[task_id]['attempts'] if task_id in tasks else 'no row'} "
                f"attempts): {', '.join(runs[task_id])}"
                for task_id in unexplained[:5]
            ),
        )
