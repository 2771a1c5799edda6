"""App: configuration, the task registry, the connection lifecycle and client calls."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import (
    Callable,
    Coroutine,
    Mapping,
    Sequence,
)
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from taskq import broker as brokers
from taskq import protocol
from taskq.broker import topology
from taskq.config import Settings, redact_url
from taskq.exceptions import (
    AppNotOpen,
    ConfigurationError,
    DuplicateTaskName,
    PublishError,
    TaskNotFound,
)
from taskq.handle import TaskHandle
from taskq.store import NewTask, Store
from taskq.task import Task, TaskOptions
from taskq.waiter import Waiter

if TYPE_CHECKING:
    from taskq.worker import Worker

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger(__name__)


class App:
    """A taskq application: create one, register tasks on it, `async with app:` to use it.

    URLs left as None come from TASKQ_BROKER_URL / TASKQ_STORE_URL, then the embedded
    defaults (`memory://` and a SQLite file). Credentials never appear in its `repr`.
    """

    def __init__(
        self,
        broker_url: str | None = None,
        store_url: str | None = None,
        *,
        max_payload_bytes: int | None = None,
        max_priority: int | None = None,
        publish_timeout: float | None = None,
        flush_interval: float | None = None,
    ) -> None:
        self.settings = Settings.load(
            broker_url=broker_url,
            store_url=store_url,
            max_payload_bytes=max_payload_bytes,
            max_priority=max_priority,
            publish_timeout=publish_timeout,
            flush_interval=flush_interval,
        )
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._broker: brokers.Broker | None = None
        self._store: Store | None = None
        self._waiter: Waiter | None = None
        self._declared: set[str] = set()

    def __repr__(self) -> str:
        return (
            f"App(broker_url={redact_url(self.settings.broker_url)!r}, "
            f"store_url={redact_url(self.settings.store_url)!r})"
        )

    # -- registry -------------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> Task[P, R]: ...

    @overload
    def task(self, fn: Callable[P, R]) -> Task[P, R]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        timeout: float | None = None,
    ) -> _TaskDecorator: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        timeout: float | None = None,
    ) -> Any:
        """Register a function as a task (`async def`, or plain `def` run in a thread pool)."""
        options = TaskOptions(queue=queue, priority=priority, timeout=timeout)
        if fn is not None:
            return self._register(fn, name, options)
        return _TaskDecorator(self, name, options)

    def _register(
        self, fn: Callable[..., Any], name: str | None, options: TaskOptions
    ) -> Task[Any, Any]:
        task_name = name or f"{fn.__module__}.{fn.__qualname__}"
        if task_name in self._tasks:
            raise DuplicateTaskName(
                f"a task named {task_name!r} is already registered; "
                "pass name=... to tell them apart"
            )
        _check_options(options, self.settings.max_priority)
        task: Task[Any, Any] = Task(self, fn, name=task_name, options=options)
        self._tasks[task_name] = task
        return task

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]:
        """Registered tasks by name (read-only view)."""
        return self._tasks

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect to the store (checking its schema) and the broker."""
        if self._store is not None:
            return
        store = Store(self.settings.store_url)
        await store.open()
        broker = brokers.from_url(
            self.settings.broker_url,
            max_priority=self.settings.max_priority,
            publish_timeout=self.settings.publish_timeout,
        )
        try:
            await broker.connect()
        except BaseException:
            await store.close()
            raise
        self._store, self._broker = store, broker
        self._waiter = Waiter(broker)
        self._declared.clear()

    async def close(self) -> None:
        waiter, broker, store = self._waiter, self._broker, self._store
        self._waiter = self._broker = self._store = None
        if waiter is not None:
            await waiter.close()
        if broker is not None:
            await broker.close()
        if store is not None:
            await store.close()

    async def __aenter__(self) -> App:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def store(self) -> Store:
        if self._store is None:
            raise AppNotOpen()
        return self._store

    @property
    def broker(self) -> brokers.Broker:
        if self._broker is None:
            raise AppNotOpen()
        return self._broker

    @property
    def waiter(self) -> Waiter:
        if self._waiter is None:
            raise AppNotOpen()
        return self._waiter

    # -- client calls ---------------------------------------------------------------------

    async def get(self, task_id: str) -> TaskHandle[Any]:
        """A handle on an existing task; raises `TaskNotFound` if there is none."""
        try:
            uuid.UUID(task_id)
        except ValueError:
            raise TaskNotFound(f"{task_id!r} is not a task id (task ids are UUIDs)") from None
        if await self.store.get_task(task_id) is None:
            raise TaskNotFound(f"no task with id {task_id}")
        return TaskHandle(self, task_id)

    def worker(
        self, *, concurrency: int = 10, queues: Sequence[str] | None = None
    ) -> contextlib.AbstractAsyncContextManager[Worker]:
        """Run a worker inside this process for the duration of an `async with` block."""
        from taskq.worker import running_worker

        return running_worker(self, concurrency=concurrency, queues=queues)

    async def declare(self, queue: str) -> None:
        """Make sure `queue` (and its dead-letter queue) exists on the broker."""
        if queue not in self._declared:
            await self.broker.declare(queue)
            self._declared.add(queue)

    async def _submit(
        self,
        task: Task[Any, Any],
        options: TaskOptions,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> TaskHandle[Any]:
        store, broker = self.store, self.broker
        _check_options(options, self.settings.max_priority)
        task.check_arguments(args, kwargs)
        for index, value in enumerate(args):
            protocol.check_value(value, f"task {task.name!r}: argument {index}")
        for key, value in kwargs.items():
            protocol.check_value(value, f"task {task.name!r}: argument {key!r}")
        envelope = protocol.Envelope(
            id=str(uuid.uuid4()),
            task=task.name,
            queue=options.queue,
            args=list(args),
            kwargs=kwargs,
            priority=options.priority,
            timeout=options.timeout,
            created_at=time.time(),
        )
        body = protocol.encode(envelope, max_bytes=self.settings.max_payload_bytes)
        await self.declare(options.queue)
        # The row first, then the message: a worker never sees a task the store lacks.
        await store.insert_task(new_task_row(envelope))
        try:
            await broker.publish(
                options.queue, body, priority=options.priority, message_id=envelope.id
            )
        except PublishError as exc:
            await _record_unpublished(store, envelope.id, exc)
            raise
        return TaskHandle(self, envelope.id)


class _TaskDecorator:
    """What `@app.task(...)` with options returns."""

    def __init__(self, app: App, name: str | None, options: TaskOptions) -> None:
        self._app, self._name, self._options = app, name, options

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> Task[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Task[P, R]: ...

    def __call__(self, fn: Callable[..., Any]) -> Any:
        return self._app._register(fn, self._name, self._options)


def _check_options(options: TaskOptions, max_priority: int) -> None:
    topology.validate_queue_name(options.queue)
    if not 0 <= options.priority <= max_priority:
        raise ConfigurationError(
            f"priority {options.priority} is outside 0..{max_priority} (the app's max_priority)"
        )
    if options.timeout is not None and options.timeout <= 0:
        raise ConfigurationError(
            f"timeout must be a positive number of seconds, not {options.timeout}"
        )


def new_task_row(envelope: protocol.Envelope) -> NewTask:
    """The row a message stands for."""
    return NewTask(
        id=envelope.id,
        name=envelope.task,
        queue=envelope.queue,
        priority=envelope.priority,
        args=envelope.args,
        kwargs=envelope.kwargs,
        timeout=envelope.timeout,
        created_at=datetime.fromtimestamp(envelope.created_at or time.time(), UTC),
    )


async def _record_unpublished(store: Store, task_id: str, exc: PublishError) -> None:
    """A task whose message the broker never confirmed must not sit `queued` forever."""
    error = {"type": "PublishError", "message": str(exc), "traceback": ""}
    try:
        await store.fail_unclaimed(task_id, error, only_queued=True)
    except Exception:
        logger.exception("could not record unpublished task %s", task_id)
