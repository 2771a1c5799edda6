"""Wire names and queue arguments, in one pure module (no I/O)."""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Iterable

from taskq.exceptions import ConfigurationError

TASK_EXCHANGE = "taskq.tasks"
DEAD_LETTER_EXCHANGE = "taskq.dlx"
EVENTS_EXCHANGE = "taskq.events"
CONTROL_EXCHANGE = "taskq.control"
DEFAULT_MAX_PRIORITY = 10
# Lane n > 0 of queue "default" is the queue "default#p<its lowest priority>": "#" is in no
# queue or tag name, so no name a user gives can meet a lane's.
LANE_MARK = "#p"


class Names:
    """The AMQP names of one namespace: "" keeps the names above; another namespace puts
    "<namespace>:" before every exchange and queue name (":" is in no queue name, so no
    namespace's names can meet another's). Routing keys stay the plain queue names."""

    def __init__(
        self, namespace: str = "", queue_type: str = "classic", lanes: tuple[int, ...] = (0,)
    ) -> None:
        self._prefix = f"{namespace}:" if namespace else ""
        self.queue_type = queue_type
        # Quorum queues have no priorities: a queue per band of them (its lowest, 0 first).
        self.lanes = lanes if queue_type == "quorum" else (0,)
        self.tasks = self._prefix + TASK_EXCHANGE
        self.dead_letters = self._prefix + DEAD_LETTER_EXCHANGE
        self.events = self._prefix + EVENTS_EXCHANGE
        self.control = self._prefix + CONTROL_EXCHANGE

    def queue(self, name: str) -> str:
        """The broker's name of taskq queue `name` (or of its `.dlq`)."""
        physical = self._prefix + name
        if len(physical.encode()) > 255:
            raise ConfigurationError(
                f"queue {name[:64]!r} with the namespace prefix {self._prefix!r} is longer "
                "than RabbitMQ's 255 bytes: use a shorter queue name or namespace"
            )
        return physical

    def lane_of(self, priority: int) -> int:
        """The lane a task of `priority` goes to (0: the queue itself)."""
        return bisect.bisect_right(self.lanes, priority) - 1 if len(self.lanes) > 1 else 0

    def lane(self, queue: str, lane: int) -> str:
        """The name (and routing key) of lane `lane` of taskq queue `queue`."""
        return f"{queue}{LANE_MARK}{self.lanes[lane]}" if lane else queue

    def lanes_of(self, queue: str) -> list[str]:
        """The names of every lane of `queue`, lane 0 first (a dead-letter queue: itself)."""
        if queue.endswith(".dlq"):
            return [queue]
        return [self.lane(queue, lane) for lane in range(len(self.lanes))]

    def arguments(self, queue: str, max_priority: int) -> dict[str, object]:
        """The arguments `queue` (and each of its lanes) is declared with, dead letters
        routed to its `.dlq` in this namespace."""
        if queue.endswith(".dlq"):
            return dlq_arguments(self.queue_type)
        if self.queue_type == "quorum":
            return quorum_arguments(queue, dead_letters=self.dead_letters)
        return queue_arguments(queue, max_priority, dead_letters=self.dead_letters)


def dlq_name(queue: str) -> str:
    return f"{queue}.dlq"


def queue_arguments(
    queue: str,
    max_priority: int = DEFAULT_MAX_PRIORITY,
    *,
    dead_letters: str = DEAD_LETTER_EXCHANGE,
) -> dict[str, object]:
    """Arguments of a task queue: priorities, and dead letters routed to `<queue>.dlq`."""
    return {
        "x-max-priority": max_priority,
        "x-dead-letter-exchange": dead_letters,
        "x-dead-letter-routing-key": dlq_name(queue),
    }


def quorum_arguments(queue: str, *, dead_letters: str) -> dict[str, object]:
    """A task queue replicated over the cluster. RabbitMQ 3.10's quorum queues have no
    priorities. Dead letters are moved at least once (the source keeps a message until its
    dead-letter queue confirms it; that needs `reject-publish` when full). No
    `x-delivery-limit`: redeliveries are counted in the store (`max_deliveries`), and a
    broker limit would also count the hand-backs of an outage and dead-letter a task the
    store still holds queued."""
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": dead_letters,
        "x-dead-letter-routing-key": dlq_name(queue),
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def dlq_arguments(queue_type: str = "classic") -> dict[str, object]:
    return {"x-queue-type": "quorum"} if queue_type == "quorum" else {}


