"""What a running task knows about itself: `taskq.context()`."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import math
import types
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any

from taskq.exceptions import ConfigurationError, TaskqError

_current: ContextVar[TaskContext] = ContextVar("taskq_task_context")
# The state of the worker whose tasks run in this context (set by `Worker.run`).
worker_state: ContextVar[WorkerState] = ContextVar("taskq_worker_state")


class WorkerState(types.SimpleNamespace):
    """What a worker process's start hooks open for its tasks to share (an HTTP client, a
    pool): `state.http = ...` in `@app.on_worker_start`, `taskq.context().state.http` in a
    task. One per worker; attributes are yours."""


# `@app.on_worker_start` and `@app.on_worker_stop` functions.
WorkerHook = Callable[[WorkerState], Awaitable[None]]


def checked_hook(hook: WorkerHook, decorator: str) -> WorkerHook:
    """The hook, if it is an async def (what `Worker.run` awaits)."""
    if not inspect.iscoroutinefunction(hook):
        raise ConfigurationError(
            f"@app.{decorator} takes an async def with one parameter (the WorkerState), not "
            f"{hook!r}"
        )
    return hook


# (fraction, message, data) → published and stored by the worker running the task.
ProgressReporter = Callable[[float, str | None, dict[str, Any]], Awaitable[None]]


@dataclasses.dataclass(frozen=True, slots=True)
class TaskContext:
    """The task being run: its id, registered name, queue, attempt (1 on first run), and
    the headers that submit middleware added (the W3C trace context among them)."""

    id: str
    name: str
    queue: str
    attempt: int
    _reporter: ProgressReporter | None = dataclasses.field(default=None, repr=False, compare=False)
    _loop: asyncio.AbstractEventLoop | None = dataclasses.field(
        default=None, repr=False, compare=False
    )
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def state(self) -> WorkerState:
        """The running worker's `WorkerState`: what its start hooks put there."""
        try:
            return worker_state.get()
        except LookupError:
            raise TaskqError("no worker state here: it exists inside a worker's tasks") from None

    async def progress(self, fraction: float, message: str | None = None, **data: Any) -> None:
        """Report how far the task is (0.0 to 1.0), with an optional message and data.

        Watchers (`handle.events()`, `taskq events`) see every report at once; the task's
        row keeps the latest, written at most every half second, so calling this in a
        tight loop is cheap. `data` must be msgpack-serialisable (like task arguments).
        """
        if self._reporter is None:
            raise TaskqError("progress can only be reported by a task that a worker runs")
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise TypeError(f"progress fraction must be a number, not {type(fraction).__name__}")
        if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
            raise ValueError(f"progress fraction must be between 0.0 and 1.0, not {fraction}")
        if message is not None and not isinstance(message, str):
            raise TypeError(f"progress message must be a str, not {type(message).__name__}")
        await self._reporter(float(fraction), message, data)

    def progress_threadsafe(self, fraction: float, message: str | None = None, **data: Any) -> None:
        """`progress()` for plain `def` tasks, which run in a thread: waits until sent."""
        if self._loop is None:
            raise TaskqError("progress can only be reported by a task that a worker runs")
        report = self.progress(fraction, message, **data)
        asyncio.run_coroutine_threadsafe(report, self._loop).result()


def context() -> TaskContext:
    """The current task's context; only valid inside a task run by a worker."""
    try:
        return _current.get()
    except LookupError:
        raise TaskqError("taskq.context() was called outside a running task") from None
