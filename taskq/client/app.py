"""App: configuration, the task registry, the connection lifecycle and client calls."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import (
    AsyncIterator,
    Iterable,
    Sequence,
)
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from taskq import broker as brokers
from taskq import middleware as middlewares
from taskq.client import batch as batches
from taskq.client import cancel
from taskq.client import submit as submission
from taskq.client.dlq import DeadLetters
from taskq.client.events import EventBatcher, TaskEvent, tail_events
from taskq.client.handle import TaskHandle
from taskq.client.registry import Registry
from taskq.client.runtime import Runtime
from taskq.client.sync import SyncBridge
from taskq.client.waiter import Waiter
from taskq.client.workflow_handle import WorkflowHandle
from taskq.config import Settings, redact_url
from taskq.exceptions import (
    ConfigurationError,
    TaskNotFound,
)
from taskq.middleware import Middleware
from taskq.status import TaskStatus
from taskq.store import Store, TaskRecord

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger(__name__)


class App(Registry):
    """A taskq application: create one, register tasks on it, `async with app:` to use it.

    URLs left as None come from TASKQ_BROKER_URL / TASKQ_STORE_URL, then the embedded
    defaults (`memory://` and a SQLite file). Credentials never appear in its `repr`.
    """

    def __init__(
        self,
        broker_url: str | Sequence[str] | None = None,
        store_url: str | None = None,
        *,
        max_payload_bytes: int | None = None,
        max_priority: int | None = None,
        publish_timeout: float | None = None,
        flush_interval: float | None = None,
        lease_after: float | None = None,
        lease_duration: float | None = None,
        signing_key: str | None = None,
        retention: str | None = None,
        namespace: str | None = None,
        queue_type: str | None = None,
        priority_lanes: Iterable[int] | str | None = None,
        middleware: Iterable[Middleware] = (),
    ) -> None:
        if broker_url is not None and not isinstance(broker_url, str):
            from taskq.broker.nodes import joined  # (aio-pika, only for a list of nodes)

            broker_url = joined(broker_url)  # a cluster's nodes, one URL each
        self.settings = Settings.load(
            broker_url=broker_url,
            store_url=store_url,
            max_payload_bytes=max_payload_bytes,
            max_priority=max_priority,
            publish_timeout=publish_timeout,
            flush_interval=flush_interval,
            lease_after=lease_after,
            lease_duration=lease_duration,
            signing_key=signing_key,
            retention=retention,
            namespace=namespace,
            queue_type=queue_type,
            priority_lanes=(
                priority_lanes
                if priority_lanes is None or isinstance(priority_lanes, str)
                else ",".join(str(floor) for floor in priority_lanes)
            ),
        )
        super().__init__()
        self.runtime = Runtime(self.settings)
        self.runtime.sync = SyncBridge(self.open, self.close, lambda: self.runtime.is_open)
        self._middleware = [middlewares.checked(m) for m in middleware]

    def __repr__(self) -> str:
        return (
            f"App(broker_url={redact_url(self.settings.broker_url)!r}, "
            f"store_url={redact_url(self.settings.store_url)!r})"
        )

    # -- lifecycle ------------------------------------------------------------------------

    def add_middleware(self, middleware: Middleware) -> None:
        """Add a middleware inside those added before (see `taskq.Middleware`); only before
        the app opens, since the chains are composed once, then."""
        if self.runtime.is_open:
            raise ConfigurationError("add middleware before the app opens (`async with app:`)")
        self._middleware.append(middlewares.checked(middleware))

    @property
    def middleware(self) -> Sequence[Middleware]:
        """The app's middleware, outermost first; plugins named in TASKQ_MIDDLEWARE join
        them (inside) when the app opens."""
        return tuple(self._middleware)

    async def open(self) -> None:
        """Connect to the store (checking its schema) and the broker."""
        if self.runtime.is_open:
            return
        plugins = middlewares.from_entry_points(self.settings.middleware.split(","))
        submit = functools.partial(submission.submit, self.runtime)
        await self.runtime.open([*self._middleware, *plugins], submit)

    async def close(self) -> None:
        await self.runtime.close()

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
        return self.runtime.store

    @property
    def broker(self) -> brokers.Broker:
        return self.runtime.broker

    @property
    def announcer(self) -> EventBatcher:
        """Sends this client's task events (`queued`), those of one loop turn together."""
        return self.runtime.events

    @property
    def waiter(self) -> Waiter:
        return self.runtime.waiter

    # -- client calls ---------------------------------------------------------------------

    def get_sync(self, task_id: str) -> TaskHandle[Any]:
        """`get()` for sync code (`taskq.client.sync`): opens the app on first use."""
        return self.runtime.sync.call(lambda: self.get(task_id))

    def close_sync(self) -> None:
        """Close what sync calls opened (done at interpreter exit anyway)."""
        self.runtime.sync.close()

    async def get(self, task_id: str) -> TaskHandle[Any]:
        """A handle on an existing task; raises `TaskNotFound` if there is none."""
        task_id = _checked_id(task_id)
        if await self.store.get_task(task_id) is None:
            raise TaskNotFound(f"no task with id {task_id}")
        return TaskHandle(self.runtime, task_id)

    async def get_workflow(self, workflow_id: str) -> WorkflowHandle:
        """A handle on an existing workflow; raises `TaskNotFound` if there is none."""
        found = await self.store.workflow(_checked_id(workflow_id, what="workflow id"))
        if found is None:
            raise TaskNotFound(f"no workflow with id {workflow_id}")
        returns = {name: task.returns for name, task in self._tasks.items()}
        return WorkflowHandle(self.runtime, str(uuid.UUID(workflow_id)), found[1], returns)

    def dlq(self, queue: str = "default") -> DeadLetters:
        """The dead-letter queue of `queue`: list, replay and purge its dead tasks."""
        return DeadLetters(self.runtime, queue)

    def lock(
        self, name: str, *, timeout: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Mutual exclusion across every process and host on this store.

        `async with app.lock("nightly-report", timeout=5):` waits up to `timeout` seconds
        (None: for ever; 0: not at all) and raises `LockTimeout` if it cannot get the lock.
        PostgreSQL releases it when the block ends, or when the holder's process dies.
        """
        return self.store.lock(name, timeout)

    async def declare(self, queue: str) -> None:
        """Make sure `queue` (and its dead-letter queue) exists on the broker."""
        await self.runtime.declare(queue)

    async def gather(
        self,
        handles: Iterable[TaskHandle[Any]],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (public API, like handle.result)
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Wait for all the tasks; → their results in the order of `handles`.

        If one failed (or was cancelled, or expired) its exception is raised once all have
        finished, unless `return_exceptions=True` puts it in the list instead. `timeout`
        (seconds for the whole wait) raises the built-in `TimeoutError`.
        """
        return await batches.gather(
            self.runtime, handles, timeout=timeout, return_exceptions=return_exceptions
        )

    def as_completed(
        self, handles: Iterable[TaskHandle[Any]], *, timeout: float | None = None
    ) -> AsyncIterator[TaskHandle[Any]]:
        """`async for handle in app.as_completed(handles):` each as its task finishes."""
        return batches.as_completed(self.runtime, handles, timeout)

    async def cancel_many(self, task_ids: Iterable[str]) -> dict[str, bool]:
        """Cancel many tasks in one statement (see `TaskHandle.cancel`); → for each id,
        whether it was cancelled (False: already finished, or no such task)."""
        given = {task_id: _checked_id(task_id) for task_id in task_ids}
        cancelled = await cancel.cancel_many(self.runtime, list(given.values()))
        return {task_id: cancelled[checked] for task_id, checked in given.items()}

    def events(
        self,
        *,
        queue: str | None = None,
        task: str | None = None,
        ready: asyncio.Event | None = None,
    ) -> AsyncIterator[TaskEvent]:
        """Every task's events, live, across the cluster (optionally one queue's or one
        task name's), until the loop stops. Events sent before the call are not replayed;
        `ready`, if given, is set once none sent from then on can be missed."""
        signer, load = self.runtime.signer, self.serializer.load
        return tail_events(
            self.broker, queue=queue, task=task, signer=signer, load=load, ready=ready
        )

    async def list_tasks(
        self,
        *,
        state: TaskStatus | str | Iterable[TaskStatus | str] | None = None,
        name: str | None = None,
        queue: str | None = None,
        batch: str | None = None,
        since: datetime | timedelta | None = None,
        limit: int = 100,
        workflow: str | None = None,
    ) -> list[TaskRecord]:
        """Tasks matching every filter given, newest first (a workflow's in step order):
        what `taskq tasks` shows.

        `since` is an aware datetime, or a timedelta back from now.
        """
        if isinstance(state, str):
            state = [state]
        try:
            states = [TaskStatus(s) for s in state or ()]
        except ValueError as exc:
            known = ", ".join(s.value for s in TaskStatus)
            raise ConfigurationError(f"{exc}; task states are {known}") from None
        if isinstance(since, timedelta):
            since = datetime.now(UTC) - since
        elif since is not None and since.tzinfo is None:
            raise ConfigurationError("since must be timezone-aware, or a timedelta")
        elif since is not None:
            since = since.astimezone(UTC)  # (SQLite compares times as UTC text)
        batch = None if batch is None else _checked_id(batch, what="batch id")
        workflow = None if workflow is None else _checked_id(workflow, what="workflow id")
        return await self.store.find_tasks(
            states=states, name=name, queue=queue, batch_id=batch, since=since, limit=limit,
            workflow_id=workflow,
        )  # fmt: skip


def _checked_id(value: str, *, what: str = "task id") -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise TaskNotFound(f"{value!r} is not a {what} (they are UUIDs)") from None
