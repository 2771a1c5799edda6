"""Workflows (issue 18) end to end inside one process, on the embedded default and on
RabbitMQ + PostgreSQL: every shape (chain, group, chord, a group in a chain, three levels of
nesting, a lone signature), what a failure does to the steps after it, cancel, the checks made
before anything is stored, and the handle's views (`tasks()`, `events()`, `get_workflow`,
`list_tasks(workflow=)`). Every wait is a result, an event or a poll with a deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import taskq
from taskq import chain, chord, group
from tests.conftest import Backend
from tests.support import eventually

DEADLINE = 15.0
Status = taskq.TaskStatus


@dataclasses.dataclass
class Flow:
    """An app with the tasks these tests compose, and what their runs leave behind."""

    app: taskq.App
    add: taskq.Task[..., int]
    mul: taskq.Task[..., int]
    square: taskq.Task[..., int]
    total: taskq.Task[..., int]
    collect: taskq.Task[..., list[Any]]
    args_of: taskq.Task[..., list[Any]]
    boom: taskq.Task[..., int]
    gated: taskq.Task[..., int]
    blocked: taskq.Task[..., int]
    describe: taskq.Task[..., list[Any]]
    gate: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    started: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    runs: list[str] = dataclasses.field(default_factory=list)


def flow(backend: Backend) -> Flow:
    app = backend.app()
    runs: list[str] = []
    gate, started = asyncio.Event(), asyncio.Event()

    @app.task(name="wf.add")
    async def add(a: int, b: int) -> int:
        runs.append("add")
        return a + b

    @app.task(name="wf.mul")
    async def mul(a: int, b: int) -> int:
        return a * b

    @app.task(name="wf.square")
    async def square(x: int, delay: float = 0.0) -> int:
        await asyncio.sleep(delay)
        return x * x

    @app.task(name="wf.total")
    async def total(values: list[int]) -> int:
        runs.append("total")
        return sum(values)

    @app.task(name="wf.collect")
    async def collect(values: list[Any]) -> list[Any]:
        return values

    @app.task(name="wf.args_of")
    async def args_of(*args: Any) -> list[Any]:
        return list(args)

    @app.task(name="wf.boom")
    async def boom(x: int) -> int:
        raise ValueError(f"boom {x}")

    @app.task(name="wf.gated")
    async def gated(x: int) -> int:
        """Waits for the test to open the gate."""
        await gate.wait()
        return x

    @app.task(name="wf.blocked")
    async def blocked(x: int) -> int:
        """Says it started, then waits for ever (until cancelled)."""
        started.set()
        await asyncio.Event().wait()
        return x

    @app.task(name="wf.describe")
    async def describe(values: list[Any]) -> list[Any]:
        """What a tolerant chord body saw: each value, or each TaskFailed's type and message."""
        return [
            ["failed", v.error_type, v.error_message]
            if isinstance(v, taskq.TaskFailed)
            else ["ok", v]
            for v in values
        ]

    return Flow(
        app, add, mul, square, total, collect, args_of, boom, gated, blocked, describe,
        gate, started, runs,
    )  # fmt: skip


async def states(handle: taskq.WorkflowHandle) -> list[Status]:
    return [await task.status() for task in await handle.tasks()]


async def all_final(handle: taskq.WorkflowHandle) -> list[Status]:
    return await eventually(
        lambda: states(handle),
        lambda found: all(state.is_final for state in found),
        what=f"every step of workflow {handle.id} final",
        within=DEADLINE,
    )


async def errors(handle: taskq.WorkflowHandle) -> list[str | None]:
    """Each step's error type (None for a step without one)."""
    infos = [await task.info() for task in await handle.tasks()]
    return [None if info.error is None else info.error.type for info in infos]


