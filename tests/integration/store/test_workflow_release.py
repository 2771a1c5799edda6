"""The release of workflow steps (`taskq.store.workflows.release`), on SQLite and PostgreSQL:
a step waits `scheduled` with no `run_at` while `waiting_for` is above 0; each parent that
ends counts it down once, in the transaction that stores the parent's outcome (`Store.write`
with `Outcome(in_workflow=True)`); a failed parent cancels the steps that depend on it, and
theirs, except a tolerant chord body, which counts it as ended.

On PostgreSQL a success is counted down by the flush's one statement, a failure by
`release` in a transaction of its own: both paths are covered here.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from taskq.status import TaskStatus
from taskq.store import ClaimRequest, NewTask, Outcome, Store, TaskError, WorkflowPlace
from taskq.store.tables import tasks

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
BOOM = TaskError("ValueError", "boom", "Traceback ...")
WAITING, DUE = "waiting", "due"


@dataclass(frozen=True)
class Row:
    """What a step's row says about its release."""

    state: str
    waiting_for: int
    run_at: datetime | None

    @property
    def release(self) -> str:
        """`waiting` (scheduled, no run_at) or `due` (scheduled, run_at set); else the state."""
        if self.state != TaskStatus.SCHEDULED.value:
            return self.state
        return WAITING if self.run_at is None else DUE


class Workflow:
    """A workflow written straight to the store: step i's task id is `ids[i]`."""

    def __init__(self, store: Store, engine: AsyncEngine) -> None:
        self.store = store
        self.engine = engine
        self.id = str(uuid.uuid4())
        self.ids: list[str] = []

    async def insert(
        self,
        parents: Sequence[Sequence[int]],
        *,
        tolerant: Sequence[int] = (),
        receives: dict[int, Any] | None = None,
        names: dict[int, str] | None = None,
    ) -> None:
        """Steps 0..n-1, step i waiting for `parents[i]`; those in `tolerant` tolerate
        failures (a chord body with tolerate_failures)."""
        children: list[list[int]] = [[] for _ in parents]
        for step, mine in enumerate(parents):
            for parent in mine:
                children[parent].append(step)
        self.ids = [str(uuid.uuid4()) for _ in parents]
        rows = [
            NewTask(
                id=self.ids[step],
                name=(names or {}).get(step, "tests.step"),
                queue="default",
                priority=0,
                args=[],
                kwargs={},
                timeout=None,
                created_at=CREATED,
                state=TaskStatus.SCHEDULED,
                workflow=WorkflowPlace(
                    workflow_id=self.id,
                    step=step,
                    parents=list(mine),
                    children=children[step],
                    receives=(receives or {}).get(step),
                    tolerates_failures=step in tolerant,
                ),
            )
            for step, mine in enumerate(parents)
        ]
        await self.store.insert_workflow(self.id, CREATED, len(parents) - 1, rows)

    async def claim(self, step: int) -> int | None:
        """Claim step `step` as a worker would; → its attempt, or None if it is not due."""
        written = await self.store.write([ClaimRequest(self.ids[step], "w1", False)], [])
        claimed = written.claimed.get(self.ids[step])
        return None if claimed is None else claimed.attempt

    async def run(self, step: int) -> int:
        attempt = await self.claim(step)
        assert attempt is not None, f"step {step} was not due: {await self.rows()}"
        return attempt

    def outcome(self, step: int, attempt: int, state: TaskStatus, **fields: Any) -> Outcome:
        return Outcome(
            task_id=self.ids[step], attempt=attempt, state=state, in_workflow=True, **fields
        )

    async def succeed(self, step: int, result: Any = None) -> None:
        attempt = await self.run(step)
        await self.store.write(
            [], [self.outcome(step, attempt, TaskStatus.SUCCEEDED, result=result)]
        )

    async def fail(self, step: int) -> None:
        attempt = await self.run(step)
        await self.store.write([], [self.outcome(step, attempt, TaskStatus.FAILED, error=BOOM)])

    async def rows(self) -> list[Row]:
        c = tasks.c
        async with self.engine.connect() as conn:
            found = await conn.execute(
                select(c.state, c.waiting_for, c.run_at)
                .where(c.workflow_id == self.id)
                .order_by(c.step)
            )
            return [Row(r.state, r.waiting_for, r.run_at) for r in found]

    async def releases(self) -> list[str]:
        return [row.release for row in await self.rows()]

    async def waiting_for(self) -> list[int]:
        return [row.waiting_for for row in await self.rows()]

    async def error_type(self, step: int) -> str | None:
        record = await self.store.get_task(self.ids[step])
        assert record is not None
        return None if record.error is None else record.error.type


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    """A connection of the test's own, to read the columns the store keeps to itself."""
    made = create_async_engine(store_url)
    try:
        yield made
    finally:
        await made.dispose()


