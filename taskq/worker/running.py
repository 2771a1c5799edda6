"""One attempt of a task's own code: its own asyncio task (or a pool thread), watched.

The executor waits on it from outside, so a timeout or a cancel request cancels the
task's code, never the executor, which then survives to record what happened.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import inspect
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any, Literal, TypeVar

from taskq import protocol
from taskq.client.task import Task
from taskq.context import TaskContext, _current
from taskq.exceptions import InvalidArguments
from taskq.middleware import RunNext

logger = logging.getLogger("taskq.worker.executor")  # (where these lines always came from)

T = TypeVar("T")

# How long a cancelled (timed out) async task may take to run its cleanup.
CLEANUP_GRACE = 5.0
# How long a cancel request for a task not running here (yet) is kept.
EARLY_CANCEL_TTL = 60.0


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


if sys.version_info >= (3, 12):

    def start(coroutine: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """A task that runs at once, up to its first suspension (`eager_start`, 3.12+): a
        task that never suspends ends without a turn of the loop, and one that does saves
        the turn its first step would have waited for."""
        loop = asyncio.get_running_loop()
        return asyncio.Task(coroutine, loop=loop, name=name, eager_start=True)

else:

    def start(coroutine: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """A task (3.11 has no eager start: its first step waits for the next turn)."""
        return asyncio.get_running_loop().create_task(coroutine, name=name)


async def invoke(ctx: TaskContext) -> Any:
    """The end of the run chain: the task's own code (its function, or a pool thread)."""
    return await _invocation.get()()


class Run:
    """One attempt's code: made, registered in `Runs`, then `begin()` starts it."""

    def __init__(
        self,
        task: Task[Any, Any],
        envelope: protocol.Envelope,
        ctx: TaskContext,
        threads: ThreadPoolExecutor,
        chain: RunNext | None = None,
    ) -> None:
        self.cancel_requested = False
        self.task_id = envelope.id
        self.name = task.name
        self.attempt = ctx.attempt
        self.code = getattr(task.fn, "__code__", None)  # for the watchdog's blame
        self._task, self._envelope, self._ctx = task, envelope, ctx
        self._threads, self._chain = threads, chain
        self._call: asyncio.Future[Any] | None = None

    def begin(self) -> None:
        """Start the code; an async task's runs at once up to its first suspension (`start`),
        so it is registered first: the watchdog can blame it from its first line."""
        if self.cancel_requested:  # (a request that came before it started)
            self._call = asyncio.get_running_loop().create_future()
            self._call.cancel()
            return
        task, envelope, ctx, threads = self._task, self._envelope, self._ctx, self._threads
        token = _current.set(ctx)
        try:
            try:
                args, kwargs = task.load_arguments(envelope.args, envelope.kwargs)
                failure = None
            except InvalidArguments as exc:  # (the attempt fails with it, never retried)
                args, kwargs, failure = [], {}, exc
            if self._chain is not None:
                # The chain's task copies this context: `invoke` finds the code, and the
                # middleware, like the task, sees `taskq.context()`.
                code = (
                    functools.partial(_call, task, envelope, args, kwargs, threads)
                    if failure is None
                    else functools.partial(_raise, failure)
                )
                invocation = _invocation.set(code)
                try:
                    self._call = start(_awaited(self._chain(ctx)))
                finally:
                    _invocation.reset(invocation)
            elif failure is not None:
                self._call = start(_raise(failure))
            elif task.is_async:
                try:
                    coroutine = task.fn(*args, **kwargs)
                except TypeError as exc:  # (arguments the signature refuses: the task's error)
                    coroutine = _raise(misfit(task, envelope, exc))
                self._call = start(coroutine)
            else:
                run = functools.partial(contextvars.copy_context().run, task.fn, *args, **kwargs)
                self._call = asyncio.get_running_loop().run_in_executor(threads, run)
        finally:
            _current.reset(token)

    def cancel(self) -> None:
        """A user asked to cancel: the task's code gets `CancelledError` (threads cannot)."""
        self.cancel_requested = True
        if self._call is not None:
            self._call.cancel()

    async def wait(
        self,
        limit: float | None,
        *,
        hand_off_after: float | None,
        hand_off: Callable[[], Awaitable[object]],
    ) -> Finished:
        """Wait for the end, at most `limit` s (the task's timeout); after `hand_off_after` s
        still running, await `hand_off()` once."""
        call = self._running()
        if call.done():  # (an eager start that never suspended)
            return self._finished()
        if limit is None:
            await self._until_done(call, hand_off_after, hand_off)
            return self._finished()
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + limit
        hand_off_at = None if hand_off_after is None else started + hand_off_after
        try:
            while not call.done():
                wait = max(min(deadline, hand_off_at or deadline) - loop.time(), 0.0)
                await asyncio.wait({call}, timeout=wait)
                if call.done():
                    break
                if loop.time() >= deadline:
                    await self._stop()
                    return Finished("timeout")
                if hand_off_at is not None and loop.time() >= hand_off_at:
                    hand_off_at = None
                    await hand_off()
        except asyncio.CancelledError:
            call.cancel()  # the worker itself is stopping
            raise
        return self._finished()

    async def _until_done(
        self,
        call: asyncio.Future[Any],
        hand_off_after: float | None,
        hand_off: Callable[[], Awaitable[object]],
    ) -> None:
        """Await the code itself, with no timeout: one wakeup when it ends (`asyncio.wait`
        costs a waiter and two turns of the loop). A timer starts the hand-off, which ends
        before this returns: the outcome is settled knowing whether it was acked early."""
        handing: list[asyncio.Task[object]] = []
        timer = None
        if hand_off_after is not None:
            timer = asyncio.get_running_loop().call_later(
                hand_off_after, lambda: handing.append(start(_awaited(hand_off())))
            )
        try:
            await call
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                call.cancel()  # the worker itself is stopping
                for started in handing:  # (as when the hand-off was awaited here)
                    started.cancel()
                raise
            # Else the code was cancelled (on request, or by itself): `_finished` says which.
        except BaseException:  # (the code's own error: `_finished` reads it)
            pass
        finally:
            if timer is not None:
                timer.cancel()
        if handing:
            await handing[0]

    def _running(self) -> asyncio.Future[Any]:
        if self._call is None:
            raise RuntimeError(f"task {self.task_id}: wait() before begin()")
        return self._call

    async def _stop(self) -> None:
        call = self._running()
        call.cancel()
        if self._task.is_async:  # a thread cannot be stopped; do not wait for it
            await asyncio.wait({call}, timeout=CLEANUP_GRACE)

    def _finished(self) -> Finished:
        call = self._running()
        if call.cancelled():
            if self.cancel_requested:
                return Finished("cancelled")
            # Cancelled from inside its own code: an error of the task, not a request.
            return Finished("error", error=asyncio.CancelledError("the task cancelled itself"))
        error = call.exception()
        if error is not None:
            return Finished("error", error=error)
        return Finished("value", value=call.result())