async def stored_rows(store_url: str) -> tuple[int, int]:
    """(rows in taskq_tasks, rows in taskq_workflows), read with SQL."""
    engine = create_async_engine(store_url)
    try:
        async with engine.connect() as conn:
            tasks = await conn.scalar(text("SELECT count(*) FROM taskq_tasks"))
            workflows = await conn.scalar(text("SELECT count(*) FROM taskq_workflows"))
    finally:
        await engine.dispose()
    return int(tasks or 0), int(workflows or 0)


@pytest.fixture
async def wf(backend: Backend) -> AsyncIterator[Flow]:
    """An open app with the tasks of `flow`, and a worker running them (4 at once)."""
    made = flow(backend)
    async with made.app, made.app.worker(concurrency=4, queues=["default", "side"]):
        yield made
        made.gate.set()  # (a gated step left waiting does not hold the worker's exit)


# -- the shapes ----------------------------------------------------------------------------------


async def test_a_chain_passes_each_value_on_and_an_immutable_step_receives_nothing(
    wf: Flow,
) -> None:
    # Given a chain whose 4th step is immutable (.si) and whose 3rd runs on another queue
    workflow = chain(
        wf.add.s(1, 2),
        wf.add.s(10),
        wf.mul.options(queue="side").s(3),
        wf.args_of.si("only", "mine"),
        wf.args_of.s("and", "mine"),
    )
    # When it is submitted
    handle = await workflow.submit()
    # Then each step got the value of the one before as its first argument, except the .si
    # one, which got only its own arguments; the workflow's value is the last step's
    assert await handle.result(timeout=DEADLINE) == [["only", "mine"], "and", "mine"]
    steps = await handle.tasks()
    assert [await step.result(timeout=DEADLINE) for step in steps] == [
        3,
        13,
        39,
        ["only", "mine"],
        [["only", "mine"], "and", "mine"],
    ]
    assert [(await step.info()).queue for step in steps][2] == "side"
    assert await handle.status() is Status.SUCCEEDED


async def test_a_group_is_the_list_of_its_members_values_in_order(wf: Flow) -> None:
    # Given a group whose members end in the reverse of their order (the first sleeps longest)
    workflow = group(wf.square.s(i, (3 - i) * 0.05) for i in range(4))
    # When it runs, its value is the list of its members' values in the group's order
    handle = await workflow.submit()
    assert await handle.result(timeout=DEADLINE) == [0, 1, 4, 9]
    # (and they did end in reverse order)
    finished = [(await step.info()).finished_at for step in await handle.tasks()]
    assert finished == sorted(finished, reverse=True)  # type: ignore[type-var]


async def test_a_chord_body_receives_the_list_of_the_groups_values(wf: Flow) -> None:
    handle = await chord(group(wf.square.s(i) for i in range(5)), wf.collect.s()).submit()
    assert await handle.result(timeout=DEADLINE) == [0, 1, 4, 9, 16]
    # The body is the last step: it waited for every member, and ran once
    body = await (await handle.tasks())[-1].info()
    assert (body.name, body.parents, body.attempts) == ("wf.collect", [0, 1, 2, 3, 4], 1)


async def test_a_group_in_a_chain_gives_every_member_the_steps_value_and_passes_its_list_on(
    wf: Flow,
) -> None:
    # Given chain(step, group, step, step): 2 → [2+0, 2+1, 2+2] → 9 → 18
    workflow = chain(
        wf.add.s(1, 1), group(wf.add.s(i) for i in range(3)), wf.collect.s(), wf.total.s()
    )
    handle = await workflow.submit()
    assert await handle.result(timeout=DEADLINE) == 9
    steps = await handle.tasks()
    assert [await step.result(timeout=DEADLINE) for step in steps] == [2, 2, 3, 4, [2, 3, 4], 9]


