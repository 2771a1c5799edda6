"""taskq: asyncio-native distributed tasks on RabbitMQ and PostgreSQL."""

from __future__ import annotations

from taskq.app import App
from taskq.client.batch import Batch
from taskq.client.canvas import Chain, Chord, Group, Signature, chain, chord, group
from taskq.client.events import TaskEvent
from taskq.client.handle import TaskHandle
from taskq.client.limits import ConcurrencyLimit, Quota, RateLimit
from taskq.client.options import TaskOptions
from taskq.client.task import BoundTask, Task
from taskq.client.workflow_handle import WorkflowHandle
from taskq.context import TaskContext, WorkerState, context
from taskq.exceptions import (
    AppNotOpen,
    BrokerConnectionError,
    BrokerError,
    ConfigurationError,
    DuplicateTaskName,
    InvalidArguments,
    LockTimeout,
    PayloadTooLarge,
    ProtocolError,
    PublishError,
    PublishUnconfirmed,
    QuotaExceeded,
    SchemaOutOfDate,
    SerializationError,
    StoreConnectionError,
    StoreError,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
    TaskNotFound,
    TaskqError,
    TaskTimeout,
    TopologyConflict,
    UnknownTask,
)
from taskq.middleware import Middleware, Submission
from taskq.retry import Backoff, Retry
from taskq.serializer import Serializer
from taskq.status import TaskStatus
from taskq.store import TaskError, TaskRecord
from taskq.worker import WorkerOptions
from taskq.worker.hooks import WorkerStartError

__all__ = [
    "App",
    "AppNotOpen",
    "Backoff",
    "Batch",
    "BoundTask",
    "BrokerConnectionError",
    "BrokerError",
    "Chain",
    "Chord",
    "ConcurrencyLimit",
    "ConfigurationError",
    "DuplicateTaskName",
    "Group",
    "InvalidArguments",
    "LockTimeout",
    "Middleware",
    "PayloadTooLarge",
    "ProtocolError",
    "PublishError",
    "PublishUnconfirmed",
    "Quota",
    "QuotaExceeded",
    "RateLimit",
    "Retry",
    "SchemaOutOfDate",
    "SerializationError",
    "Serializer",
    "Signature",
    "StoreConnectionError",
    "StoreError",
    "Submission",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskError",
    "TaskEvent",
    "TaskExpired",
    "TaskFailed",
    "TaskHandle",
    "TaskNotFound",
    "TaskOptions",
    "TaskRecord",
    "TaskStatus",
    "TaskTimeout",
    "TaskqError",
    "TopologyConflict",
    "UnknownTask",
    "WorkerOptions",
    "WorkerStartError",
    "WorkerState",
    "WorkflowHandle",
    "chain",
    "chord",
    "context",
    "group",
]