class Runs:
    """The attempts running in this worker now, by task id: for cancel requests, the
    watchdog's blame, the heartbeat's leases, and redeliveries of what runs here."""

    def __init__(self) -> None:
        self._runs: dict[str, Run] = {}
        # Cancel requests that came before their task was registered here (monotonic time).
        self._early_cancels: dict[str, float] = {}

    def get(self, task_id: str) -> Run | None:
        return self._runs.get(task_id)

    def ids(self) -> list[str]:
        return list(self._runs)

    def start(self, task_id: str, run: Run) -> None:
        self._runs[task_id] = run
        if self._early_cancels.pop(task_id, None) is not None:
            run.cancel()  # the request came between the claim and now

    def end(self, task_id: str) -> None:
        self._runs.pop(task_id, None)

    def blame(self, frame: FrameType) -> str | None:
        """The running task whose code is on this stack (the watchdog asks), if any."""
        run = self.culprit(frame)
        return None if run is None else f"{run.name}[{run.task_id}]"

    def culprit(self, frame: FrameType) -> Run | None:
        """The run whose task's code is on this stack, if any (safe from another thread)."""
        codes = {run.code: run for run in self.snapshot()}
        current: FrameType | None = frame
        while current is not None:
            if (run := codes.get(current.f_code)) is not None:
                return run
            current = current.f_back
        return None

    def only(self) -> Run | None:
        """The one run, if exactly one task runs here now."""
        runs = self.snapshot()
        return runs[0] if len(runs) == 1 else None

    def snapshot(self) -> list[Run]:
        """The runs now; callable from another thread (a copy, retried if it changed)."""
        while True:
            try:
                return list(self._runs.values())
            except RuntimeError:  # (changed size while being copied)
                continue

    def cancel(self, task_id: str) -> bool:
        """Cancel the task if it runs here (a control message asked); → whether it did.

        A request for a task not (yet) registered is kept for a minute: it may be one this
        worker has just claimed and is about to start.
        """
        run = self._runs.get(task_id)
        if run is None:
            now = time.monotonic()
            self._early_cancels = {
                i: t for i, t in self._early_cancels.items() if now - t < EARLY_CANCEL_TTL
            }
            self._early_cancels[task_id] = now
            return False
        logger.info("cancelling running task %s on request", task_id, extra={"task_id": task_id})
        run.cancel()
        return True


def misfit(task: Task[Any, Any], envelope: protocol.Envelope, exc: TypeError) -> Exception:
    """`InvalidArguments` if the message's arguments do not fit the task's signature (a
    message from an older or newer version of the task), else the TypeError itself."""
    try:
        inspect.signature(task.fn).bind(*envelope.args, **envelope.kwargs)
    except TypeError as refused:
        return InvalidArguments(
            f"the message's arguments do not fit {task.name}'s signature ({refused}): was it "
            "submitted by another version of the code?"
        )
    return exc


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def _raise(exc: Exception) -> Any:
    raise exc


async def _call(
    task: Task[Any, Any],
    envelope: protocol.Envelope,
    args: list[Any],
    kwargs: dict[str, Any],
    threads: ThreadPoolExecutor,
) -> Any:
    """The task's code on its arguments as loaded (`Task.load_arguments`)."""
    if task.is_async:
        try:
            coroutine = task.fn(*args, **kwargs)
        except TypeError as exc:
            raise misfit(task, envelope, exc) from None
        return await coroutine
    run = functools.partial(contextvars.copy_context().run, task.fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(threads, run)