async def test_a_group_after_a_group_gives_every_member_the_whole_list(wf: Flow) -> None:
    # Given group → group → step: the second group's members wait for one join step (no
    # worker runs it) and each receives the first group's list; an .si member receives none
    workflow = chain(
        group(wf.add.s(1, 1), wf.add.s(2, 2)),
        group(wf.collect.s(), wf.args_of.s("x"), wf.args_of.si("y")),
        wf.collect.s(),
    )
    handle = await workflow.submit()
    assert await handle.result(timeout=DEADLINE) == [[2, 4], [[2, 4], "x"], ["y"]]
    listed = await wf.app.list_tasks(workflow=handle.id)
    assert [(row.name, row.state) for row in listed][2] == ("taskq.join", Status.SUCCEEDED)
    assert listed[2].result == [2, 4]
    assert [row.parents for row in listed[3:6]] == [[2], [2], [2]]


async def test_nesting_three_levels_deep_keeps_each_values_shape(wf: Flow) -> None:
    # Given a chord of chains of groups: chain i is 2i → [2i, 4i] → 6i, the body collects
    header = group(
        chain(wf.add.s(i, i), group(wf.mul.s(k) for k in (1, 2)), wf.total.s()) for i in range(3)
    )
    handle = await chord(header, wf.collect.s()).submit()
    assert await handle.result(timeout=DEADLINE) == [0, 6, 12]
    # And a group of (a group, a chain ending in a group, a step): a nested list as the value
    nested = group(
        group(wf.square.s(1), wf.square.s(2)),
        chain(wf.add.s(1, 2), group(wf.mul.s(2), wf.mul.s(3))),
        wf.square.s(3),
    )
    handle = await nested.submit()
    assert await handle.result(timeout=DEADLINE) == [[1, 4], [6, 9], 9]


async def test_a_single_signature_submitted_is_a_workflow_of_one_step(wf: Flow) -> None:
    handle = await wf.add.s(2, 3).submit()
    assert isinstance(handle, taskq.WorkflowHandle)
    assert await handle.result(timeout=DEADLINE) == 5
    (step,) = await handle.tasks()
    assert (await step.info()).workflow_id == handle.id
    assert await handle.status() is Status.SUCCEEDED


# -- failures ------------------------------------------------------------------------------------


async def test_a_failed_chain_step_cancels_the_later_steps_and_the_result_names_it(
    wf: Flow,
) -> None:
    # Given a chain whose second step raises
    handle = await chain(wf.add.s(1, 1), wf.boom.s(), wf.mul.s(2), wf.total.si([1])).submit()
    # Then result() raises TaskFailed naming the step, its task and the error, as soon as
    # the step has failed (not at a timeout: the steps after it announce nothing)
    async with asyncio.timeout(DEADLINE):
        with pytest.raises(taskq.TaskFailed) as caught:
            await handle.result()
    assert "step 1 (task 'wf.boom') failed" in str(caught.value)
    assert caught.value.error_type == "ValueError"
    assert "boom 2" in caught.value.error_message
    assert caught.value.task_id == (await handle.tasks())[1].id
    # And the steps after it never ran: cancelled, because a step they wait for failed
    assert await states(handle) == [
        Status.SUCCEEDED,
        Status.FAILED,
        Status.CANCELLED,
        Status.CANCELLED,
    ]
    assert await errors(handle) == [None, "ValueError", "ParentFailed", "ParentFailed"]
    assert "total" not in wf.runs
    assert await handle.status() is Status.FAILED
    # And a cancelled step's own handle says so at once (its cancellation is announced)
    async with asyncio.timeout(DEADLINE):
        with pytest.raises(taskq.TaskCancelled):
            await (await handle.tasks())[3].result()


async def test_a_step_that_expires_unrun_cancels_the_steps_after_it_and_says_so(
    wf: Flow,
) -> None:
    # Given a chain whose first step sits on a queue no worker takes from, expiring in 0.5 s
    first = wf.add.options(queue="nobody_consumes", expires=0.5).s(1, 1)
    handle = await chain(first, wf.mul.s(2)).submit()
    after = (await handle.tasks())[1]
    # When the leader's sweep expires it, then the step after it ends cancelled, and its
    # own handle hears of it at once (announced by the sweep, not the 30 s re-read)
    async with asyncio.timeout(DEADLINE):
        with pytest.raises(taskq.TaskCancelled):
            await after.result()
    assert await states(handle) == [Status.EXPIRED, Status.CANCELLED]
    assert await errors(handle) == [None, "ParentFailed"]
    assert await handle.status() is Status.FAILED


