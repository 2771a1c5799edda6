"""`taskq workflow ID` (the steps as a tree, `--json`) and `taskq tasks --workflow ID`, on
RabbitMQ + PostgreSQL with a real workflow; and the tree of 10,000 steps, built from rows."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import taskq
from taskq import chain, group
from taskq.cli.workflow import Line, tree_lines
from taskq.store import TaskError, TaskRecord
from tests.conftest import Backend
from tests.integration.client.helpers import table_rows, taskq_cli
from tests.support import eventually

DEADLINE = 15.0
Status = taskq.TaskStatus
# A step's line in the tree: its prefix (4 characters a level), number, name, state.
STEP_LINE = re.compile(r"^(?P<prefix>[│├└─ ]*)(?P<step>\d+)  (?P<name>\S+)  (?P<state>\w+)")


def drawn_steps(output: str) -> dict[int, tuple[int, str, str, str]]:
    """step → (depth, name, state, whole line) of each step line of the tree."""
    found = {}
    for line in output.splitlines():
        if match := STEP_LINE.match(line):
            depth = len(match["prefix"]) // 4
            found[int(match["step"])] = (depth, match["name"], match["state"], line)
    return found


async def test_taskq_workflow_draws_the_tree_prints_json_and_tasks_lists_its_steps(
    production: Backend,
) -> None:
    # Given a chain (a start, a group of three with one that fails, a step after the group)
    # run to its end by a worker, and a task outside it
    app = production.app()

    @app.task(name="cliwf.start")
    async def start(x: int) -> int:
        return x

    @app.task(name="cliwf.double")
    async def double(x: int) -> int:
        return 2 * x

    @app.task(name="cliwf.boom")
    async def boom(x: int) -> int:
        raise ValueError(f"boom {x}")

    @app.task(name="cliwf.total")
    async def total(values: list[int]) -> int:
        return sum(values)

    async with app:
        async with app.worker():
            handle = await chain(
                start.s(2), group(double.s(), boom.s(), double.s()), total.s()
            ).submit()
            # (polled: `result()` is not woken when the store cancels the step it waits for)
            state = await eventually(
                handle.status, lambda s: s.is_final, what="workflow ended", within=DEADLINE
            )
        assert state is Status.FAILED
        step_ids = [task.id for task in await handle.tasks()]
        other = await start.submit(1)  # (not a step: never listed with the workflow)
    store = ["--store-url", production.store_url]

    # When `taskq workflow ID` draws it
    shown = await taskq_cli("workflow", handle.id, *store)

    # Then the header names it, its state and its counts by state
    assert shown.exit_code == 0, shown.output
    head, counts = shown.stdout.splitlines()[:2]
    assert head == f"workflow {handle.id} failed"
    assert counts.startswith("5 steps: 3 succeeded, 1 failed, 1 cancelled"), counts
    # And each step is under its parent, with its name, state, attempts and duration
    steps = drawn_steps(shown.stdout)
    assert {step: drawn[:3] for step, drawn in steps.items()} == {
        0: (1, "cliwf.start", "succeeded"),
        1: (2, "cliwf.double", "succeeded"),
        2: (2, "cliwf.boom", "failed"),
        3: (2, "cliwf.double", "succeeded"),
        4: (3, "cliwf.total", "cancelled"),  # (under its first parent, step 1)
    }, shown.stdout
    lines = shown.stdout.splitlines()
    assert lines.index(steps[4][3]) == lines.index(steps[1][3]) + 1
    assert "↳ after 1, 2, 3" in steps[4][3]
    assert re.search(r"  1 attempt  \d+\.\d{3} s  ValueError: boom 2$", steps[2][3]), steps[2]
    assert "0 attempts" in steps[4][3] and "ParentFailed" in steps[4][3]

    # And --json prints the workflow and every step, in step order
    shown = await taskq_cli("workflow", handle.id, "--json", *store)
    assert shown.exit_code == 0, shown.output
    printed = json.loads(shown.stdout)
    assert (printed["id"], printed["state"]) == (handle.id, "failed")
    rows = printed["steps"]
    assert [(r["step"], r["id"], r["name"], r["state"], r["parents"], r["attempts"])
            for r in rows] == [
        (0, step_ids[0], "cliwf.start", "succeeded", [], 1),
        (1, step_ids[1], "cliwf.double", "succeeded", [0], 1),
        (2, step_ids[2], "cliwf.boom", "failed", [0], 1),
        (3, step_ids[3], "cliwf.double", "succeeded", [0], 1),
        (4, step_ids[4], "cliwf.total", "cancelled", [1, 2, 3], 0),
    ]  # fmt: skip
    assert set(rows[0]) == {"step", "id", "name", "state", "parents", "attempts",
                            "started_at", "finished_at", "error"}  # fmt: skip
    assert datetime.fromisoformat(rows[0]["started_at"]) <= datetime.fromisoformat(
        rows[0]["finished_at"]
    )
    assert (rows[4]["started_at"], rows[0]["error"]) == (None, None)
    assert (rows[2]["error"]["type"], rows[2]["error"]["message"]) == ("ValueError", "boom 2")
    assert rows[4]["error"]["type"] == "ParentFailed"

    # And `taskq tasks --workflow ID` lists its steps only, in step order
    shown = await taskq_cli("tasks", "--workflow", handle.id, "--json", *store)
    assert shown.exit_code == 0, shown.output
    listed = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [line["id"] for line in listed] == step_ids
    assert other.id not in shown.stdout
    shown = await taskq_cli("tasks", "--workflow", handle.id, *store)
    table = table_rows(shown.stdout)
    assert list(table) == step_ids, shown.stdout
    assert [row[:4] for row in table.values()][2] == ["2", "cliwf.boom", "default", "failed"]

    # And an unknown id, one that is no UUID, or a step's id is refused in one line, exit 1
    unknown = str(uuid.uuid4())
    for given, said in [
        (unknown, f"no workflow with id {unknown}"),
        ("not-an-id", "'not-an-id' is not a workflow id"),
        (step_ids[2], f"is the id of step 2 (task 'cliwf.boom') of workflow {handle.id}"),
    ]:
        shown = await taskq_cli("workflow", given, *store)
        assert shown.exit_code == 1, shown.output
        assert said in shown.output and shown.output.count("\n") == 1, shown.output
    shown = await taskq_cli("tasks", "--workflow", "not-an-id", *store)
    assert shown.exit_code == 1 and "is not a workflow id" in shown.output, shown.output


# -- the tree of a large workflow, from rows ---------------------------------------------------

MOMENT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def plain(lines: Iterable[Line]) -> list[str]:
    """The lines as printed (without their styles)."""
    return ["".join(text for text, _ in line) for line in lines]


def step(number: int, name: str, state: Status, parents: list[int], **extra: Any) -> TaskRecord:
    ran = state not in (Status.SCHEDULED, Status.CANCELLED)
    return TaskRecord(
        id=str(uuid.UUID(int=number)), name=name, queue="default", priority=0, state=state,
        args=[], kwargs={}, result=None, error=extra.get("error"), attempts=int(ran),
        timeout=None, worker_id=None, created_at=MOMENT, started_at=MOMENT if ran else None,
        finished_at=MOMENT + timedelta(seconds=1) if state.is_final else None,
        workflow_id="w", step=number, parents=parents,
    )  # fmt: skip


def test_a_group_of_10000_prints_fast_in_a_few_lines_and_all_with_all() -> None:
    # Given a chord: 10,000 `work` members (two of them failed) and a body after all of them
    failed = {17, 5000}
    error = TaskError("ValueError", "bad")
    members = [
        step(n, "work", Status.FAILED if n in failed else Status.SUCCEEDED, [], error=error)
        for n in range(10_000)
    ]
    steps = [*members, step(10_000, "sum", Status.CANCELLED, list(range(10_000)))]
    # When its tree is drawn
    began = time.monotonic()
    lines = plain(tree_lines(steps))
    took = time.monotonic() - began
    # Then it is a few lines: the body under the first member, five members, the rest as one
    # line, the failed members
    assert took < 1.0, took
    assert len(lines) < 12, lines
    assert "10000  sum  cancelled" in lines[1] and "↳ after 0-9999" in lines[1]
    assert "├── … 9,992 more `work` steps: succeeded" in lines  # (and 0, with the body)
    assert sum("work  failed" in line for line in lines) == 2
    # And --all draws every step
    began = time.monotonic()
    assert len(plain(tree_lines(steps, show_all=True))) == 10_001
    assert time.monotonic() - began < 2.0


def test_a_chain_of_10000_is_not_drawn_10000_deep() -> None:
    # Given a chain of 10,000 alike steps, then one that failed
    steps = [step(n, "link", Status.SUCCEEDED, [n - 1] if n else []) for n in range(10_000)]
    steps.append(step(10_000, "last", Status.FAILED, [9_999]))
    # When its tree is drawn: five links, one line for the others, then the last step
    lines = plain(tree_lines(steps))
    assert len(lines) == 7, lines
    assert lines[5].endswith("└── … 9,995 more `link` steps, one after another: succeeded")
    assert "10000  last  failed" in lines[6]
    # And with --all, every step, none indented more than MAX_DEPTH levels (no recursion)
    every = plain(tree_lines(steps, show_all=True))
    assert sum(bool(STEP_LINE.match(line)) for line in every) == 10_001
    assert max(map(len, every)) < 200