@pytest.fixture
def workflow(store: Store, engine: AsyncEngine) -> Workflow:
    return Workflow(store, engine)


# -- counting down -------------------------------------------------------------------------------


async def test_the_last_parent_to_end_makes_its_child_due(workflow: Workflow) -> None:
    # Given a chain of two steps: the first due at once, the second waiting for it
    await workflow.insert([[], [0]])
    assert await workflow.releases() == [DUE, WAITING]
    assert await workflow.waiting_for() == [0, 1]
    assert await workflow.claim(1) is None  # (a waiting step cannot be claimed)
    # When the first succeeds
    await workflow.succeed(0, result=3)
    # Then the second waits for no one: still scheduled, now with a run_at (due)
    rows = await workflow.rows()
    assert [row.release for row in rows] == [TaskStatus.SUCCEEDED.value, DUE]
    assert rows[1].waiting_for == 0
    assert await workflow.claim(1) == 1


async def test_a_child_of_two_parents_is_released_only_after_both(workflow: Workflow) -> None:
    # Given a chord: two members and a body waiting for both
    await workflow.insert([[], [], [0, 1]])
    # When one member succeeds, the body still waits, for one parent
    await workflow.succeed(1)
    assert await workflow.releases() == [DUE, TaskStatus.SUCCEEDED.value, WAITING]
    assert await workflow.waiting_for() == [0, 0, 1]
    assert await workflow.claim(2) is None
    # And once the other does, it is due
    await workflow.succeed(0)
    assert await workflow.releases() == ["succeeded", "succeeded", DUE]
    assert await workflow.waiting_for() == [0, 0, 0]
    assert await workflow.claim(2) == 1


async def test_parents_ending_in_one_write_count_down_their_child_once_each(
    workflow: Workflow,
) -> None:
    # Given three members of a chord, all running
    await workflow.insert([[], [], [], [0, 1, 2]])
    attempts = [await workflow.run(step) for step in range(3)]
    # When two of them end in one flush
    await workflow.store.write(
        [], [workflow.outcome(s, attempts[s], TaskStatus.SUCCEEDED) for s in (0, 2)]
    )
    # Then the body counts both, and waits for the third
    assert (await workflow.waiting_for())[3] == 1
    assert (await workflow.releases())[3] == WAITING
    await workflow.store.write([], [workflow.outcome(1, attempts[1], TaskStatus.SUCCEEDED)])
    assert (await workflow.waiting_for())[3] == 0
    assert (await workflow.releases())[3] == DUE


# -- failures ------------------------------------------------------------------------------------


async def test_a_failed_parent_cancels_its_descendants_transitively(workflow: Workflow) -> None:
    # Given 0 → 1 → 2 → 3, and 4 (a root) → 5, where 5 also waits for 2
    await workflow.insert([[], [0], [1], [2], [], [2, 4]])
    # When step 1 fails (after step 0 succeeded)
    await workflow.succeed(0)
    await workflow.fail(1)
    # Then every step depending on it, directly or not, is cancelled (ParentFailed), even
    # one with another parent still to run; the unrelated root is left alone
    assert await workflow.releases() == [
        "succeeded",
        "failed",
        "cancelled",
        "cancelled",
        DUE,
        "cancelled",
    ]
    assert [await workflow.error_type(s) for s in (2, 3, 5)] == ["ParentFailed"] * 3
    # And the other parent ending later changes nothing for its cancelled child
    await workflow.succeed(4)
    assert (await workflow.releases())[5] == "cancelled"
    assert await workflow.claim(5) is None


async def test_a_tolerant_chord_body_counts_a_failed_member_down_instead_of_being_cancelled(
    workflow: Workflow,
) -> None:
    # Given a chord of two members whose body tolerates failures, a step after the body, and a
    # strict step after the second member
    await workflow.insert([[], [], [0, 1], [2], [1]], tolerant=[2])
    # When the second member fails
    await workflow.fail(1)
    # Then the strict step is cancelled, the body counts the failure as an end and waits for
    # the other member; the step after the body still waits for it
    assert await workflow.releases() == [DUE, "failed", WAITING, WAITING, "cancelled"]
    assert await workflow.waiting_for() == [0, 0, 1, 1, 1]
    assert await workflow.error_type(4) == "ParentFailed"
    # And once the other member succeeds, the body is due
    await workflow.succeed(0)
    assert await workflow.releases() == ["succeeded", "failed", DUE, WAITING, "cancelled"]
    assert await workflow.claim(2) == 1


