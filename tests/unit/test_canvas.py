"""Workflows planned into steps (taskq.client.canvas): who waits for whom, and what each step
receives, for every shape of issue 18; wrong workflows refused before anything is stored."""

from __future__ import annotations

from typing import Any

import pytest

import taskq
from taskq.client.canvas import ListOf, Value, chain, chord, group, plan, value_of
from taskq.exceptions import ConfigurationError, InvalidArguments

app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:")


@app.task(name="add")
async def add(a: int, b: int = 0) -> int:
    return a + b


@app.task(name="merge")
async def merge(values: list[Any]) -> list[Any]:
    return values


@app.task(name="tick")
async def tick() -> None:
    pass


def shape(steps: Any) -> list[tuple[str, tuple[int, ...], Any]]:
    return [(step.signature.task.name, step.after, step.receives) for step in steps]


def test_a_chain_passes_each_value_to_the_next_step_but_not_to_an_immutable_one() -> None:
    planned = plan(chain(add.s(1, 2), add.s(10), tick.si(), add.s(3)))
    assert shape(planned.steps) == [
        ("add", (), None),
        ("add", (0,), Value(0)),
        ("tick", (1,), None),  # waits for step 1, receives nothing
        ("add", (2,), Value(2)),
    ]
    assert planned.output == Value(3)


def test_a_group_is_the_list_of_its_members_and_a_chord_body_receives_it() -> None:
    planned = plan(chord(group(add.s(i) for i in range(3)), merge.s()))
    assert shape(planned.steps) == [
        ("add", (), None),
        ("add", (), None),
        ("add", (), None),
        ("merge", (0, 1, 2), ListOf((Value(0), Value(1), Value(2)))),
    ]
    assert not planned.steps[3].tolerate_failures
    assert plan(chord([add.s(1)], merge.s(), tolerate_failures=True)).steps[1].tolerate_failures


def test_a_group_after_a_step_gives_every_member_that_value() -> None:
    planned = plan(chain(add.s(1), group(add.s(2), add.s(3)), merge.s(), add.si(0)))
    assert shape(planned.steps) == [
        ("add", (), None),
        ("add", (0,), Value(0)),
        ("add", (0,), Value(0)),
        ("merge", (1, 2), ListOf((Value(1), Value(2)))),
        ("add", (3,), None),
    ]


def test_nesting_three_levels_keeps_the_values_shape() -> None:
    inner = group(chain(add.s(1), add.s(2)), group(add.s(3), add.s(4)))
    planned = plan(chain(add.s(0), group(inner, add.s(5)), merge.s()))
    last = planned.steps[-1]
    # [[chain's last, [3, 4]], 5]
    assert last.receives == ListOf((ListOf((Value(2), ListOf((Value(3), Value(4))))), Value(5)))
    assert last.after == (2, 3, 4, 5)
    values = {0: 0, 1: 1, 2: 3, 3: 3, 4: 4, 5: 5}
    assert value_of(last.receives, values) == [[3, [3, 4]], 5]
    # Parents come before their children: steps can be written in this order.
    assert all(parent < step.index for step in planned.steps for parent in step.after)


def test_options_carry_over_into_the_signature() -> None:
    signature = add.options(queue="q", priority=3).s(1)
    assert signature.options is not None
    assert (signature.options.queue, signature.options.priority) == ("q", 3)
    assert add.s(1).options == add.default_options


def test_wrong_arguments_are_refused_counting_the_parents_value() -> None:
    with pytest.raises(InvalidArguments, match="workflow step 1 \\(task 'add'\\)"):
        plan(chain(add.s(1), add.s(2, 3)))  # add(parent, 2, 3): one too many
    with pytest.raises(InvalidArguments, match="workflow step 0"):
        plan(chain(tick.s(1)))
    with pytest.raises(InvalidArguments):
        plan(chain(add.s(1), tick.s()))  # tick takes no parent value: it needs .si()
    assert plan(chain(add.s(1), tick.si())).steps[1].receives is None


def test_empty_and_malformed_workflows_are_clear_errors() -> None:
    with pytest.raises(ConfigurationError, match="group\\(\\) of no tasks"):
        group([])
    with pytest.raises(ConfigurationError, match="at least one step"):
        chain()
    with pytest.raises(ConfigurationError, match="not a signature"):
        chain(add.s(1), add)  # type: ignore[arg-type]


def test_a_chord_of_100_000_members_plans_and_bigger_is_refused() -> None:
    planned = plan(chord(group(add.s(i) for i in range(99_999)), merge.s()))
    assert len(planned.steps) == 100_000
    assert len(planned.steps[-1].after) == 99_999
    with pytest.raises(ConfigurationError, match="at most 100,000 steps"):
        plan(chord(group(add.s(i) for i in range(100_000)), merge.s()))


def test_a_group_after_several_steps_waits_for_one_join_not_for_each_of_them() -> None:
    # Given a group of 3 after a group of 2 (3 x 2 edges without a join)
    planned = plan(chain(group(add.s(1), add.s(2)), group(merge.s(), merge.s(), tick.si())))
    # Then a join step waits for both and receives their list; each member waits for it
    assert shape(planned.steps) == [
        ("add", (), None),
        ("add", (), None),
        ("taskq.join", (0, 1), ListOf((Value(0), Value(1)))),
        ("merge", (2,), Value(2)),
        ("merge", (2,), Value(2)),
        ("tick", (2,), None),
    ]
    # And a chord whose body is a group tolerates failures at the join
    tolerant = plan(
        chord(group(add.s(1), add.s(2)), group(merge.s(), merge.s()), tolerate_failures=True)
    )
    assert [step.tolerate_failures for step in tolerant.steps] == [False, False, True, False, False]
    # And one member after several steps needs no join
    assert [
        s.signature.task.name for s in plan(chain(group(add.s(1), add.s(2)), merge.s())).steps
    ] == ["add", "add", "merge"]
