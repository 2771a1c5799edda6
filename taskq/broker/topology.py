"""Wire names and queue arguments, in one pure module (no I/O)."""

from __future__ import annotations

from taskq.exceptions import ConfigurationError

TASK_EXCHANGE = "taskq.tasks"
DEAD_LETTER_EXCHANGE = "taskq.dlx"
EVENTS_EXCHANGE = "taskq.events"
CONTROL_EXCHANGE = "taskq.control"
DEFAULT_MAX_PRIORITY = 10


class Names:
    """The AMQP names of one namespace: "" keeps the names above; another namespace puts
    "<namespace>:" before every exchange and queue name (":" is in no queue name, so no
    namespace's names can meet another's). Routing keys stay the plain queue names."""

    def __init__(self, namespace: str = "") -> None:
        self._prefix = f"{namespace}:" if namespace else ""
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

    def arguments(self, queue: str, max_priority: int) -> dict[str, object]:
        """The arguments `queue` is declared with, dead letters routed in this namespace."""
        if queue.endswith(".dlq"):
            return dlq_arguments()
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


def dlq_arguments() -> dict[str, object]:
    return {}


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
