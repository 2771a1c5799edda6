"""The task registry: `@app.task`, `@app.periodic` and the worker lifecycle hooks (a part
of `App`, kept apart to keep each module short)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from taskq import protocol
from taskq.client import limits
from taskq.client import retention as retentions
from taskq.client import submit as submission
from taskq.client.limits import ConcurrencyLimit, Quota, RateLimit
from taskq.client.options import TaskOptions
from taskq.client.periodic import Missed, Periodic
from taskq.client.task import Task, TaskDecorator
from taskq.context import WorkerHook, checked_hook
from taskq.exceptions import ConfigurationError, DuplicateTaskName
from taskq.retry import DEFAULT_BACKOFF, Backoff
from taskq.serializer import Serializer

if TYPE_CHECKING:
    from taskq.client.runtime import Runtime
    from taskq.config import Settings

P = ParamSpec("P")
R = TypeVar("R")


class Registry:
    """Tasks, schedules and hooks by name; needs `settings` and `runtime`."""

    settings: Settings
    runtime: Runtime

    def __init__(self) -> None:
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._schedules: dict[str, Periodic] = {}
        # Run by each worker process: at start, before its first task; at stop, once drained.
        self.worker_start_hooks: list[WorkerHook] = []
        self.worker_stop_hooks: list[WorkerHook] = []

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
        max_retries: int = 0,
        retry_for: tuple[type[BaseException], ...] = (Exception,),
        backoff: Backoff = DEFAULT_BACKOFF,
        max_deliveries: int = 5,
        retention: timedelta | str | None = None,
        rate_limit: RateLimit | str | None = None,
        concurrency_limit: ConcurrencyLimit | int | None = None,
        quota: Quota | int | None = None,
        tags: set[str] | frozenset[str] | None = None,
    ) -> TaskDecorator: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        timeout: float | None = None,
        max_retries: int = 0,
        retry_for: tuple[type[BaseException], ...] = (Exception,),
        backoff: Backoff = DEFAULT_BACKOFF,
        max_deliveries: int = 5,
        retention: timedelta | str | None = None,
        rate_limit: RateLimit | str | None = None,
        concurrency_limit: ConcurrencyLimit | int | None = None,
        quota: Quota | int | None = None,
        tags: set[str] | frozenset[str] | None = None,
    ) -> Any:
        """Register a function as a task (`async def`, or plain `def` run in a thread pool).

        A failure whose exception is one of `retry_for` (a timeout counts as `TaskTimeout`)
        is retried up to `max_retries` times, `backoff` apart. A message delivered more than
        `max_deliveries` times without an outcome (its task keeps killing the worker) is
        dead-lettered instead of run again. Its finished rows are deleted once older than
        `retention` (a timedelta, "7d", or "off"; None: the app's TASKQ_RETENTION).

        Flow control, cluster-wide (docs/flow-control.md): `rate_limit` ("100/s" or a
        `RateLimit`) caps starts, `concurrency_limit` (an int or a `ConcurrencyLimit`) caps
        tasks running at once, `quota` (an int or a `Quota`) caps unfinished tasks (submit
        beyond raises `QuotaExceeded`); each per value of an argument if given a `key`.
        `tags`: only workers started with every one of them run it.
        """
        options = TaskOptions(
            queue=queue,
            priority=priority,
            timeout=timeout,
            max_retries=max_retries,
            retry_for=retry_for,
            backoff=backoff,
            max_deliveries=max_deliveries,
            rate_limit=limits.rate_limit(rate_limit),
            concurrency_limit=limits.concurrency_limit(concurrency_limit),
            quota=limits.quota(quota),
            tags=limits.tags(tags),
        )
        if fn is not None:
            return self._register(fn, name, options, retention)
        return TaskDecorator(lambda fn: self._register(fn, name, options, retention))

    def _register(
        self,
        fn: Callable[..., Any],
        name: str | None,
        options: TaskOptions,
        retention: timedelta | str | None,
    ) -> Task[Any, Any]:
        task_name = f"{fn.__module__}.{fn.__qualname__}" if name is None else name
        if not protocol.is_plain_name(task_name):
            # (what a worker would refuse in a message: better said once, here)
            raise ConfigurationError(
                f"task name {task_name[:64]!r} must be 1 to {protocol.MAX_NAME_CHARS} "
                "printable characters"
            )
        if task_name in self._tasks:
            raise DuplicateTaskName(
                f"a task named {task_name!r} is already registered; "
                "pass name=... to tell them apart"
            )
        submission.check_options(options, self.settings.max_priority)
        kept = retentions.declared(retention, f"task {task_name!r}: retention")
        task: Task[Any, Any] = Task(self.runtime, fn, name=task_name, options=options)
        task.retention = kept
        self._tasks[task_name] = task
        return task

    def on_worker_start(self, hook: WorkerHook) -> WorkerHook:
        """Decorate `async def hook(state: taskq.WorkerState)`: each worker process runs it
        before it takes a task (in registration order); what it puts on `state` its tasks
        find on `taskq.context().state`. If it raises, the worker stops with its error."""
        self.worker_start_hooks.append(checked_hook(hook, "on_worker_start"))
        return hook

    def on_worker_stop(self, hook: WorkerHook) -> WorkerHook:
        """Decorate `async def hook(state: taskq.WorkerState)`: each worker process runs it
        once its tasks are done (SIGTERM drains first), last registered first, even after a
        start hook failed; an error is logged."""
        self.worker_stop_hooks.append(checked_hook(hook, "on_worker_stop"))
        return hook

    @property
    def serializer(self) -> Serializer:
        """Task values beyond msgpack's: `app.serializer.register(type, encode, decode)`."""
        return self.runtime.serializer

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]:
        """Registered tasks by name (read-only view)."""
        return self._tasks

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: timedelta | None = None,
        seconds: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        timezone: str = "UTC",
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        timeout: float | None = None,
        missed: Missed = "latest",
        misfire_grace: float = 60.0,
        retention: timedelta | str | None = None,
    ) -> TaskDecorator:
        """Register a task and submit it on every tick, exactly once per tick.

        `cron="*/5 * * * *"` (five fields, read in `timezone`; a seconds field goes in
        `seconds="*/10"`), or `every=timedelta(seconds=30)` (ticks at whole multiples of it
        since the epoch). Ticks missed for longer than `misfire_grace` s (downtime) follow
        `missed`: "latest" (default) runs only the newest of them, "all" each, "skip" none.
        `retention`: how long its finished ticks are kept (see `task`), often shorter.
        """
        options = TaskOptions(queue=queue, priority=priority, timeout=timeout)

        def register(task: Task[Any, Any]) -> None:
            schedule = Periodic(
                name=task.name,
                task=task.name,
                cron=cron,
                seconds=seconds,
                every=every,
                args=tuple(args),
                kwargs=dict(kwargs or {}),
                timezone=timezone,
                missed=missed,
                misfire_grace=misfire_grace,
            )
            task.check_arguments(tuple(schedule.args), dict(schedule.kwargs))
            for index, value in enumerate(schedule.args):
                self.serializer.dump(value, f"periodic task {task.name!r}: argument {index}")
            for key, value in schedule.kwargs.items():
                self.serializer.dump(value, f"periodic task {task.name!r}: argument {key!r}")
            self._schedules[schedule.name] = schedule

        return TaskDecorator(lambda fn: self._register(fn, name, options, retention), register)

    @property
    def schedules(self) -> Mapping[str, Periodic]:
        """Periodic schedules by name (the name of their task)."""
        return self._schedules
