"""`taskq workflow ID`: a workflow's steps as a tree, its state and its counts by state.

Each step is drawn under its first parent (a step after several is marked `↳ after 0, 1, 2`).
Of alike siblings (same task name and state, and alike steps after them) the first `SHOWN` are
drawn and the rest are one line, and so are alike steps one after another in a chain: a group
or a chain of 10,000 steps prints as a few lines. `--all` draws every step.
"""

from __future__ import annotations

import collections
import json
import sys
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, NamedTuple

import typer

from taskq.cli.common import StoreUrl, fail, out, run, store_from
from taskq.cli.inspect import STATE_STYLE
from taskq.status import TaskStatus
from taskq.store import Store, TaskRecord, workflows

SHOWN = 5  # steps of one kind shown among siblings before the rest collapse into one line
MAX_LINES = 500  # without --all, no more step lines than this
MAX_DEPTH = 24  # deeper steps are drawn in a tree of their own, below
_ERROR_WIDTH = 100


def workflow(
    workflow_id: Annotated[str, typer.Argument(help="The workflow's id (a UUID, given whole).")],
    all_: Annotated[
        bool, typer.Option("--all", help="Show every step (none collapsed into a line).")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="The workflow and every step as one JSON object.")
    ] = False,
    store_url: StoreUrl = None,
) -> None:
    """Show a workflow: its state, its counts by state, and its steps as a tree."""
    try:
        checked = str(uuid.UUID(workflow_id.strip()))
    except ValueError:
        fail(f"{workflow_id!r} is not a workflow id (a UUID, given whole)")
    found = run(_read(store_from(store_url), checked))
    if isinstance(found, str):
        fail(found)
    output, created_at, steps = found
    state = overall_state(output, steps)
    if as_json:
        shown = {"id": checked, "state": state.value, "steps": [step_json(s) for s in steps]}
        sys.stdout.write(json.dumps(shown) + "\n")
        return
    show([*header(checked, state, created_at, steps), *tree_lines(steps, show_all=all_)])


async def _read(store: Store, workflow_id: str) -> tuple[Any, datetime, list[TaskRecord]] | str:
    """→ (the shape of its value, when it was submitted, its steps in step order), or why
    there is none."""
    await store.open()
    try:
        found = await store.workflow(workflow_id)
        if found is None:
            task = await store.get_task(workflow_id)
            if task is not None and task.workflow_id is not None:
                return (
                    f"{workflow_id} is the id of step {task.step} (task {task.name!r}) of "
                    f"workflow {task.workflow_id}: `taskq workflow {task.workflow_id}`"
                )
            return (
                f"no workflow with id {workflow_id} in this store "
                "(is --store-url / TASKQ_STORE_URL right?)"
            )
        steps, output, created_at = found
        records = await store.find_tasks(workflow_id=workflow_id, limit=max(steps, 1))
        return output, created_at, records
    finally:
        await store.close()


def overall_state(output: Any, steps: Sequence[TaskRecord]) -> TaskStatus:
    """The workflow's state as `WorkflowHandle.status()` gives it, from its rows: succeeded
    once the steps that make its value have; failed once every step has ended and one
    failed (or expired); cancelled likewise if none did; else running, queued, scheduled."""
    by_step = {record.step: record.state for record in steps}
    if all(by_step.get(step) is TaskStatus.SUCCEEDED for step in workflows.steps_in(output)):
        return TaskStatus.SUCCEEDED
    counts = collections.Counter(by_step.values())
    if all(state.is_final for state in counts):
        failed = counts[TaskStatus.FAILED] or counts[TaskStatus.EXPIRED]
        return TaskStatus.FAILED if failed else TaskStatus.CANCELLED
    for state in (TaskStatus.RUNNING, TaskStatus.QUEUED):
        if counts[state]:
            return state
    return TaskStatus.SCHEDULED