async def test_a_failed_group_member_lets_its_siblings_finish_and_cancels_the_chord_body(
    wf: Flow,
) -> None:
    # Given a chord whose second member fails at once while the others wait at a gate
    header = group(wf.gated.s(0), wf.boom.s(1), wf.gated.s(2))
    handle = await chord(header, wf.total.s()).submit()
    first, boom, third, body = await handle.tasks()
    await eventually(boom.status, lambda s: s is Status.FAILED, what="the member failed")
    # (by then the body is already cancelled, while the siblings have not ended)
    assert await body.status() is Status.CANCELLED
    assert not (await first.status()).is_final and not (await third.status()).is_final
    # When the siblings are let go, they still finish
    wf.gate.set()
    assert await all_final(handle) == [
        Status.SUCCEEDED,
        Status.FAILED,
        Status.SUCCEEDED,
        Status.CANCELLED,
    ]
    assert (await first.result(), await third.result()) == (0, 2)
    assert (await errors(handle))[3] == "ParentFailed"
    assert "total" not in wf.runs
    with pytest.raises(taskq.TaskFailed, match=r"step 1 \(task 'wf.boom'\) failed"):
        await handle.result(timeout=DEADLINE)
    # And a plain group with a failed member: the others' values are kept on their rows
    handle = await group(wf.square.s(1), wf.boom.s(2), wf.square.s(3)).submit()
    with pytest.raises(taskq.TaskFailed, match="step 1"):
        await handle.result(timeout=DEADLINE)
    assert await all_final(handle) == [Status.SUCCEEDED, Status.FAILED, Status.SUCCEEDED]
    assert [(await step.info()).result for step in await handle.tasks()] == [1, None, 9]
    assert await handle.status() is Status.FAILED


async def test_a_tolerant_chord_body_receives_task_failed_in_the_failed_members_place(
    wf: Flow,
) -> None:
    header = group(wf.square.s(1), wf.boom.s(2), wf.square.s(3))
    handle = await chord(header, wf.describe.s(), tolerate_failures=True).submit()
    # Then the body ran with the failed member's TaskFailed in its place in the list
    assert await handle.result(timeout=DEADLINE) == [
        ["ok", 1],
        ["failed", "ValueError", "boom 2"],
        ["ok", 9],
    ]
    assert await states(handle) == [
        Status.SUCCEEDED,
        Status.FAILED,
        Status.SUCCEEDED,
        Status.SUCCEEDED,
    ]
    assert await handle.status() is Status.SUCCEEDED
    # And a member that is a chain whose first step failed: its last step never ran
    # (cancelled), and the body gets that step's TaskFailed (ParentFailed) in its place
    header = group(chain(wf.boom.s(1), wf.add.s(1)), wf.square.s(2))
    handle = await chord(header, wf.describe.s(), tolerate_failures=True).submit()
    assert await handle.result(timeout=DEADLINE) == [
        ["failed", "ParentFailed", "not run: a step it waits for failed or was cancelled"],
        ["ok", 4],
    ]
    assert "add" not in wf.runs