# Every task event is published with this routing key, in batches: a worker sends the
# events of one moment in one message, and watchers filter by task id.
EVENTS_KEY = "tasks"


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: `*` is one dot-separated word, `#` zero or more."""

    def match(words: list[str], parts: list[str]) -> bool:
        if not words:
            return not parts
        head, rest = words[0], words[1:]
        if head == "#":
            return any(match(rest, parts[i:]) for i in range(len(parts) + 1))
        return bool(parts) and head in ("*", parts[0]) and match(rest, parts[1:])

    return match(pattern.split("."), key.split("."))


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
# AMQP names are at most 255 bytes, and every queue has a "<name>.dlq" sibling.
MAX_QUEUE_NAME = 255 - len(".dlq")


def validate_queue_name(queue: str) -> None:
    """Queue names become AMQP names and routing keys: short, plain ASCII, not reserved."""
    if not queue or len(queue) > MAX_QUEUE_NAME or not set(queue) <= _NAME_CHARS:
        raise ConfigurationError(
            f"queue name {queue!r} must be 1-{MAX_QUEUE_NAME} ASCII letters, digits, "
            "'-', '_' or '.'"
        )
    if queue.startswith("amq."):
        raise ConfigurationError(f"queue name {queue!r} must not start with 'amq.' (reserved)")
    if queue.endswith(".dlq"):
        raise ConfigurationError(
            f"queue name {queue!r} must not end in '.dlq' (reserved for dead letters)"
        )


# Routing by worker tags: a task with tags goes to "<queue>@<tag>+<tag>" (tags sorted), and a
# worker consumes each of its queues with every subset of its tags, so it gets exactly the
# tasks whose tags it has all of. '@' and '+' are in no queue or tag name: a name splits back.
TAG_MARK, TAG_JOIN = "@", "+"
MAX_WORKER_TAGS = 6  # 2**6 - 1 = 63 tagged queues per queue a worker consumes
_TAG = re.compile(r"[a-z0-9_-]{1,32}")


def checked_tags(value: Iterable[str] | None) -> frozenset[str]:
    """Tags as given (`tags=` of a task or a worker: any iterable of names, or None), as a
    frozenset; a `ConfigurationError` for a string or a name outside `[a-z0-9_-]{1,32}`."""
    if value is None:
        return frozenset()
    if isinstance(value, str):
        raise ConfigurationError(f"tags must be a set of names, not the string {value!r}")
    found = frozenset(value)
    for tag in found:
        if not isinstance(tag, str) or not _TAG.fullmatch(tag):
            raise ConfigurationError(
                f"tag {tag!r} must be 1 to 32 characters of a-z, 0-9, '_' and '-'"
            )
    return found


def tagged_queue(queue: str, tags: Iterable[str]) -> str:
    """The queue a task of `queue` with `tags` is published to: `queue` itself without
    tags, else `queue@eu+gpu` (tags sorted); a `ConfigurationError` past the name limit."""
    if not tags:
        return queue
    ordered = sorted(checked_tags(tags))
    name = f"{queue}{TAG_MARK}{TAG_JOIN.join(ordered)}"
    if len(name) > MAX_QUEUE_NAME:
        raise ConfigurationError(
            f"queue {queue[:64]!r} with tags {','.join(ordered)} makes a queue name of "
            f"{len(name)} characters, over {MAX_QUEUE_NAME} (the limit on queue names): "
            "use a shorter queue name or shorter tags"
        )
    return name


def queues_for(queues: Iterable[str], tags: Iterable[str]) -> list[str]:
    """What a worker with `tags` consumes: each of `queues`, and each with every non-empty
    subset of the tags (at most MAX_WORKER_TAGS, so at most 63 tagged queues per queue)."""
    ordered = sorted(set(tags))
    if len(ordered) > MAX_WORKER_TAGS:
        raise ConfigurationError(
            f"a worker takes at most {MAX_WORKER_TAGS} tags (it consumes a queue per subset "
            f"of them: {2**MAX_WORKER_TAGS - 1} per queue), not {len(ordered)}"
        )
    subsets = [
        subset for size in range(1, len(ordered) + 1)
        for subset in itertools.combinations(ordered, size)
    ]  # fmt: skip
    return [
        name
        for queue in queues
        for name in (queue, *(tagged_queue(queue, subset) for subset in subsets))
    ]


def split_tagged(name: str) -> tuple[str, list[str]]:
    """(queue, tags) of a name `tagged_queue` made; ("default", []) for a plain one."""
    queue, mark, joined = name.partition(TAG_MARK)
    return queue, joined.split(TAG_JOIN) if mark else []


def validate_routed_queue(name: str) -> None:
    """A name tasks are published to: a valid queue name, or one that `tagged_queue` makes
    of one (its tags valid, sorted, each once)."""
    queue, tags = split_tagged(name)
    validate_queue_name(queue)
    if tags and tagged_queue(queue, tags) != name:
        raise ConfigurationError(
            f"queue {name[:64]!r}: tags after '@' must be distinct and sorted, joined by '+'"
        )
