"""Workflows in the store: one written whole, its steps released as their parents end, a
step's input read from its parents' rows, and a workflow read back.

A step waits `scheduled` with no `run_at` while `waiting_for` (its parents not yet ended)
is above 0. The transaction that stores a step's final state also runs `release` for it:
each child waiting for it counts one parent fewer, and one that reaches 0 becomes due (the
leader publishes it, like any due task). A step that did not succeed cancels the children
that do not tolerate failures, and theirs; a chord body with `tolerate_failures` counts it
as ended instead. Because this happens in the transaction of the parent's outcome, a crash
can neither lose a release nor make one twice, and a finished member costs one UPDATE
shared with the others of its flush, whatever the size of its group.

Shapes (`receives`, `output`) are JSON: a step number stands for that step's value, a list
for the list of what its items stand for.

A join step (task name `JOIN_TASK`) stands between a group and the several steps before it,
so that its members wait for one step instead of all of those. No worker runs it: the leader,
finding it due, ends it (its value the list it receives) and releases its children, in one
transaction.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, case, func, or_, select, update

from taskq.exceptions import StoreError
from taskq.status import TaskStatus
from taskq.store import codec, records, statements
from taskq.store.async_core import Connection
from taskq.store.engine import clock
from taskq.store.tables import tasks, workflows

JOIN_TASK = "taskq.join"

_c = tasks.c
_RUNS = 50  # ranges of step numbers per statement
_WAITING = TaskStatus.SCHEDULED.value

Step = tuple[str, int]  # (workflow id, step number)


async def insert(
    conn: Connection, workflow_id: str, created_at: datetime, output: Any, rows: Sequence[Any]
) -> None:
    """The workflow's row and every step's, in the caller's transaction. Steps without
    parents are due at once (by the database's clock); the others wait for them."""
    await conn.execute(
        workflows.insert().values(
            id=workflow_id, created_at=created_at, steps=len(rows), output=output
        )
    )
    roots = [row for row in rows if not row.workflow.parents]
    waiting = [row for row in rows if row.workflow.parents]
    await statements.insert_tasks(conn, roots, due_now=True)
    await statements.insert_tasks(conn, waiting)


@dataclasses.dataclass(frozen=True, slots=True)
class Released:
    """What a release did: how many steps became due, and the (id, name, queue) of each
    step it cancelled (their waiters hear of it only from whoever announces it)."""

    due: int = 0
    cancelled: tuple[tuple[str, str, str], ...] = ()


async def release(conn: Connection, task_ids: Iterable[str]) -> Released:
    """Steps among `task_ids` have just ended (in this transaction): release or cancel the
    steps waiting for them."""
    ids = list(task_ids)
    if not ids:
        return Released()
    ended = (
        await conn.execute(
            select(_c.workflow_id, _c.state, _c.children).where(
                _c.id.in_(ids), _c.workflow_id.is_not(None)
            )
        )
    ).all()
    # (workflow, child, whether the parent failed), for each edge out of an ended step
    edges = [
        (str(row.workflow_id), child, row.state != TaskStatus.SUCCEEDED.value)
        for row in ended
        for child in row.children or ()
    ]
    ended_by: collections.Counter[Step] = collections.Counter()
    doomed: set[Step] = set()
    while edges:
        waiting = await _waiting_steps(conn, {(workflow, child) for workflow, child, _ in edges})
        following = []
        for workflow, child, failed in edges:
            step = (workflow, child)
            if step not in waiting:
                continue  # (already cancelled with its workflow, or by another path)
            tolerates, grandchildren = waiting[step]
            if failed and not tolerates:
                if step not in doomed:
                    doomed.add(step)
                    following += [(workflow, grandchild, True) for grandchild in grandchildren]
            else:
                ended_by[step] += 1
        edges = following
    cancelled = await _cancel(conn, doomed)
    due = await _count_down(conn, {step: n for step, n in ended_by.items() if step not in doomed})
    return Released(due, tuple(cancelled))


async def _waiting_steps(conn: Connection, steps: set[Step]) -> dict[Step, tuple[bool, list[int]]]:
    """Of `steps`, those still waiting: → (tolerates failures, children) of each."""
    found: dict[Step, tuple[bool, list[int]]] = {}
    for workflow, numbered in _by_workflow(steps):
        rows = await conn.execute(
            select(_c.step, _c.tolerates_failures, _c.children).where(
                _c.workflow_id == workflow, numbered, _c.state == _WAITING
            )
        )
        for row in rows:
            found[(workflow, row.step)] = (bool(row.tolerates_failures), list(row.children or ()))
    return found


async def _cancel(conn: Connection, doomed: set[Step]) -> list[tuple[str, str, str]]:
    """→ (id, name, queue) of each step cancelled."""
    error = records.TaskError(
        "ParentFailed", "not run: a step it waits for failed or was cancelled"
    ).to_json()
    cancelled = []
    for workflow, numbered in _by_workflow(doomed):
        rows = await conn.execute(
            update(tasks)
            .where(_c.workflow_id == workflow, numbered, _c.state == _WAITING)
            .values(state=TaskStatus.CANCELLED.value, error=error, finished_at=records.now())
            .returning(_c.id, _c.name, _c.queue)
        )
        cancelled += [(str(row.id), row.name, row.queue) for row in rows]
    return cancelled


async def _count_down(conn: Connection, ended_by: dict[Step, int]) -> int:
    """Each step waits for `n` fewer parents; those that wait for none become due. → how
    many did."""
    by_count: dict[tuple[str, int], set[int]] = collections.defaultdict(set)
    for (workflow, step), n in ended_by.items():
        by_count[(workflow, n)].add(step)
    due = 0
    for (workflow, n), numbers in by_count.items():
        for numbered in _numbered(numbers):
            rows = await conn.execute(
                update(tasks)
                .where(_c.workflow_id == workflow, numbered, _c.state == _WAITING)
                .values(
                    waiting_for=_c.waiting_for - n,
                    run_at=case((_c.waiting_for - n <= 0, clock(conn)), else_=None),
                )
                .returning(_c.waiting_for)
            )
            due += sum(1 for row in rows if row.waiting_for <= 0)
    return due


async def end_joins(conn: Connection, join_ids: list[str]) -> None:
    """Join steps that came due (the leader found them) end `succeeded`, each with the
    value it receives; the caller releases the steps waiting for them."""
    rows = await conn.execute(select(_c.id, _c.workflow_id, _c.receives).where(_c.id.in_(join_ids)))
    moment = records.now()
    for row in rows.all():
        workflow = str(row.workflow_id)
        ended = await ended_steps(conn, workflow, steps_in(row.receives))
        await conn.execute(
            update(tasks)
            .where(_c.id == row.id)
            .values(
                state=TaskStatus.SUCCEEDED.value,
                result=codec.to_json(input_value(row.receives, ended)),
                started_at=moment,
                finished_at=moment,
            )
        )


def _by_workflow(steps: Iterable[Step]) -> list[tuple[str, ColumnElement[bool]]]:
    """(workflow, a condition on `step`) for every chunk of `steps`."""
    grouped: dict[str, list[int]] = collections.defaultdict(list)
    for workflow, step in steps:
        grouped[workflow].append(step)
    return [
        (workflow, numbered)
        for workflow, numbers in grouped.items()
        for numbered in _numbered(numbers)
    ]


def _numbered(numbers: Iterable[int]) -> list[ColumnElement[bool]]:
    """Conditions on `step` that together match `numbers`: a range for each run of
    consecutive numbers (a chord body's 10,000 parents are one), `_RUNS` runs each.

    Not IN lists: after five executions PostgreSQL plans a prepared statement generically,
    and with 1,000 parameters that plan read every step of the workflow (0.15-0.25 s a
    statement at 10,000 steps, against 5-10 ms for a range)."""
    runs: list[list[int]] = []
    for number in sorted(set(numbers)):
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    return [
        or_(*(_c.step.between(low, high) for low, high in runs[start : start + _RUNS]))
        for start in range(0, len(runs), _RUNS)
    ]


# -- reading ------------------------------------------------------------------------------


def steps_in(shape: Any) -> list[int]:
    """The step numbers a shape is made of, in order."""
    if isinstance(shape, int):
        return [shape]
    return [step for item in shape for step in steps_in(item)]


def value_of(shape: Any, values: dict[int, Any]) -> Any:
    if isinstance(shape, int):
        return values[shape]
    return [value_of(item, values) for item in shape]


def input_value(shape: Any, ended: dict[int, EndedStep]) -> Any:
    """What a step receives, as sent (plain values): each parent's result, or for one that
    did not succeed (where failures are tolerated) its `TaskFailed`, as the serializer's
    `$taskfailed` tag. `ended` must hold every step of `shape`."""
    missing = sorted(set(steps_in(shape)) - set(ended))
    if missing:  # (a step is released only once every parent has ended)
        raise StoreError(f"workflow step inputs missing: steps {missing} have not ended")
    values: dict[int, Any] = {}
    for step, (state, result, error, task_id, _) in ended.items():
        if state is TaskStatus.SUCCEEDED:
            values[step] = result
        else:
            error = error or records.TaskError(state.value, f"the step ended {state.value}")
            values[step] = {"$taskfailed": [task_id, error.type, error.message, error.traceback]}
    return value_of(shape, values)


class EndedStep(NamedTuple):
    """A step that has ended: how, with what, and which task it is."""

    state: TaskStatus
    result: Any
    error: records.TaskError | None
    task_id: str
    name: str


async def ended_steps(
    conn: Connection, workflow_id: str, numbers: Sequence[int]
) -> dict[int, EndedStep]:
    """step → (state, result, error, task id) of those of `numbers` that have ended."""
    found = {}
    for numbered in _numbered(numbers):
        rows = await conn.execute(
            select(_c.step, _c.state, _c.result, _c.error, _c.id, _c.name).where(
                _c.workflow_id == workflow_id, numbered
            )
        )
        for row in rows:
            if not TaskStatus(row.state).is_final:
                continue
            found[row.step] = EndedStep(
                TaskStatus(row.state),
                codec.from_json(row.result),
                records.TaskError.of(row.error),
                str(row.id),
                row.name,
            )
    return found


async def get(conn: Connection, workflow_id: str) -> tuple[int, Any, datetime] | None:
    """→ (steps, output shape, created at) of the workflow, or None if there is none."""
    row = (
        await conn.execute(
            select(workflows.c.steps, workflows.c.output, workflows.c.created_at).where(
                workflows.c.id == workflow_id
            )
        )
    ).first()
    if row is None:
        return None
    created_at = records.aware(row.created_at)
    assert created_at is not None
    return row.steps, row.output, created_at


async def step_ids(conn: Connection, workflow_id: str) -> list[str]:
    """The task id of every step, in step order."""
    rows = await conn.execute(select(_c.id).where(_c.workflow_id == workflow_id).order_by(_c.step))
    return [str(row.id) for row in rows]


async def count_states(conn: Connection, workflow_id: str) -> dict[TaskStatus, int]:
    rows = await conn.execute(
        select(_c.state, func.count()).where(_c.workflow_id == workflow_id).group_by(_c.state)
    )
    return {TaskStatus(state): count for state, count in rows}


async def first_failure(conn: Connection, workflow_id: str) -> records.TaskRecord | None:
    """The earliest step (by number) that failed, expired or was dead-lettered, if any."""
    bad = [TaskStatus.FAILED.value, TaskStatus.EXPIRED.value]
    row = (
        (
            await conn.execute(
                select(tasks)
                .where(_c.workflow_id == workflow_id, _c.state.in_(bad))
                .order_by(_c.step)
                .limit(1)
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else records.record_of(row)