async def test_a_retried_step_releases_its_children_exactly_once(backend: Backend) -> None:
    # Given a step that fails its first attempt (retried once), in a chord with a gated member
    # and in a chain
    made = flow(backend)
    app, attempts, after = made.app, [0], []

    @app.task(name="wf.flaky", max_retries=1, backoff=taskq.Backoff.fixed(0.05))
    async def flaky(x: int) -> int:
        attempts[0] += 1
        if taskq.context().attempt == 1:
            raise RuntimeError("first attempt fails")
        return x

    @app.task(name="wf.after")
    async def after_(values: Any) -> Any:
        after.append(values)
        return values

    async with app, app.worker(concurrency=4):
        handle = await chord(
            group(flaky.s(1), made.gated.s(2)), chain(after_.s(), made.collect.s())
        ).submit()
        flaky_step, _, body, _ = await handle.tasks()
        # When the flaky member has failed once and then succeeded
        await eventually(flaky_step.info, lambda i: i.state is Status.SUCCEEDED, what="flaky ok")
        assert (await flaky_step.info()).attempts == 2
        # Then the body still waits for the gated member (a retry released nothing)
        body_row = await body.info()
        assert (body_row.state, body_row.run_at, body_row.attempts) == (Status.SCHEDULED, None, 0)
        # And once that member ends, the body runs once, with both values
        made.gate.set()
        assert await handle.result(timeout=DEADLINE) == [1, 2]
        # And in a chain: the step after the retried one runs once, with its value
        attempts[0] = 0
        handle = await chain(flaky.s(7), after_.s(), made.add.s(1)).submit()
        assert await handle.result(timeout=DEADLINE) == 8
    assert attempts == [2]
    assert after == [[1, 2], 7]


async def test_cancel_midway_ends_every_unfinished_step_cancelled(wf: Flow) -> None:
    # Given a chain whose second step is running (blocked) and a group waiting after it
    workflow = chain(wf.add.s(1, 1), wf.blocked.s(), group(wf.add.s(1), wf.add.s(2)), wf.total.s())
    handle = await workflow.submit()
    async with asyncio.timeout(DEADLINE):
        await wf.started.wait()
    # When the workflow is cancelled
    assert await handle.cancel() is True
    # Then result() raises TaskCancelled, every step not yet ended is cancelled (the running
    # one included), and the workflow's status is cancelled
    with pytest.raises(taskq.TaskCancelled):
        await handle.result(timeout=DEADLINE)
    assert await all_final(handle) == [Status.SUCCEEDED] + [Status.CANCELLED] * 4
    assert await handle.status() is Status.CANCELLED
    assert wf.runs == ["add"]
    # And cancelling it again changes nothing
    assert await handle.cancel() is False


# -- refused before anything is stored -----------------------------------------------------------


async def test_wrong_arguments_are_refused_before_anything_is_stored(
    wf: Flow, backend: Backend
) -> None:
    # add(parent's value, 1, 2): one argument too many, counting what the parent passes
    with pytest.raises(taskq.InvalidArguments, match=r"workflow step 1 \(task 'wf.add'\)"):
        await chain(wf.add.s(1, 2), wf.add.s(1, 2)).submit()
    # a group member after a step gets its value too
    with pytest.raises(taskq.InvalidArguments, match="workflow step 2"):
        await chain(wf.add.s(1, 2), group(wf.add.s(1), wf.boom.s(1))).submit()
    # a chord body takes the list: `total` takes one argument
    with pytest.raises(taskq.InvalidArguments, match=r"workflow step 2 \(task 'wf.total'\)"):
        await chord(group(wf.add.s(1, 1), wf.add.s(2, 2)), wf.total.s(5)).submit()
    # an immutable step gets nothing: `add` needs two
    with pytest.raises(taskq.InvalidArguments):
        await chain(wf.add.s(1, 2), wf.add.si(1)).submit()
    assert await wf.app.list_tasks() == []
    assert await stored_rows(backend.store_url) == (0, 0)


async def test_an_empty_group_is_a_configuration_error_and_stores_nothing(
    wf: Flow, backend: Backend
) -> None:
    with pytest.raises(taskq.ConfigurationError, match="group\\(\\) of no tasks"):
        group()
    with pytest.raises(taskq.ConfigurationError, match="group\\(\\) of no tasks"):
        group([])
    with pytest.raises(taskq.ConfigurationError):
        chord([], wf.total.s())
    assert await stored_rows(backend.store_url) == (0, 0)


# -- the handle's views --------------------------------------------------------------------------


