"""What `@app.task` returns: a named, typed, submittable function."""

from __future__ import annotations

import dataclasses
import inspect
import time
import typing
from collections.abc import Callable, Coroutine, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar

from taskq import middleware, serializer
from taskq.client import limits
from taskq.client import submit as submission
from taskq.client.batch import Batch
from taskq.client.canvas import Node, Signature
from taskq.client.handle import TaskHandle
from taskq.client.limits import ConcurrencyLimit, Quota, RateLimit
from taskq.client.options import UNSET as _UNSET
from taskq.client.options import TaskOptions
from taskq.client.workflow import submit_workflow
from taskq.client.workflow_handle import WorkflowHandle
from taskq.exceptions import InvalidArguments

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    from taskq.client.runtime import Runtime

P = ParamSpec("P")
R = TypeVar("R")


class _Submitter(Generic[P, R]):
    """What `Task` and `BoundTask` share, written once: submit, submit_many, options."""

    def _target(self) -> tuple[Task[P, R], TaskOptions]:
        raise NotImplementedError

    async def submit(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """Store the task as `queued` and publish it; returns once the broker confirmed it."""
        task, options = self._target()
        return await _submit(task, options, args, kwargs)

    def submit_sync(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """`submit()` for sync code (a Django or Flask view, a script): on the app's
        background loop, opened on first use (`taskq.client.sync`)."""
        task, options = self._target()
        return task._runtime.sync.call(lambda: _submit(task, options, args, kwargs))

    async def submit_many(self, items: Iterable[tuple[Any, ...] | dict[str, Any]]) -> Batch[R]:
        """Submit one task per item: a tuple of positional arguments or a dict of keyword
        arguments. Every item is checked first (an error names its index and nothing is
        sent); then one insert and pipelined, confirmed publishes. → a `Batch` of handles."""
        task, options = self._target()
        return await _submit_many(task, options, items)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """This call as a workflow step, not yet submitted: in a chain it receives the
        value of the step before as its first argument (`taskq.client.canvas`)."""
        task, options = self._target()
        return Signature(task, args, kwargs, options)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """As `s()`, immutable: it receives nothing from the step before."""
        task, options = self._target()
        return Signature(task, args, kwargs, options, immutable=True)

    def options(
        self,
        *,
        queue: str = _UNSET,
        priority: int = _UNSET,
        timeout: float | None = _UNSET,
        countdown: float | None = _UNSET,
        eta: datetime | None = _UNSET,
        idempotency_key: str | None = _UNSET,
        expires: float | datetime | None = _UNSET,
        max_retries: int = _UNSET,
        transaction: AsyncConnection | AsyncSession | None = _UNSET,
        confirm_publish: bool = _UNSET,
        rate_limit: RateLimit | str | None = _UNSET,
        concurrency_limit: ConcurrencyLimit | int | None = _UNSET,
        quota: Quota | int | None = _UNSET,
        tags: set[str] | frozenset[str] | None = _UNSET,
    ) -> BoundTask[P, R]:
        """A copy with other options: `await task.options(priority=9).submit(...)`.

        `countdown` (seconds) or `eta` (an aware datetime) delay the task; it waits as a
        `scheduled` row in the store, not in any worker. `idempotency_key` makes a repeated
        submit return the first task instead of creating another. `expires` (seconds from
        now, or an aware datetime): a task not started by then never runs; it ends `expired`.
        `transaction` (a SQLAlchemy AsyncConnection or AsyncSession on the store's
        database): the task is written in that transaction and runs only if it commits.
        `confirm_publish=True`: return only once RabbitMQ confirmed the message, else raise
        `PublishError` (by default a task RabbitMQ cannot take now is stored, and the leader
        publishes it once RabbitMQ is back). `rate_limit`, `concurrency_limit`, `quota` and
        `tags` replace the task's own (None: none). Options not given keep their values;
        calls chain.
        """
        task, options = self._target()
        flow: dict[str, Any] = {}
        if rate_limit is not _UNSET:
            flow["rate_limit"] = limits.rate_limit(rate_limit)
        if concurrency_limit is not _UNSET:
            flow["concurrency_limit"] = limits.concurrency_limit(concurrency_limit)
        if quota is not _UNSET:
            flow["quota"] = limits.quota(quota)
        if tags is not _UNSET:
            flow["tags"] = limits.tags(tags)
        merged = options.merged(
            queue=queue,
            priority=priority,
            timeout=timeout,
            countdown=countdown,
            eta=eta,
            idempotency_key=idempotency_key,
            expires=expires,
            max_retries=max_retries,
            transaction=transaction,
            confirm_publish=confirm_publish,
            **flow,
        )
        return BoundTask(task, task.bound(merged))


class Task(_Submitter[P, R]):
    """A registered task. `await task.submit(...)` queues it and returns a `TaskHandle`."""

    def __init__(
        self, runtime: Runtime, fn: Callable[P, Any], *, name: str, options: TaskOptions
    ) -> None:
        self._runtime = runtime
        self.fn = fn
        self.name = name
        self.is_async = inspect.iscoroutinefunction(fn)
        self._signature = inspect.signature(fn)
        self.default_options = self.bound(options)
        hints = serializer.task_hints(fn)
        self.returns = hints.pop("return", Any)
        runtime.serializer.check_annotation(self.returns, f"task {name!r}'s return value")
        # Parameters whose annotation names a type to rebuild (a dataclass, an Enum, ...).
        self._parameters = {k: v for k, v in hints.items() if not _plain_annotation(v)}
        self._positional = list(self._signature.parameters)
        # How long its finished rows are kept ("off": for ever; None: the app's), as
        # `taskq.client.retention.declared` read its `retention=`.
        self.retention: timedelta | Literal["off"] | None = None

    def __repr__(self) -> str:
        return f"<Task {self.name!r} queue={self.default_options.queue!r}>"

    async def submit_workflow(self, node: Node) -> WorkflowHandle:
        """Submit a workflow on this task's app (what `chain(...).submit()` calls)."""
        return await submit_workflow(self._runtime, node)

    def _target(self) -> tuple[Task[P, R], TaskOptions]:
        return self, self.default_options

    def bound(self, options: TaskOptions) -> TaskOptions:
        """`options` with each limit's `key` found among this task's parameters
        (`ConfigurationError` if it names none of them)."""
        sign, name = self._signature, self.name
        return dataclasses.replace(
            options,
            rate_limit=limits.bound(options.rate_limit, sign, name),
            concurrency_limit=limits.bound(options.concurrency_limit, sign, name),
            quota=limits.bound(options.quota, sign, name),
        )

    def load_arguments(
        self, args: list[Any], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        """A message's arguments as the function takes them (`taskq.serializer`)."""
        load = self.serializer.load
        args, kwargs = [load(value) for value in args], {k: load(v) for k, v in kwargs.items()}
        if not self._parameters:
            return args, kwargs
        return serializer.rebuild_arguments(self._parameters, self._positional, args, kwargs)

    @property
    def serializer(self) -> serializer.Serializer:
        """Its app's (`app.serializer`)."""
        return self._runtime.serializer

    def dump_result(self, value: Any) -> Any:
        """The task's return value as sent and stored; `SerializationError` names the path
        of a value that cannot be."""
        return self.serializer.dump(value, f"result of task {self.name!r}")

    def check_arguments(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], *, where: str | None = None
    ) -> None:
        """Refuse arguments that the function could not be called with."""
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            where = where or f"task {self.name!r}"
            raise InvalidArguments(f"{where} takes {self._signature}: {exc}") from None


class TaskDecorator:
    """What `@app.task(...)` with options returns: `register` makes the task, then
    `then(task)` (if given) does more with it."""

    def __init__(
        self,
        register: Callable[[Callable[..., Any]], Task[Any, Any]],
        then: Callable[[Task[Any, Any]], None] | None = None,
    ) -> None:
        self._register, self._then = register, then

    @typing.overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> Task[P, R]: ...

    @typing.overload
    def __call__(self, fn: Callable[P, R]) -> Task[P, R]: ...

    def __call__(self, fn: Callable[..., Any]) -> Any:
        task = self._register(fn)
        if self._then is not None:
            self._then(task)
        return task


class BoundTask(_Submitter[P, R]):
    """A task with options fixed for the next `submit()`."""

    def __init__(self, task: Task[P, R], options: TaskOptions) -> None:
        self.task = task
        self.bound_options = options

    def __repr__(self) -> str:
        return f"<BoundTask {self.task.name!r} {self.bound_options}>"

    def _target(self) -> tuple[Task[P, R], TaskOptions]:
        return self.task, self.bound_options


async def _submit(
    task: Task[Any, Any], options: TaskOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> TaskHandle[Any]:
    task.check_arguments(args, kwargs)
    started = time.monotonic()
    call = middleware.Submission(name=task.name, args=args, kwargs=kwargs, options=options)
    task_id = await task._runtime.submit(call)
    # A new task (no key could name an earlier one) that this client's events binding,
    # if older, hears every event of.
    new = options.idempotency_key is None
    created = started if new else None
    return TaskHandle(task._runtime, task_id, created_at=created, returns=task.returns)


async def _submit_many(
    task: Task[Any, Any], options: TaskOptions, items: Iterable[Any]
) -> Batch[Any]:
    calls = []
    for index, item in enumerate(items):
        args, kwargs = submission.call_of(item, index)
        task.check_arguments(args, kwargs, where=f"item {index}: task {task.name!r}")
        calls.append((args, kwargs))
    batch_id, ids = await submission.submit_many(task._runtime, task.name, options, calls)
    return Batch(
        batch_id, [TaskHandle(task._runtime, task_id, returns=task.returns) for task_id in ids]
    )


def _plain_annotation(annotation: Any) -> bool:
    """Whether values for this annotation need no rebuilding (msgpack gives them as is)."""
    return annotation in (Any, int, float, str, bool, bytes, list, dict, None, type(None)) or (
        typing.get_origin(annotation) in (list, dict)
        and all(_plain_annotation(arg) for arg in typing.get_args(annotation))
    )
