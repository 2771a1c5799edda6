"""Every error taskq raises, in one tree.

    TaskqError
    ├── ConfigurationError        bad URL, bad TASKQ_* value
    ├── AppNotOpen                a call that needs `async with app:` first
    ├── DuplicateTaskName         two tasks registered under one name
    ├── UnknownTask               a name the app has no task for
    ├── InvalidArguments          submit() arguments that do not fit the signature (also TypeError)
    ├── SerializationError        a value msgpack cannot carry (also TypeError)
    ├── PayloadTooLarge           an encoded message over the size limit (also ValueError)
    ├── ProtocolError             bytes that are not a valid taskq message
    ├── QuotaExceeded             a submit past its task's quota of unfinished tasks
    ├── BrokerError
    │   ├── BrokerConnectionError cannot reach or log in to the broker
    │   ├── PublishError          the broker did not confirm a message
    │   │   └── PublishUnconfirmed    ... because it could not be reached in time
    │   └── TopologyConflict      an existing queue was declared with other arguments
    ├── StoreError
    │   ├── StoreConnectionError  cannot reach the database
    │   ├── SchemaOutOfDate       the database is behind on migrations
    │   └── TaskNotFound          no task with that id
    ├── LockTimeout               app.lock() could not get the lock in time (also TimeoutError)
    ├── TaskTimeout               a task ran past its timeout (recorded as its error type)
    ├── TaskFailed                the task raised; carries the remote type, message and traceback
    ├── TaskCancelled             the task was cancelled before it finished
    └── TaskExpired               the task expired before a worker started it

This module is a leaf: it imports nothing of taskq, so every layer may use it.
"""

from __future__ import annotations


class TaskqError(Exception):
    """Base class of every error taskq raises."""


class ConfigurationError(TaskqError):
    """A setting is missing or malformed; the message names it and a valid form."""


class AppNotOpen(TaskqError):
    """The app is not connected: use `async with app:` (or `await app.open()`) first."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class DuplicateTaskName(TaskqError):
    """Two tasks were registered under the same name."""


class UnknownTask(TaskqError):
    """No task is registered under this name."""


class InvalidArguments(TaskqError, TypeError):
    """submit() was called with arguments that do not match the task's signature."""


class QuotaExceeded(TaskqError):
    """A submit would take a task's unfinished count past its quota: nothing was stored."""

    def __init__(self, message: str, *, key: str, quota: int, unfinished: int) -> None:
        super().__init__(message)
        self.key, self.quota, self.unfinished = key, quota, unfinished


class SerializationError(TaskqError, TypeError):
    """A value cannot be carried by msgpack (taskq never falls back to pickle)."""


class PayloadTooLarge(TaskqError, ValueError):
    """An encoded message is over the configured size limit."""


class ProtocolError(TaskqError):
    """Bytes that are not a valid taskq message: corrupt, unknown version or oversize."""

    def __init__(self, message: str, *, task_id: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id  # where the malformed message still named its task


class BrokerError(TaskqError):
    """The message broker failed."""


class BrokerConnectionError(BrokerError):
    """The broker cannot be reached or refused the credentials."""


class PublishError(BrokerError):
    """The broker did not confirm a published message."""


class PublishUnconfirmed(PublishError):
    """The broker could not be reached, or did not answer, in time: the message may or may
    not have arrived (unlike a refusal, trying again later may work)."""


class TopologyConflict(BrokerError):
    """A queue exists with arguments other than the ones taskq declares."""


class StoreError(TaskqError):
    """The task store (database) failed."""


class StoreConnectionError(StoreError):
    """The database cannot be reached."""


class SchemaOutOfDate(StoreError):
    """The database schema is behind this version of taskq: run `taskq db upgrade`."""


class TaskNotFound(StoreError, LookupError):
    """No task with this id exists in the store."""


class LockTimeout(TaskqError, TimeoutError):
    """`app.lock()` could not acquire the lock within its timeout."""


class TaskTimeout(TaskqError, TimeoutError):
    """A task ran longer than its timeout; its error type reads `TaskTimeout`.

    Listed in `retry_for` (it is, under the default `(Exception,)`), a timeout is retried.
    """


class TaskFailed(TaskqError):
    """The task raised an exception in the worker.

    `error_type`, `error_message` and `traceback` describe the remote exception;
    the original object never crosses the wire.
    """

    def __init__(self, task_id: str, error_type: str, error_message: str, traceback: str) -> None:
        super().__init__(f"task {task_id} failed: {error_type}: {error_message}")
        self.task_id = task_id
        self.error_type = error_type
        self.error_message = error_message
        self.traceback = traceback


class TaskCancelled(TaskqError):
    """The task was cancelled before it finished."""


class TaskExpired(TaskqError):
    """The task expired before a worker started it."""
