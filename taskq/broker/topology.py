"""Wire names and queue arguments, in one pure module (no I/O)."""

from __future__ import annotations

from taskq.exceptions import ConfigurationError

TASK_EXCHANGE = "taskq.tasks"
DEAD_LETTER_EXCHANGE = "taskq.dlx"
EVENTS_EXCHANGE = "taskq.events"
DEFAULT_MAX_PRIORITY = 10


def dlq_name(queue: str) -> str:
    return f"{queue}.dlq"


def queue_arguments(queue: str, max_priority: int = DEFAULT_MAX_PRIORITY) -> dict[str, object]:
    """Arguments of a task queue: priorities, and dead letters routed to `<queue>.dlq`."""
    return {
        "x-max-priority": max_priority,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": dlq_name(queue),
    }


def dlq_arguments() -> dict[str, object]:
    return {}


def event_key(task_id: str) -> str:
    return f"task.{task_id}"


def validate_queue_name(queue: str) -> None:
    """Queue names become AMQP names and routing keys: keep them short and plain."""
    if not queue or len(queue) > 200 or not all(c.isalnum() or c in "-_." for c in queue):
        raise ConfigurationError(
            f"queue name {queue!r} must be 1-200 characters of letters, digits, '-', '_' or '.'"
        )
    if queue.endswith(".dlq"):
        raise ConfigurationError(
            f"queue name {queue!r} must not end in '.dlq' (reserved for dead letters)"
        )
