"""Workflows as data: signatures, `chain`, `group`, `chord`, and their plan.

A workflow is planned into flat steps before anything is stored: each step is one task call,
the steps it waits for (`after`), and what it receives from them (`receives`: the shape of
its first argument, built from the values of earlier steps). The plan is what the store
writes as rows and edges, in one transaction; this module does no I/O.

Rules (issue 18): a chain passes a step's value as the next step's first positional argument
(not to immutable `.si` steps); a group's value is the list of its members' values, in
order; a chord's body receives that list; a group that follows a step gives that step's
value to every member. Arguments are checked against each task's signature here, counting
the argument a parent will pass, so a wrong workflow fails before anything is stored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

from taskq.client.options import TaskOptions
from taskq.client.workflow_handle import WorkflowHandle
from taskq.exceptions import ConfigurationError
from taskq.store import workflows

MAX_STEPS = 100_000
# The task name of a join step: where a group follows several steps, its members wait for
# one join instead of each waiting for all of them (N times M edges). The store ends a join in
# the transaction that releases it, its value the list it receives; no worker runs it.
JOIN = workflows.JOIN_TASK
_PARENT_VALUE = object()  # stands for the argument a parent passes, in argument checks


class Callee(Protocol):
    """What a signature calls: a registered task (`taskq.Task`)."""

    name: str
    default_options: TaskOptions

    async def submit_workflow(self, node: Node) -> WorkflowHandle: ...

    def check_arguments(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], *, where: str | None = None
    ) -> None: ...


class _Submittable:
    """`await wf.submit()`: store every step in one transaction and start those that wait
    for nothing; → a `WorkflowHandle`. Checked whole first: nothing is stored if any step's
    arguments do not fit its task."""

    __slots__ = ()

    async def submit(self) -> WorkflowHandle:
        node: Node = self  # type: ignore[assignment]
        return await _first_signature(node).task.submit_workflow(node)


def _first_signature(node: Node) -> Signature:
    while not isinstance(node, Signature):
        node = node.parts[0] if isinstance(node, Chain) else (
            node.members[0] if isinstance(node, Group) else node.header
        )  # fmt: skip
    return node


@dataclasses.dataclass(frozen=True, slots=True)
class Signature(_Submittable):
    """A task call not yet submitted: `add.s(1, 2)`; `add.si(1, 2)` is immutable (it does
    not receive its parent's value). Options given by `task.options(...)` carry over."""

    task: Callee
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    options: TaskOptions | None = None
    immutable: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Chain(_Submittable):
    """Run `parts` one after the other; each receives the value of the one before."""

    parts: tuple[Node, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Group(_Submittable):
    """Run `members` in parallel; the group's value is the list of theirs, in order."""

    members: tuple[Node, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Chord(_Submittable):
    """Run `header` (a group), then `body` with the list of its values. With
    `tolerate_failures`, the body runs even if members failed, their `TaskFailed` in the
    list in their place."""

    header: Group
    body: Node
    tolerate_failures: bool = False


Node: TypeAlias = Signature | Chain | Group | Chord


def chain(*parts: Node) -> Chain:
    if not parts:
        raise ConfigurationError("chain() needs at least one step")
    return Chain(tuple(_checked_node(part, "chain") for part in parts))


def group(*members: Node | Iterable[Node]) -> Group:
    """`group(a.s(), b.s())` or `group(x.s(i) for i in ...)`."""
    if len(members) == 1 and not isinstance(members[0], Node):
        members = tuple(members[0])
    if not members:
        raise ConfigurationError("group() of no tasks: it would never finish; give it members")
    return Group(tuple(_checked_node(member, "group") for member in members))


def chord(header: Group | Iterable[Node], body: Node, *, tolerate_failures: bool = False) -> Chord:
    """`chord(group(...), merge.s())`: `merge` receives the list of the group's values."""
    members = header if isinstance(header, Group) else group(header)
    return Chord(members, _checked_node(body, "chord body"), tolerate_failures)


def _checked_node(node: object, where: str) -> Node:
    if not isinstance(node, Node):
        raise ConfigurationError(
            f"{where}: {type(node).__name__} is not a signature (task.s(...)) or a workflow"
        )
    return node


# -- the plan ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Value:
    """The value of step `step`."""

    step: int


@dataclasses.dataclass(frozen=True, slots=True)
class ListOf:
    """A list of values, in order (a group's value; a member may itself be a group)."""

    items: tuple[Shape, ...]


Shape: TypeAlias = Value | ListOf


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One task call of a workflow: it runs once every step in `after` has succeeded (or
    ended, with `tolerate_failures`), with `receives` built from their values as its first
    argument (None: it receives nothing)."""

    index: int
    signature: Signature
    after: tuple[int, ...]
    receives: Shape | None
    tolerate_failures: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """The steps in a stable order (parents before children), and the workflow's value."""

    steps: tuple[Step, ...]
    output: Shape


@dataclasses.dataclass(frozen=True, slots=True)
class _Incoming:
    """What the next part of a chain gets from the part before: the steps to wait for, and
    the value to pass (None at the start of a workflow)."""

    after: tuple[int, ...]
    value: Shape | None
    tolerate_failures: bool = False


def plan(node: Node) -> Plan:
    """Flatten `node` into steps; `ConfigurationError` or `InvalidArguments` if it is wrong
    (empty, too big, arguments that do not fit a task)."""
    steps: list[Step] = []
    output = _place(node, _Incoming((), None), steps)
    return Plan(tuple(steps), output)


def _place(node: Node, incoming: _Incoming, steps: list[Step]) -> Shape:
    """Add `node`'s steps after `incoming`; → the shape of its value."""
    if isinstance(node, Signature):
        return Value(_add_step(node, incoming, steps))
    if isinstance(node, Chain):
        for part in node.parts:
            value = _place(part, incoming, steps)
            incoming = _Incoming(_steps_of(value), value)
        return value
    if isinstance(node, Group):
        if len(incoming.after) > 1 and len(node.members) > 1:
            join = _add_step(_JOIN_SIGNATURE, incoming, steps)
            incoming = _Incoming((join,), Value(join))
        return ListOf(tuple(_place(member, incoming, steps) for member in node.members))
    header = _place(node.header, incoming, steps)
    after = _Incoming(_steps_of(header), header, tolerate_failures=node.tolerate_failures)
    return _place(node.body, after, steps)


def _add_step(signature: Signature, incoming: _Incoming, steps: list[Step]) -> int:
    index = len(steps)
    if index >= MAX_STEPS:
        raise ConfigurationError(f"a workflow may have at most {MAX_STEPS:,} steps")
    receives = None if signature.immutable else incoming.value
    args = signature.args if receives is None else (_PARENT_VALUE, *signature.args)
    where = f"workflow step {index} (task {signature.task.name!r})"
    signature.task.check_arguments(args, dict(signature.kwargs), where=where)
    steps.append(Step(index, signature, incoming.after, receives, incoming.tolerate_failures))
    return index


def _steps_of(shape: Shape) -> tuple[int, ...]:
    """The steps whose values make up `shape`, in order (a child waits for all of them)."""
    found: list[int] = []
    pending: list[Shape] = [shape]
    while pending:
        current = pending.pop()
        if isinstance(current, Value):
            found.append(current.step)
        else:
            pending.extend(reversed(current.items))
    return tuple(found)


class _Join:
    """The callee of join steps (see `JOIN`)."""

    name = JOIN
    default_options = TaskOptions()

    def check_arguments(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], *, where: str | None = None
    ) -> None:
        return None

    async def submit_workflow(self, node: Node) -> WorkflowHandle:
        raise ConfigurationError("a join step is not submitted on its own")


_JOIN_SIGNATURE = Signature(_Join())


def value_of(shape: Shape, values: Sequence[Any] | Mapping[int, Any]) -> Any:
    """The value `shape` stands for, given each step's value by index."""
    if isinstance(shape, Value):
        return values[shape.step]
    return [value_of(item, values) for item in shape.items]
