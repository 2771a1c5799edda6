"""One delivery, start to finish: decode → claim → run → store the outcome → ack.

The ack always comes after the outcome is durable, so a crash at any point leaves the
message to be redelivered, and a redelivery of a finished task is acked without running.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
import traceback
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from taskq import protocol
from taskq.broker import Broker, Delivery, topology
from taskq.context import TaskContext, _current
from taskq.exceptions import (
    PayloadTooLarge,
    ProtocolError,
    SerializationError,
    StoreConnectionError,
    StoreError,
    TaskqError,
)
from taskq.status import TaskStatus
from taskq.store import Outcome, Store, Writer
from taskq.submission import new_task_row
from taskq.task import Task

logger = logging.getLogger(__name__)

MAX_TRACEBACK_CHARS = 32_768
STORE_RETRY_DELAY = 1.0


class Executor:
    """Runs deliveries for one worker; never raises (a failure is an outcome, not a crash)."""

    def __init__(
        self,
        *,
        tasks: Mapping[str, Task[Any, Any]],
        broker: Broker,
        store: Store,
        writer: Writer,
        worker_id: str,
        max_payload_bytes: int,
        threads: ThreadPoolExecutor,
    ) -> None:
        self._tasks = tasks
        self._broker = broker
        self._store = store
        self._writer = writer
        self._worker_id = worker_id
        self._max_bytes = max_payload_bytes
        self._threads = threads

    async def execute(self, delivery: Delivery) -> None:
        try:
            envelope = protocol.decode(delivery.body, max_bytes=self._max_bytes)
        except ProtocolError as exc:
            await self._reject_malformed(delivery, exc, exc.task_id or _task_id_of(delivery))
            return
        try:
            await self._execute(delivery, envelope)
        except TaskqError as exc:
            # The store is unreachable: hand the message back for a later try.
            logger.error(
                "task %s: %s; the message goes back to the queue",
                envelope.id,
                exc,
                extra={"action": "requeue", "task_id": envelope.id},
            )
            await asyncio.sleep(STORE_RETRY_DELAY)
            await _settle(delivery.reject(requeue=True))
        except Exception:
            # A bug of ours must cost one message (dead-lettered, logged), never the worker.
            logger.exception(
                "task %s: internal error; dead-lettering its message",
                envelope.id,
                extra={"action": "internal_error", "task_id": envelope.id},
            )
            await _settle(delivery.reject(requeue=False))

    async def _execute(self, delivery: Delivery, envelope: protocol.Envelope) -> None:
        task = self._tasks.get(envelope.task)
        if task is None:
            await self._reject_unknown(delivery, envelope)
            return
        attempt = await self._claim(envelope, delivery.redelivered)
        if attempt is None:
            # Final, running elsewhere, or not yet due: a duplicate copy. Nothing to run.
            logger.info("task %s is not claimable; acking a duplicate delivery", envelope.id)
            await _settle(delivery.ack())
            await self._announce(envelope.id, None)
            return
        await self._announce(envelope.id, TaskStatus.RUNNING)
        ctx = TaskContext(id=envelope.id, name=task.name, queue=envelope.queue, attempt=attempt)
        started = time.monotonic()
        outcome = await self._run(task, envelope, ctx)
        try:
            await self._store_outcome(outcome)
        finally:
            log = logger.info if outcome.state is TaskStatus.SUCCEEDED else logger.warning
            log(
                "%6.3fs %s %s[%s] attempt %d → %s",
                time.monotonic() - started,
                envelope.queue,
                task.name,
                envelope.id,
                attempt,
                outcome.state,
                extra={
                    "action": "task_done",
                    "task_id": envelope.id,
                    "task_name": task.name,
                    "attempt": attempt,
                    "queue": envelope.queue,
                },
            )
        await _settle(delivery.ack())
        await self._announce(envelope.id, outcome.state)

    async def _store_outcome(self, outcome: Outcome) -> None:
        """Write the outcome, even while being cancelled; a row that cannot hold it fails."""
        try:
            await _shielded(self._writer.record(outcome))
        except StoreError as exc:
            if isinstance(exc, StoreConnectionError) or outcome.state is TaskStatus.FAILED:
                raise
            message = f"the task's result could not be stored: {exc}"
            failed = _failure_of(outcome, "ResultNotStored", message)
            await _shielded(self._writer.record(failed))

    async def _claim(self, envelope: protocol.Envelope, redelivered: bool) -> int | None:
        claim = self._writer.claim
        attempt = await claim(envelope.id, self._worker_id, redelivered=redelivered)
        if attempt is None and await self._store.get_task(envelope.id) is None:
            # A message with no row (published by other means): record it, then run it.
            await self._store.insert_task_if_missing(new_task_row(envelope))
            attempt = await claim(envelope.id, self._worker_id, redelivered=redelivered)
        return attempt

    async def _run(
        self, task: Task[Any, Any], envelope: protocol.Envelope, ctx: TaskContext
    ) -> Outcome:
        token = _current.set(ctx)
        try:
            if task.is_async:
                # The task runs as its own asyncio task: a timeout cancels it, not us.
                call = asyncio.ensure_future(task.fn(*envelope.args, **envelope.kwargs))
            else:
                run = functools.partial(
                    contextvars.copy_context().run,
                    task.fn,
                    *envelope.args,
                    **envelope.kwargs,
                )
                call = asyncio.get_running_loop().run_in_executor(self._threads, run)
        finally:
            _current.reset(token)
        try:
            async with asyncio.timeout(envelope.timeout):
                result = await call
        except TimeoutError:
            if not call.done() or call.cancelled():
                return _failure(
                    ctx,
                    "TaskTimeout",
                    f"task exceeded its timeout of {envelope.timeout} s",
                )
            return _error_outcome(ctx, call.exception())
        except asyncio.CancelledError:
            call.cancel()
            raise
        except Exception as exc:
            return _error_outcome(ctx, exc)
        try:
            protocol.check_value(result, f"result of task {task.name!r}")
            protocol.check_size(
                result, max_bytes=self._max_bytes, what=f"result of task {task.name!r}"
            )
        except (SerializationError, PayloadTooLarge) as exc:
            return _error_outcome(ctx, exc)
        return Outcome(
            task_id=ctx.id,
            attempt=ctx.attempt,
            state=TaskStatus.SUCCEEDED,
            result=result,
        )

    async def _reject_malformed(
        self, delivery: Delivery, exc: ProtocolError, task_id: str | None
    ) -> None:
        logger.error(
            "dead-lettering a malformed message from queue %s (task id %s): %s",
            delivery.queue,
            task_id or "unknown",
            exc,
            extra={"action": "reject_malformed", "task_id": task_id},
        )
        if task_id is not None:
            error = {"type": "ProtocolError", "message": str(exc), "traceback": ""}
            await _quietly(self._store.fail_unclaimed(task_id, error))
        await _settle(delivery.reject(requeue=False))
        if task_id is not None:
            await self._announce(task_id, TaskStatus.FAILED)

    async def _reject_unknown(self, delivery: Delivery, envelope: protocol.Envelope) -> None:
        message = (
            f"no task named {envelope.task!r} is registered in this worker's app; "
            "deploy the code that defines it, then replay the message from "
            f"{topology.dlq_name(envelope.queue)}"
        )
        logger.error(
            "task %s: %s",
            envelope.id,
            message,
            extra={
                "action": "reject_unknown",
                "task_id": envelope.id,
                "task_name": envelope.task,
            },
        )
        error = {"type": "UnknownTask", "message": message, "traceback": ""}
        await self._store.insert_task_if_missing(new_task_row(envelope))
        await self._store.fail_unclaimed(envelope.id, error)
        await _settle(delivery.reject(requeue=False))
        await self._announce(envelope.id, TaskStatus.FAILED)

    async def _announce(self, task_id: str, state: TaskStatus | None) -> None:
        body = protocol.encode_event(task_id, state.value if state else "")
        await _quietly(self._broker.publish_event(topology.event_key(task_id), body))


async def _shielded(write: Any) -> None:
    # Shielded: even if the worker is being cancelled, the write completes first.
    future = asyncio.ensure_future(write)
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        await future
        raise


def _failure_of(outcome: Outcome, error_type: str, message: str) -> Outcome:
    return Outcome(
        task_id=outcome.task_id,
        attempt=outcome.attempt,
        state=TaskStatus.FAILED,
        error={"type": error_type, "message": message, "traceback": ""},
    )


def _failure(ctx: TaskContext, error_type: str, message: str, tb: str = "") -> Outcome:
    return Outcome(
        task_id=ctx.id,
        attempt=ctx.attempt,
        state=TaskStatus.FAILED,
        error={
            "type": error_type,
            "message": message,
            "traceback": tb[-MAX_TRACEBACK_CHARS:],
        },
    )


def _error_outcome(ctx: TaskContext, exc: BaseException | None) -> Outcome:
    if exc is None:
        return _failure(ctx, "Unknown", "the task ended without a result or an error")
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    return _failure(ctx, name, str(exc), "".join(traceback.format_exception(exc)))


def _task_id_of(delivery: Delivery) -> str | None:
    """The task id taskq put in the message id, for messages whose body cannot be read."""
    candidate = delivery.message_id.partition(":")[0]
    try:
        return str(uuid.UUID(candidate))
    except ValueError:
        return None


async def _settle(settling: Any) -> None:
    """Ack or reject; a broken channel means the broker will redeliver, which is safe."""
    try:
        await settling
    except TaskqError as exc:
        logger.info("could not settle a delivery (%s); the broker will redeliver it", exc)


async def _quietly(operation: Any) -> None:
    try:
        await operation
    except TaskqError as exc:
        logger.warning("ignored: %s", exc)
