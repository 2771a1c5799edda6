"""Wire names and queue arguments: the pure half of the broker."""

from __future__ import annotations

import pytest

import taskq
from taskq.broker import topology


def test_queue_arguments_set_priority_and_dead_letters() -> None:
    assert topology.queue_arguments("emails", 5) == {
        "x-max-priority": 5,
        "x-dead-letter-exchange": "taskq.dlx",
        "x-dead-letter-routing-key": "emails.dlq",
    }


def test_queue_arguments_default_to_ten_priorities() -> None:
    assert topology.queue_arguments("q")["x-max-priority"] == topology.DEFAULT_MAX_PRIORITY == 10


def test_dead_letters_route_to_the_queues_own_dlq() -> None:
    # The routing key RabbitMQ uses when it dead-letters is the DLQ's name, which is
    # also the key that DLQ is bound with on the dead-letter exchange.
    for queue in ("a", "emails.high", "x-y_z"):
        arguments = topology.queue_arguments(queue)
        assert arguments["x-dead-letter-routing-key"] == topology.dlq_name(queue)
        assert arguments["x-dead-letter-exchange"] == topology.DEAD_LETTER_EXCHANGE


def test_dlq_name() -> None:
    assert topology.dlq_name("emails") == "emails.dlq"
    assert topology.dlq_name("a.b") == "a.b.dlq"


def test_dlq_has_no_priorities_and_no_dead_letters_of_its_own() -> None:
    assert topology.dlq_arguments() == {}


def test_exchange_names_are_distinct_and_namespaced() -> None:
    names = {topology.TASK_EXCHANGE, topology.DEAD_LETTER_EXCHANGE, topology.EVENTS_EXCHANGE}
    assert len(names) == 3
    assert all(name.startswith("taskq.") for name in names)


def test_topic_matching_follows_amqp() -> None:
    # The memory broker routes events as RabbitMQ's topic exchange does
    assert topology.topic_matches(topology.EVENTS_KEY, topology.EVENTS_KEY)
    assert topology.topic_matches("task.*", "task.0b4e2a7c")
    assert not topology.topic_matches("task.*", "task.a.b")
    assert topology.topic_matches("task.#", "task.a.b")
    assert topology.topic_matches("#", "anything.at.all")
    assert not topology.topic_matches("task.a", "task.b")


@pytest.mark.parametrize(
    "queue", ["default", "a", "emails-high", "emails_low", "v2.reports", "Q1", "x" * 251]
)
def test_valid_queue_names(queue: str) -> None:
    topology.validate_queue_name(queue)


@pytest.mark.parametrize(
    "queue",
    ["", "x" * 252, "has space", "a/b", "a:b", "a*", "tab\t", "new\nline", "#", "a.b#"],
    ids=["empty", "252 chars", "space", "slash", "colon", "star", "tab", "newline", "hash", "mix"],
)
def test_invalid_queue_names_are_configuration_errors(queue: str) -> None:
    with pytest.raises(taskq.ConfigurationError) as caught:
        topology.validate_queue_name(queue)
    # 251 = AMQP's 255-byte limit minus the ".dlq" of the dead-letter sibling
    assert "1-251 ASCII letters" in str(caught.value)


@pytest.mark.parametrize("queue", ["emails.dlq", "x.dlq"])
def test_names_ending_in_dlq_are_reserved(queue: str) -> None:
    with pytest.raises(taskq.ConfigurationError) as caught:
        topology.validate_queue_name(queue)
    assert "'.dlq'" in str(caught.value)


@pytest.mark.parametrize(
    "queue",
    [
        "amq.tasks",  # RabbitMQ refuses to declare amq.* queues (ACCESS_REFUSED)
        "é" * 200,  # 400 bytes: over AMQP's 255-byte limit on names
    ],
    ids=["amq prefix", "over 255 bytes"],
)
def test_names_rabbitmq_refuses_are_refused_here(queue: str) -> None:
    # Validation runs at task registration: a name the broker will refuse must fail there,
    # not later as a BrokerError on the first submit.
    with pytest.raises(taskq.ConfigurationError):
        topology.validate_queue_name(queue)


def test_quorum_queues_replicate_and_dead_letter_at_least_once_without_priorities() -> None:
    names = topology.Names("billing", "quorum")
    arguments = names.arguments("emails", 10)
    assert arguments == {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "billing:taskq.dlx",
        "x-dead-letter-routing-key": "emails.dlq",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    # (RabbitMQ 3.10's quorum queues refuse x-max-priority; redeliveries are counted in the
    # store, so there is no broker-side x-delivery-limit either)
    assert "x-max-priority" not in arguments and "x-delivery-limit" not in arguments
    assert names.arguments("emails.dlq", 10) == {"x-queue-type": "quorum"}


def test_classic_is_the_default_queue_type() -> None:
    assert topology.Names().arguments("q", 10) == topology.queue_arguments("q", 10)


def test_quorum_priority_lanes_are_queues_of_their_own_named_by_their_lowest_priority() -> None:
    names = topology.Names("", "quorum", (0, 1, 5))
    # Each priority goes to the lane of its band: 0 | 1-4 | 5 and up
    assert [names.lane_of(p) for p in (0, 1, 4, 5, 9, 10)] == [0, 1, 1, 2, 2, 2]
    # Lane 0 is the queue itself (tasks without a priority keep their queue's name)
    assert [names.lane("emails", lane) for lane in range(3)] == [
        "emails", "emails#p1", "emails#p5"
    ]  # fmt: skip
    # A lane's name can meet no queue a user names ('#' is in none)
    with pytest.raises(taskq.ConfigurationError):
        topology.validate_queue_name("emails#p5")
    # Every lane dead-letters to the queue's one dead-letter queue
    assert names.arguments("emails", 10)["x-dead-letter-routing-key"] == "emails.dlq"


def test_classic_queues_have_one_lane_whatever_the_bands() -> None:
    names = topology.Names("", "classic", (0, 1, 5))
    assert names.lanes == (0,)
    assert {names.lane_of(p) for p in range(11)} == {0}