async def test_get_workflow_returns_a_handle_whose_result_matches(wf: Flow) -> None:
    handle = await chord(group(wf.square.s(i) for i in range(4)), wf.total.s()).submit()
    found = await wf.app.get_workflow(handle.id)
    assert found.id == handle.id
    assert await found.result(timeout=DEADLINE) == await handle.result(timeout=DEADLINE) == 14
    assert await found.status() is Status.SUCCEEDED
    assert [t.id for t in await found.tasks()] == [t.id for t in await handle.tasks()]
    # A group's handle found again gives the list, and an unknown id is TaskNotFound
    members = await group(wf.square.s(2), wf.square.s(3)).submit()
    assert await (await wf.app.get_workflow(members.id)).result(timeout=DEADLINE) == [4, 9]
    with pytest.raises(taskq.TaskNotFound):
        await wf.app.get_workflow("00000000-0000-4000-8000-000000000000")


async def test_list_tasks_of_a_workflow_and_handle_tasks_are_in_step_order(wf: Flow) -> None:
    # Given a workflow whose steps end out of step order (the first member sleeps longest)
    workflow = chain(
        wf.add.s(0, 1), group(wf.square.s(0.15), wf.square.s(0.0)), wf.collect.s(), wf.total.s()
    )
    handle = await workflow.submit()
    await handle.result(timeout=DEADLINE)
    # (another workflow's steps are not listed)
    await (await wf.add.s(5, 5).submit()).result(timeout=DEADLINE)
    listed = await wf.app.list_tasks(workflow=handle.id)
    assert [(row.step, row.name) for row in listed] == [
        (0, "wf.add"),
        (1, "wf.square"),
        (2, "wf.square"),
        (3, "wf.collect"),
        (4, "wf.total"),
    ]
    assert all(row.workflow_id == handle.id for row in listed)
    assert [row.parents for row in listed] == [[], [0], [0], [1, 2], [3]]
    assert [t.id for t in await handle.tasks()] == [row.id for row in listed]
    # (the first member did end after the second)
    assert listed[1].finished_at > listed[2].finished_at  # type: ignore[operator]


async def test_events_show_each_steps_changes_in_order_and_end_once_the_workflow_is_final(
    backend: Backend,
) -> None:
    made = flow(backend)
    async with made.app:
        # Given a chain submitted while no worker runs, watched
        handle = await chain(made.add.s(1, 2), made.add.s(3), made.mul.s(2)).submit()
        ids = [t.id for t in await handle.tasks()]
        events = handle.events()
        first = await asyncio.wait_for(anext(events), DEADLINE)  # (the watch is bound)
        # When a worker runs it
        async with made.app.worker():
            async with asyncio.timeout(DEADLINE):
                rest = [event async for event in events]
            # Then the iterator ended, and not before the workflow was final
            assert await handle.status() is Status.SUCCEEDED
            assert await handle.result(timeout=DEADLINE) == 12
        # And a watcher of a workflow already final gets each step's state, then the end
        async with asyncio.timeout(DEADLINE):
            late = [event async for event in (await made.app.get_workflow(handle.id)).events()]
    seen = [first, *rest]
    # It began with each step's state as stored (the first step queued, the others waiting)
    snapshot = {e.task_id: e.state for e in seen[: len(ids)]}
    assert snapshot == {
        ids[0]: Status.QUEUED,
        ids[1]: Status.SCHEDULED,
        ids[2]: Status.SCHEDULED,
    }
    # And went on with the steps' changes as they ran, each step's final state last (the
    # order in between is not checked: a step's events may arrive out of order, a bug
    # reported apart)
    first_step = [e.state for e in seen[len(ids) :] if e.task_id == ids[0]]
    assert Status.RUNNING in first_step, first_step
    for task_id in ids:
        mine = [e.state for e in seen if e.task_id == task_id and e.kind == "state"]
        assert mine[-1] is Status.SUCCEEDED, mine
    assert sorted((e.task_id, e.state) for e in late) == sorted((i, Status.SUCCEEDED) for i in ids)
