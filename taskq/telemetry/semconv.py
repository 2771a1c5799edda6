"""The names taskq puts on spans and metrics, pinned in one place.

OpenTelemetry's messaging conventions are still marked "development" (these follow
semantic conventions v1.37): when they change, this module is the one place to follow.
Arguments, results and credentials never become attributes.
"""

from __future__ import annotations

from typing import Any

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"

# Messaging (RabbitMQ)
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_SYSTEM_RABBITMQ = "rabbitmq"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_DESTINATION_NAME = "messaging.destination.name"
MESSAGING_RABBITMQ_ROUTING_KEY = "messaging.rabbitmq.destination.routing_key"
MESSAGING_MESSAGE_ID = "messaging.message.id"
MESSAGING_BATCH_MESSAGE_COUNT = "messaging.batch.message_count"

SEND = "send"  # operation name and type of a producer span
PROCESS = "process"  # operation name and type of a consumer span

# General
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"

# taskq's own
TASK_NAME = "taskq.task.name"
TASK_ID = "taskq.task.id"
TASK_ATTEMPT = "taskq.task.attempt"
TASK_PRIORITY = "taskq.task.priority"
TASK_STATE = "taskq.task.state"
TASK_OUTCOME = "taskq.task.outcome"  # a metric attribute: succeeded, failed, retried, ...
DEAD_LETTER_REASON = "taskq.dead_letter.reason"

# Span events
PROGRESS_EVENT = "taskq.progress"
PROGRESS_FRACTION = "taskq.progress.fraction"
PROGRESS_MESSAGE = "taskq.progress.message"

# Metric instruments: (name, unit, description)
TASKS_SUBMITTED = ("taskq.tasks.submitted", "{task}", "Tasks submitted (stored and sent).")
TASK_DURATION = ("taskq.task.duration", "s", "How long each attempt ran, by outcome.")
TASK_QUEUE_TIME = ("taskq.task.queue_time", "s", "From submit (or due time) to start.")
TASKS_RETRIED = ("taskq.tasks.retried", "{task}", "Failed attempts that will be retried.")
TASKS_DEAD_LETTERED = ("taskq.tasks.dead_lettered", "{task}", "Tasks sent to a dead-letter queue.")
TASKS_ACTIVE = ("taskq.tasks.active", "{task}", "Tasks running now.")
RATE_LIMITED = ("taskq.rate_limited", "{task}", "Starts a rate limit put off to a later time.")
SLOTS_IN_USE = (
    "taskq.concurrency.slots_in_use",
    "{slot}",
    "Concurrency-limit slots held by tasks running now.",
)
QUEUE_DEPTH = ("taskq.queue.depth", "{message}", "Messages ready in a queue.")
DLQ_DEPTH = ("taskq.queue.dlq_depth", "{message}", "Messages in a queue's dead-letter queue.")
LOOP_LAG = ("taskq.event_loop.lag", "s", "How late the worker's event loop runs a timer.")

# Histogram buckets (seconds), up to an hour: tasks are often long.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip


# What an attempt's `process` span attributes are made of: queue, task id, task name,
# priority, attempt. A lean span keeps these rather than the attributes.
Message = tuple[str, str, str, int, int]


def process_attributes(message: Message) -> dict[str, Any]:
    """The standard attributes of an attempt's `process` span."""
    queue, task_id, task_name, priority, attempt = message
    attributes = message_attributes(PROCESS, queue, task_id, task_name, priority)
    attributes[TASK_ATTEMPT] = attempt
    return attributes


def message_attributes(
    operation: str, queue: str, task_id: str, task_name: str, priority: int
) -> dict[str, Any]:
    return {
        MESSAGING_SYSTEM: MESSAGING_SYSTEM_RABBITMQ,
        MESSAGING_OPERATION_NAME: operation,
        MESSAGING_OPERATION_TYPE: operation,
        MESSAGING_DESTINATION_NAME: queue,
        MESSAGING_RABBITMQ_ROUTING_KEY: queue,
        MESSAGING_MESSAGE_ID: task_id,
        TASK_NAME: task_name,
        TASK_ID: task_id,
        TASK_PRIORITY: priority,
    }
