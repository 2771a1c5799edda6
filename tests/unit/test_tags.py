"""Routing by worker tags, the names: a task with tags goes to `queue@a+b`, and a worker
consumes each queue with every subset of its tags (`taskq.broker.topology`)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

import taskq
from taskq.broker import topology
from taskq.client.options import TaskOptions
from taskq.client.submit import check_options
from taskq.worker_entry import Command


def test_a_task_without_tags_keeps_its_queue() -> None:
    assert topology.tagged_queue("default", ()) == "default"
    assert topology.tagged_queue("default", frozenset()) == "default"


def test_a_tagged_queue_names_its_tags_sorted_once() -> None:
    assert topology.tagged_queue("default", {"gpu", "eu"}) == "default@eu+gpu"
    assert topology.tagged_queue("default", ["gpu", "eu", "gpu"]) == "default@eu+gpu"
    assert topology.tagged_queue("v2.reports", {"gpu"}) == "v2.reports@gpu"


def test_a_name_splits_back_into_queue_and_tags() -> None:
    assert topology.split_tagged("default@eu+gpu") == ("default", ["eu", "gpu"])
    assert topology.split_tagged("default") == ("default", [])


def test_a_worker_consumes_every_subset_of_its_tags() -> None:
    # Given a worker with tags eu and gpu on queues default and mail
    consumed = topology.queues_for(["default", "mail"], {"gpu", "eu"})
    # Then it consumes each queue, plain and with each non-empty subset of its tags
    assert consumed == [
        "default", "default@eu", "default@gpu", "default@eu+gpu",
        "mail", "mail@eu", "mail@gpu", "mail@eu+gpu",
    ]  # fmt: skip
    assert topology.queues_for(["default"], ()) == ["default"]


def test_a_task_lands_on_a_queue_of_every_worker_with_all_its_tags() -> None:
    worker_tags = ["a", "b", "c", "d"]
    consumed = set(topology.queues_for(["q"], worker_tags))
    for size in range(len(worker_tags) + 1):
        for task_tags in itertools.combinations(worker_tags, size):
            assert topology.tagged_queue("q", task_tags) in consumed
    # ... and on none of a worker that lacks one of them
    assert topology.tagged_queue("q", {"a", "e"}) not in consumed


def test_six_tags_make_63_tagged_queues_and_seven_are_refused() -> None:
    assert len(topology.queues_for(["q"], "abcdef")) == 64
    with pytest.raises(taskq.ConfigurationError, match="at most 6 tags"):
        topology.queues_for(["q"], "abcdefg")


@pytest.mark.parametrize("tag", ["", "GPU", "has space", "a.b", "a@b", "a+b", "x" * 33, 1])
def test_bad_tags_are_configuration_errors(tag: Any) -> None:
    with pytest.raises(taskq.ConfigurationError, match="must be 1 to 32 characters"):
        topology.tagged_queue("default", [tag])


def test_a_tagged_name_over_the_queue_limit_is_refused() -> None:
    # Given a queue name of 240 characters, the longest a queue name may be being 251
    queue = "q" * 240
    assert topology.tagged_queue(queue, {"x" * 10}) == f"{queue}@{'x' * 10}"  # 251: fits
    with pytest.raises(taskq.ConfigurationError, match="over 251"):
        topology.tagged_queue(queue, {"x" * 11})


@pytest.mark.parametrize("name", ["default@gpu", "default@eu+gpu", "a.b-c_d@x_1+y-2"])
def test_tagged_names_are_valid_routed_queues(name: str) -> None:
    topology.validate_routed_queue(name)


@pytest.mark.parametrize(
    "name", ["default@", "default@gpu+eu", "default@gpu+gpu", "@gpu", "default@GPU", "a@b@c"]
)
def test_other_names_with_tags_are_refused(name: str) -> None:
    with pytest.raises(taskq.ConfigurationError):
        topology.validate_routed_queue(name)


def test_queue_names_of_tasks_still_exclude_the_tag_marks() -> None:
    # (A task names its base queue; only taskq puts '@' and '+' in a name.)
    for name in ("default@gpu", "a+b"):
        with pytest.raises(taskq.ConfigurationError):
            topology.validate_queue_name(name)


def test_a_task_with_more_tags_than_a_worker_may_have_is_refused() -> None:
    with pytest.raises(taskq.ConfigurationError, match="at most 6 tags"):
        check_options(TaskOptions(tags=frozenset("abcdefg")), 10)
    with pytest.raises(taskq.ConfigurationError, match="over 251"):
        check_options(TaskOptions(queue="q" * 240, tags=frozenset({"x" * 20})), 10)
    check_options(TaskOptions(tags=frozenset("abcdef")), 10)


def test_worker_options_take_tags() -> None:
    options = taskq.WorkerOptions(tags=frozenset({"gpu", "eu"}), queues=("default",))
    assert options.tags == frozenset({"eu", "gpu"})
    assert taskq.WorkerOptions().tags == frozenset()


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ("gpu", "not the string"),
        (set("abcdefg"), "at most 6 tags"),
        ({"GPU"}, "must be 1 to 32 characters"),
    ],
)
def test_worker_options_refuse_bad_tags(tags: Any, message: str) -> None:
    with pytest.raises(taskq.ConfigurationError, match=message):
        taskq.WorkerOptions(tags=tags)


def test_tags_travel_to_the_worker_process() -> None:
    command = Command(app="proj:app", tags=("eu", "gpu"))
    assert command.argv() == ["proj:app", '--tags=["eu","gpu"]']
    assert Command.from_argv(command.argv()) == command
