"""Retention's store verbs on SQLite and PostgreSQL: which rows `prune` deletes (finished,
older than the cutoff, matching the names), which it never touches, and its batches."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine

from taskq.status import TaskStatus
from taskq.store import (
    ClaimRequest,
    NewTask,
    Outcome,
    PruneRule,
    Store,
    TaskError,
    WorkflowPlace,
)
from taskq.store.tables import tasks

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=40)
CUTOFF = NOW - timedelta(days=30)


def new_task(name: str = "tests.task", state: TaskStatus = TaskStatus.QUEUED) -> NewTask:
    return NewTask(
        id=str(uuid.uuid4()),
        name=name,
        queue="default",
        priority=0,
        args=[],
        kwargs={},
        timeout=None,
        created_at=NOW,
        state=state,
    )


async def finished(
    store: Store,
    name: str = "tests.task",
    state: TaskStatus = TaskStatus.SUCCEEDED,
    dead_reason: str | None = None,
) -> str:
    """A task that ran once and ended in `state` (its attempt logged)."""
    task = new_task(name)
    await store.insert_task(task)
    await store.write([ClaimRequest(task.id, "w1", False)], [])
    error = None if state is TaskStatus.SUCCEEDED else TaskError("E", "boom")
    outcome = Outcome(task_id=task.id, attempt=1, state=state, error=error, dead_reason=dead_reason)
    assert not (await store.write([], [outcome])).stale
    assert (await store.get_states([task.id]))[task.id] is state
    return task.id


async def backdate(store_url: str, ids: list[str], moment: datetime) -> None:
    """Make the rows (and their attempts) look as if they ran at `moment`."""
    engine = create_async_engine(store_url)
    try:
        async with engine.begin() as conn:
            # (Core, not text: SQLite stores times as text in SQLAlchemy's format)
            await conn.execute(update(tasks).where(tasks.c.id.in_(ids)).values(created_at=moment))
            ended = tasks.c.finished_at.is_not(None)
            await conn.execute(
                update(tasks).where(tasks.c.id.in_(ids), ended).values(finished_at=moment)
            )
    finally:
        await engine.dispose()


async def attempts_of(store: Store, ids: list[str]) -> int:
    return sum([len(await store.list_attempts(task_id)) for task_id in ids])


async def test_prune_deletes_old_finished_tasks_with_their_attempts_and_nothing_else(
    store: Store, store_url: str
) -> None:
    # Given old tasks in every final state, one dead-lettered, and old unfinished ones
    old_final = [
        await finished(store, state=state)
        for state in (
            TaskStatus.SUCCEEDED,
            TaskStatus.FAILED,
            TaskStatus.CANCELLED,
            TaskStatus.EXPIRED,
        )
    ]
    dead = await finished(store, state=TaskStatus.FAILED, dead_reason="failed")
    waiting = [new_task(), new_task(state=TaskStatus.SCHEDULED)]
    for task in waiting:
        await store.insert_task(task)
    running = new_task()
    await store.insert_task(running)
    await store.write([ClaimRequest(running.id, "w1", False)], [])
    unfinished = [task.id for task in waiting] + [running.id]
    await backdate(store_url, [*old_final, dead, *unfinished], OLD)
    # And recent finished tasks
    recent = [await finished(store) for _ in range(2)]
    assert await attempts_of(store, old_final) == len(old_final)
    rule = PruneRule(cutoff=CUTOFF)

    # When counted, then pruned
    assert await store.count_prunable(rule) == len(old_final)
    assert await store.prune(rule) == len(old_final)

    # Then the old finished tasks are gone with their attempts
    assert await store.get_tasks(old_final) == {}
    assert await attempts_of(store, old_final) == 0
    # And the dead-lettered, unfinished and recent ones are all still there
    kept = [dead, *unfinished, *recent]
    assert set(await store.get_tasks(kept)) == set(kept)
    assert await store.count_prunable(rule) == 0
    # And the dead-lettered one goes only when asked
    assert await store.prune(PruneRule(cutoff=CUTOFF, include_dead=True)) == 1
    assert await store.get_task(dead) is None


async def test_prune_by_name_and_in_batches(store: Store, store_url: str) -> None:
    # Given five old finished ticks and two old finished tasks of another name
    ticks = [await finished(store, "tests.tick") for _ in range(5)]
    others = [await finished(store, "tests.other") for _ in range(2)]
    await backdate(store_url, [*ticks, *others], OLD)

    # When the ticks' rule prunes two at a time
    only_ticks = PruneRule(cutoff=CUTOFF, names=["tests.tick"])
    assert [await store.prune(only_ticks, limit=2) for _ in range(4)] == [2, 2, 1, 0]

    # Then only the ticks went; a rule leaving that name out takes the others
    assert set(await store.get_tasks([*ticks, *others])) == set(others)
    assert await store.prune(PruneRule(cutoff=CUTOFF, except_names=["tests.other"])) == 0
    assert await store.prune(PruneRule(cutoff=CUTOFF, except_names=["tests.tick"])) == 2


async def test_forget_workflows_deletes_only_old_workflows_with_no_step_left(
    store: Store, store_url: str
) -> None:
    # Given an old workflow whose steps were pruned, an old one with a step left, and a new one
    def step_of(workflow_id: str) -> NewTask:
        place = WorkflowPlace(workflow_id=workflow_id, step=0, parents=(), children=())
        return dataclasses.replace(new_task(), workflow=place)

    emptied, kept, recent = (str(uuid.uuid4()) for _ in range(3))
    await store.insert_workflow(emptied, OLD, 0, [])
    await store.insert_workflow(kept, OLD, 0, [step_of(kept)])
    await store.insert_workflow(recent, NOW, 0, [])
    # When the workflows submitted before the cutoff are forgotten
    forgotten = await store.forget_workflows(CUTOFF)
    # Then only the old one without steps is gone
    assert forgotten == 1
    assert await store.workflow(emptied) is None
    assert await store.workflow(kept) is not None
    assert await store.workflow(recent) is not None