def step_json(record: TaskRecord) -> dict[str, Any]:
    def when(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    return {
        "step": record.step,
        "id": record.id,
        "name": record.name,
        "state": record.state.value,
        "parents": list(record.parents or ()),
        "attempts": record.attempts,
        "started_at": when(record.started_at),
        "finished_at": when(record.finished_at),
        "error": None if record.error is None else record.error.to_json(),
    }


# A line as printed: (text, rich style) pieces. Not markup: parsing it took longer than the
# rest of a 10,000 step tree, which is written as plain text unless it goes to a terminal.
Line = list[tuple[str, str]]


def show(lines: Sequence[Line]) -> None:
    console = out()
    if not console.is_terminal:
        sys.stdout.write("".join("".join(text for text, _ in line) + "\n" for line in lines))
        return
    from rich.text import Text

    console.print(Text("\n").join(Text.assemble(*line) for line in lines), soft_wrap=True)


def header(
    workflow_id: str, state: TaskStatus, created_at: datetime, steps: Sequence[TaskRecord]
) -> list[Line]:
    counts = collections.Counter(record.state for record in steps)
    second: Line = [(f"{len(steps):,} {'step' if len(steps) == 1 else 'steps'}: ", "")]
    for known in (s for s in TaskStatus if counts[s]):
        second += [(", " if len(second) > 1 else "", ""), (f"{counts[known]:,} ", "")]
        second.append(_styled(known))
    if not counts:
        second.append(("none left in the store", ""))
    second.append((f" · submitted {created_at.astimezone():%Y-%m-%d %H:%M:%S}", "dim"))
    return [[("workflow", "bold"), (f" {workflow_id} ", ""), _styled(state)], second]


class _Tree:
    """Where each step is drawn: under its first parent, in step order; and what each
    subtree looks like (`kind`: alike subtrees share a number), bottom up."""

    def __init__(self, steps: Sequence[TaskRecord]) -> None:
        self.records = {record.step: record for record in steps if record.step is not None}
        self.children: dict[int | None, list[int]] = collections.defaultdict(list)
        for step, record in self.records.items():
            first = record.parents[0] if record.parents else None
            self.children[first if first in self.records else None].append(step)
        self.kind: dict[int, int] = {}
        self.size: dict[int, int] = {}  # steps in the subtree
        kinds: dict[tuple[Any, ...], int] = {}
        for step in sorted(self.records, reverse=True):  # (children come after their parents)
            record, below = self.records[step], self.children.get(step, [])
            key = (record.name, record.state, len(record.parents or ()) > 1,
                   tuple(self.kind[child] for child in below))  # fmt: skip
            self.kind[step] = kinds.setdefault(key, len(kinds))
            self.size[step] = 1 + sum(self.size[child] for child in below)


class _More(NamedTuple):
    """Siblings not drawn: `hidden` subtrees alike, the first of them `first`."""

    hidden: int
    first: int


class _Run(NamedTuple):
    """Steps of a chain not drawn: `hidden` alike, each the only step after the one before,
    from `first` to `last` (whose children are drawn under this line)."""

    hidden: int
    first: int
    last: int


_Row = int | _More | _Run


def _rows(tree: _Tree, siblings: list[int], show_all: bool) -> list[_Row]:
    """`siblings` as drawn: each kind's first `SHOWN` steps, then one line for the rest
    (where the rest are more than one step), at the place of the first not shown."""
    if show_all:
        return list(siblings)
    total = collections.Counter(tree.kind[step] for step in siblings)
    seen: collections.Counter[int] = collections.Counter()
    rows: list[_Row] = []
    for step in siblings:
        kind = tree.kind[step]
        seen[kind] += 1
        if total[kind] <= SHOWN + 1 or seen[kind] <= SHOWN:
            rows.append(step)
        elif seen[kind] == SHOWN + 1:
            rows.append(_More(total[kind] - SHOWN, step))
    return rows


def _chained(tree: _Tree, step: int) -> int | None:
    """The step after `step` in a chain: its only child, of which it is the only parent."""
    below = tree.children.get(step, [])
    if len(below) == 1 and len(tree.records[below[0]].parents or ()) == 1:
        return below[0]
    return None


def _alike(one: TaskRecord, other: TaskRecord) -> bool:
    return (one.name, one.state) == (other.name, other.state)


def _run_from(tree: _Tree, step: int) -> _Run | None:
    """The run of alike chained steps from `step` on, if longer than one step."""
    count, last = 1, step
    while (following := _chained(tree, last)) is not None and _alike(
        tree.records[following], tree.records[step]
    ):
        count, last = count + 1, following
    return _Run(count, step, last) if count > 1 else None


def tree_lines(steps: Sequence[TaskRecord], *, show_all: bool = False) -> Iterator[Line]:
    """The tree's lines, depth first, without recursion (a chain of 10,000 steps is 10,000
    deep). Past `MAX_DEPTH` levels, a subtree continues as a tree of its own, below."""
    tree = _Tree(steps)
    budget = None if show_all else MAX_LINES
    drawn = summed = 0  # steps drawn; steps in collapsed lines
    # (row, prefix of its line, whether it is the last of its siblings, depth, how many
    # alike chained steps end with it)
    Entry = tuple[_Row, str, bool, int, int]

    def under(parent: int | None, prefix: str, depth: int, streak: int) -> list[Entry]:
        """Entries for what is drawn under `parent`, to pop in order."""
        child = None if parent is None else _chained(tree, parent)
        if parent is not None and child is not None:
            alike = _alike(tree.records[child], tree.records[parent])
            streak = streak + 1 if alike else 1
            row: _Row = child
            if alike and streak > SHOWN and not show_all:
                row = _run_from(tree, child) or child
            return [(row, prefix, True, depth, streak)]
        rows = _rows(tree, tree.children.get(parent, []), show_all)
        return [(row, prefix, i == len(rows) - 1, depth, 1) for i, row in enumerate(rows)][::-1]

    continued: collections.deque[int | None] = collections.deque([None])
    while continued:
        top = continued.popleft()
        if top is not None:
            yield [(f"after step {top}:", "dim")]
        stack = under(top, "", 1, 0)
        while stack:
            row, prefix, last, depth, streak = stack.pop()
            branch, inner = ("└── ", prefix + "    ") if last else ("├── ", prefix + "│   ")
            if isinstance(row, _More):
                yield [(prefix + branch, ""), *_collapsed(tree, row)]
                summed += row.hidden * tree.size[row.first]
                continue
            if budget is not None and drawn >= budget:
                left = len(tree.records) - drawn - summed
                yield [(f"… {left:,} more steps not drawn (--all shows every step)", "dim")]
                return
            if isinstance(row, _Run):
                yield [(prefix + branch, ""), *_collapsed(tree, row)]
                summed += row.hidden
                step, streak = row.last, 0
            else:
                drawn += 1
                yield [(prefix + branch, ""), *_step_line(tree.records[row])]
                step = row
            if tree.children.get(step) and depth >= MAX_DEPTH:
                yield [(inner + "└── ", ""), (f"… continued below, after step {step}", "dim")]
                continued.append(step)
                continue
            stack.extend(under(step, inner, depth + 1, streak))


def _collapsed(tree: _Tree, row: _More | _Run) -> Line:
    record = tree.records[row.first]
    noun = "step" if row.hidden == 1 else "steps"
    if isinstance(row, _Run):
        noun += ", one after another"
    line = [(f"… {row.hidden:,} more ", "dim"), (f"`{record.name}`", ""), (f" {noun}: ", "dim")]
    line.append(_styled(record.state))
    after = tree.size[row.first] - 1
    if isinstance(row, _More) and after:
        following = "step" if after == 1 else "steps"
        line.append((f" (each with {after:,} {following} after it, alike)", "dim"))
    return line


def _step_line(record: TaskRecord) -> Line:
    parts = [(str(record.step), "bold"), (record.name, ""), _styled(record.state)]
    if record.name == workflows.JOIN_TASK:
        parts[1] = (f"{record.name} (join)", "dim")
    else:
        parts.append((f"{record.attempts} attempt" + ("" if record.attempts == 1 else "s"), ""))
        took = _took(record)
        if took:
            parts.append((took, ""))
    if record.parents and len(record.parents) > 1:
        parts.append((f"↳ after {_numbers(record.parents)}", "dim"))
    if record.error and record.state is not TaskStatus.SUCCEEDED:
        message = f"{record.error.type}: {record.error.message}".splitlines()[0]
        if len(message) > _ERROR_WIDTH:
            message = message[: _ERROR_WIDTH - 1] + "…"
        parts.append((message, "red"))
    line: Line = []
    for part in parts:
        line += [("  ", ""), part] if line else [part]
    return line


def _numbers(steps: Sequence[int], most: int = 8) -> str:
    """`0, 1, 2` for a few steps, `0-9999` for a longer run; at most `most` pieces."""
    pieces: list[str] = []
    start = previous = steps[0]
    for step in [*steps[1:], None]:
        if step is not None and step == previous + 1:
            previous = step
            continue
        if previous - start < 3:
            pieces += [str(number) for number in range(start, previous + 1)]
        else:
            pieces.append(f"{start}-{previous}")
        if step is not None:
            start = previous = step
    if len(pieces) > most:
        pieces = [*pieces[: most - 1], f"… ({len(steps):,} steps)"]
    return ", ".join(pieces)


def _took(record: TaskRecord) -> str:
    if record.started_at is None:
        return ""
    if record.finished_at is not None:
        return _duration((record.finished_at - record.started_at).total_seconds())
    if record.state is TaskStatus.RUNNING:
        return _duration((datetime.now(UTC) - record.started_at).total_seconds()) + " so far"
    return ""


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.3f} s"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"


def _styled(state: TaskStatus) -> tuple[str, str]:
    return state.value, STATE_STYLE[state]
