"""One attempt of a task's own code: its own asyncio task (or a pool thread), watched.

The executor waits on it from outside, so a timeout or a cancel request cancels the
task's code, never the executor, which then survives to record what happened.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from taskq import protocol
from taskq.client.task import Task
from taskq.context import TaskContext, _current
from taskq.middleware import RunNext

# How long a cancelled (timed out) async task may take to run its cleanup.
CLEANUP_GRACE = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class Finished:
    """How the code ended: a value, an exception, a timeout, or a cancel request."""

    kind: Literal["value", "error", "timeout", "cancelled"]
    value: Any = None
    error: BaseException | None = None


# The task's own code for this run, for `invoke` at the end of the run middleware chain.
_invocation: contextvars.ContextVar[Callable[[], Awaitable[Any]]] = contextvars.ContextVar(
    "taskq_invocation"
)


async def invoke(ctx: TaskContext) -> Any:
    """The end of the run chain: the task's own code (its function, or a pool thread)."""
    return await _invocation.get()()


class Run:
    def __init__(
        self,
        task: Task[Any, Any],
        envelope: protocol.Envelope,
        ctx: TaskContext,
        threads: ThreadPoolExecutor,
        chain: RunNext | None = None,
    ) -> None:
        self.cancel_requested = False
        self.name = task.name
        self.code = getattr(task.fn, "__code__", None)  # for the watchdog's blame
        self._is_thread = not task.is_async
        self._call: asyncio.Future[Any]
        token = _current.set(ctx)
        try:
            if chain is not None:
                # The chain's task copies this context: `invoke` finds the code, and the
                # middleware, like the task, sees `taskq.context()`.
                code = functools.partial(_call, task, envelope, threads)
                invocation = _invocation.set(code)
                try:
                    self._call = asyncio.ensure_future(chain(ctx))
                finally:
                    _invocation.reset(invocation)
            elif task.is_async:
                self._call = asyncio.ensure_future(task.fn(*envelope.args, **envelope.kwargs))
            else:
                run = functools.partial(
                    contextvars.copy_context().run, task.fn, *envelope.args, **envelope.kwargs
                )
                self._call = asyncio.get_running_loop().run_in_executor(threads, run)
        finally:
            _current.reset(token)

    def cancel(self) -> None:
        """A user asked to cancel: the task's code gets `CancelledError` (threads cannot)."""
        self.cancel_requested = True
        self._call.cancel()

    async def wait(
        self,
        limit: float | None,
        *,
        hand_off_after: float | None,
        hand_off: Callable[[], Awaitable[None]],
    ) -> Finished:
        """Wait for the end, at most `limit` s (the task's timeout); after `hand_off_after` s
        still running, await `hand_off()` once."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = None if limit is None else started + limit
        hand_off_at = None if hand_off_after is None else started + hand_off_after
        try:
            while not self._call.done():
                marks = [m for m in (deadline, hand_off_at) if m is not None]
                wait = max(min(marks) - loop.time(), 0.0) if marks else None
                await asyncio.wait({self._call}, timeout=wait)
                if self._call.done():
                    break
                if deadline is not None and loop.time() >= deadline:
                    await self._stop()
                    return Finished("timeout")
                if hand_off_at is not None and loop.time() >= hand_off_at:
                    hand_off_at = None
                    await hand_off()
        except asyncio.CancelledError:
            self._call.cancel()  # the worker itself is stopping
            raise
        return self._finished()

    async def _stop(self) -> None:
        self._call.cancel()
        if not self._is_thread:  # a thread cannot be stopped; do not wait for it
            await asyncio.wait({self._call}, timeout=CLEANUP_GRACE)

    def _finished(self) -> Finished:
        if self._call.cancelled():
            if self.cancel_requested:
                return Finished("cancelled")
            # Cancelled from inside its own code: an error of the task, not a request.
            return Finished("error", error=asyncio.CancelledError("the task cancelled itself"))
        error = self._call.exception()
        if error is not None:
            return Finished("error", error=error)
        return Finished("value", value=self._call.result())


async def _call(
    task: Task[Any, Any], envelope: protocol.Envelope, threads: ThreadPoolExecutor
) -> Any:
    if task.is_async:
        return await task.fn(*envelope.args, **envelope.kwargs)
    run = functools.partial(
        contextvars.copy_context().run, task.fn, *envelope.args, **envelope.kwargs
    )
    return await asyncio.get_running_loop().run_in_executor(threads, run)