async def test_a_parent_cancelled_by_the_user_cancels_the_steps_waiting_for_it(
    workflow: Workflow,
) -> None:
    await workflow.insert([[], [0], [1]])
    # When the first step is cancelled before it runs
    changed = await workflow.store.cancel_many([workflow.ids[0]])
    assert changed[workflow.ids[0]][0] is TaskStatus.CANCELLED
    # Then the steps after it are cancelled with it (ParentFailed)
    assert await workflow.releases() == ["cancelled"] * 3
    assert [await workflow.error_type(s) for s in (1, 2)] == ["ParentFailed"] * 2


# -- never twice ---------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [TaskStatus.SUCCEEDED, TaskStatus.FAILED])
async def test_release_never_counts_a_parent_twice(workflow: Workflow, state: TaskStatus) -> None:
    # Given a tolerant chord body waiting for two members (a failure counts down too)
    await workflow.insert([[], [], [0, 1]], tolerant=[2])
    attempt = await workflow.run(0)
    error = BOOM if state is TaskStatus.FAILED else None
    ended = workflow.outcome(0, attempt, state, error=error)
    # When one member's outcome comes twice in one write (a duplicate in one flush)
    written = await workflow.store.write([], [ended, ended])
    # Then the body counts it once
    assert written.stale == frozenset()
    assert await workflow.waiting_for() == [0, 0, 1]
    assert (await workflow.releases())[2] == WAITING
    # And written again later (its row no longer running: stale), it counts for nothing
    written = await workflow.store.write([], [ended])
    assert written.stale == {(workflow.ids[0], attempt)}
    assert await workflow.waiting_for() == [0, 0, 1]
    assert (await workflow.releases())[2] == WAITING
    assert await workflow.claim(2) is None


async def test_a_retried_attempt_releases_nothing_and_the_success_once(workflow: Workflow) -> None:
    # Given a chord body waiting for two members
    await workflow.insert([[], [], [0, 1]])
    # When a member's first attempt fails with a retry (scheduled again, due now)
    first = await workflow.run(0)
    retry = workflow.outcome(0, first, TaskStatus.SCHEDULED, error=BOOM, retry_at=datetime.now(UTC))
    await workflow.store.write([], [retry])
    # Then the body still waits for both
    assert await workflow.waiting_for() == [0, 0, 2]
    # And when its second attempt succeeds (and the first's outcome comes again: stale),
    # the body counts it once
    second = await workflow.run(0)
    assert second == 2
    await workflow.store.write(
        [],
        [
            workflow.outcome(0, first, TaskStatus.FAILED, error=BOOM),
            workflow.outcome(0, second, TaskStatus.SUCCEEDED),
        ],
    )
    assert await workflow.waiting_for() == [0, 0, 1]
    assert await workflow.releases() == ["succeeded", DUE, WAITING]


# -- join steps ----------------------------------------------------------------------------------


async def test_a_join_step_is_ended_by_the_leader_and_releases_its_children(
    workflow: Workflow,
) -> None:
    # Given group(a, b) then group(c, d): c and d wait for a join of a and b
    join = "taskq.join"
    await workflow.insert(
        [[], [], [0, 1], [2], [2]], receives={2: [0, 1], 3: 2, 4: 2}, names={2: join}
    )
    await workflow.succeed(0, result="a")
    await workflow.succeed(1, result="b")
    # When the leader finds the join due
    published: list[list[str]] = []

    async def publish(due: list[Any]) -> None:
        published.append([record.id for record in due])

    await workflow.store.publish_due(100, publish)
    # Then the join ended with the list of its parents' values, nothing published for it,
    # and both steps after it are due, their input that list
    joined = await workflow.store.get_task(workflow.ids[2])
    assert joined is not None
    assert (joined.state, joined.result) == (TaskStatus.SUCCEEDED, ["a", "b"])
    assert all(workflow.ids[2] not in ids for ids in published)
    assert (await workflow.releases())[3:] == [DUE, DUE]
    ended = await workflow.store.ended_steps(workflow.id, [2])
    assert ended[2][1] == ["a", "b"]
