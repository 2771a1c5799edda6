"""One delivery, start to finish: decode → claim → run → store the outcome → settle.

The message is settled only after the outcome is durable, so a crash at any point leaves
it to be redelivered, and a redelivery of a finished task is acked without running. Final
failures and poison are rejected into `<queue>.dlq`; everything else is acked.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from opentelemetry.trace import Span

from taskq import protocol
from taskq.broker import Broker, Delivery, topology
from taskq.client.events import EventBatcher
from taskq.client.submit import new_task_row
from taskq.client.task import Task
from taskq.context import ProgressReporter, TaskContext
from taskq.exceptions import ProtocolError, StoreConnectionError, StoreError, TaskqError
from taskq.middleware import RunNext
from taskq.status import TaskStatus
from taskq.store import Claimed, Outcome, Store, TaskError, Writer
from taskq.telemetry import logs, metrics, semconv, tracing
from taskq.worker import outcomes
from taskq.worker.running import Finished, Run

logger = logging.getLogger(__name__)

STORE_RETRY_DELAY = 1.0
EARLY_CANCEL_TTL = 60.0


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
        lease_after: float,
        lease_duration: float,
        events: EventBatcher,
        run_chain: RunNext | None = None,
    ) -> None:
        self._tasks = tasks
        self._run_chain = run_chain
        self._events = events
        self._broker = broker
        self._store = store
        self._writer = writer
        self._worker_id = worker_id
        self._max_bytes = max_payload_bytes
        self._threads = threads
        self._lease_after = lease_after
        self._lease_duration = lease_duration
        self._runs: dict[str, Run] = {}
        # Deliveries of long tasks whose message was acked early (kept by a lease instead).
        self._handed_off: weakref.WeakSet[Delivery] = weakref.WeakSet()
        # Cancel requests that came before their task was registered here (monotonic time).
        self._early_cancels: dict[str, float] = {}
        # Set by the worker: lowers and restores the prefetch around early-acked long tasks.
        self.on_lease: Callable[[int], Awaitable[None]] | None = None

    def blame(self, frame: FrameType) -> str | None:
        """The running task whose code is on this stack (the watchdog asks), if any."""
        codes = {run.code: task_id for task_id, run in self._runs.items()}
        current: FrameType | None = frame
        while current is not None:
            if (task_id := codes.get(current.f_code)) is not None:
                return f"{self._runs[task_id].name}[{task_id}]"
            current = current.f_back
        return None

    def running(self) -> int:
        return len(self._runs)

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

    async def execute(self, delivery: Delivery) -> None:
        try:
            envelope = protocol.decode(delivery.body, max_bytes=self._max_bytes)
        except ProtocolError as exc:
            await self._reject_malformed(delivery, exc, exc.task_id or _task_id_of(delivery))
            return
        logs.handling.set(
            {"task_id": envelope.id, "task_name": envelope.task, "queue": envelope.queue}
        )
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
        except Exception as exc:
            # A bug of ours must cost one message (dead-lettered, logged), never the worker.
            logger.exception(
                "task %s: internal error; dead-lettering its message",
                envelope.id,
                extra={"action": "internal_error", "task_id": envelope.id},
            )
            error = TaskError("InternalError", repr(exc))
            await _quietly(self._store.fail_unclaimed(envelope.id, error, dead_reason="internal"))
            await _settle(delivery.reject(requeue=False))

    async def _execute(self, delivery: Delivery, envelope: protocol.Envelope) -> None:
        task = self._tasks.get(envelope.task)
        if task is None:
            await self._reject_unknown(delivery, envelope)
            return
        if envelope.expires_at is not None and time.time() >= envelope.expires_at:
            if await self._expired(delivery, envelope):
                return  # (else it had started before: a redelivery, which runs on)
        claimed = await self._claim(envelope, delivery.redelivered)
        if claimed is None:
            # Final, running elsewhere, or not yet due: a duplicate copy. Nothing to run.
            logger.info("task %s is not claimable; acking a duplicate delivery", envelope.id)
            await _settle(delivery.ack())
            self._announce(envelope.id, None, envelope)
            return
        if (fields := logs.handling.get()) is not None:
            fields["attempt"] = claimed.attempt  # (this delivery's own dict, set in `execute`)
        base = {
            "task_id": envelope.id,
            "attempt": claimed.attempt,
            "worker_id": self._worker_id,
            "started_at": datetime.now(UTC),
        }
        outcome = await self._attempt(delivery, envelope, task, claimed, base)
        await self._finish(delivery, envelope, task, outcome)

    async def _attempt(
        self,
        delivery: Delivery,
        envelope: protocol.Envelope,
        task: Task[Any, Any],
        claimed: Claimed,
        base: dict[str, Any],
    ) -> Outcome:
        if claimed.cancel_requested:
            finished = Finished("cancelled")
            return outcomes.decide(task, claimed, finished, **self._decide_args(envelope, base))
        limit = task.default_options.max_deliveries
        if claimed.deliveries > limit:
            message = (
                f"delivered {claimed.deliveries} times without an outcome (max_deliveries="
                f"{limit}): the task probably kills its worker (os._exit, out of memory, a "
                "crash in native code), so it is dead-lettered rather than run again"
            )
            error = TaskError("MaxDeliveriesExceeded", message)
            return outcomes.failed(base, error, reason="max_deliveries")
        with tracing.processing(envelope, claimed.attempt) as span:
            active, key = metrics.gauges.active, (task.name, envelope.queue)
            active[key] = active.get(key, 0) + 1
            try:
                finished = await self._run(delivery, envelope, task, claimed, span)
            finally:
                active[key] -= 1
            outcome = outcomes.decide(task, claimed, finished, **self._decide_args(envelope, base))
            retrying = outcome.state is TaskStatus.SCHEDULED
            failure = None if outcome.error is None else outcome.error.to_json()
            tracing.outcome(span, "retried" if retrying else outcome.state.value, failure)
        return outcome

    async def _run(
        self,
        delivery: Delivery,
        envelope: protocol.Envelope,
        task: Task[Any, Any],
        claimed: Claimed,
        span: Span,
    ) -> Finished:
        """Run the task's own code (in the current span) and wait for how it ends."""
        ctx = TaskContext(
            envelope.id,
            task.name,
            envelope.queue,
            claimed.attempt,
            self._progress_reporter(envelope, claimed.attempt, span),
            asyncio.get_running_loop(),
            envelope.headers,
        )
        # Announced before the code starts, so its progress events come after this one.
        self._announce(envelope.id, TaskStatus.RUNNING, envelope, claimed.attempt)
        if claimed.attempt == 1 and envelope.created_at:
            waited = max(time.time() - envelope.created_at, 0.0)
            attributes = metrics.task_attributes(task.name, envelope.queue)
            metrics.batched.record(metrics.queue_time, waited, attributes)
        run = Run(task, envelope, ctx, self._threads, self._run_chain)
        self._runs[envelope.id] = run
        if self._early_cancels.pop(envelope.id, None) is not None:
            run.cancel()  # the request came between the claim and now
        try:
            return await run.wait(
                envelope.timeout,
                hand_off_after=self._lease_after,
                hand_off=lambda: self._hand_off(delivery, envelope.id, claimed.attempt),
            )
        except asyncio.CancelledError:
            # The worker is stopping past its shutdown timeout: hand the task back.
            await _shielded(self._release(delivery, envelope.id, claimed.attempt))
            raise
        finally:
            self._runs.pop(envelope.id, None)
            if delivery in self._handed_off and self.on_lease is not None:
                await self.on_lease(+1)  # its prefetch slot comes back

    def _decide_args(self, envelope: protocol.Envelope, base: dict[str, Any]) -> dict[str, Any]:
        return {
            "task_id": envelope.id,
            "timeout": envelope.timeout,
            "max_bytes": self._max_bytes,
            "base": base,
        }

    async def _finish(
        self,
        delivery: Delivery,
        envelope: protocol.Envelope,
        task: Task[Any, Any],
        outcome: Outcome,
    ) -> None:
        started = outcome.started_at or datetime.now(UTC)
        ran = (datetime.now(UTC) - started).total_seconds()  # the run, not the store write
        outcome = await self._store_outcome(outcome)
        # Durable now: watchers may hear of it before the message is settled.
        result = None
        if outcome.state is TaskStatus.SUCCEEDED:
            result = protocol.result_for_event(outcome.result, outcome.result_size)
        self._announce(envelope.id, outcome.state, envelope, outcome.attempt, result)
        _count(envelope, task.name, outcome, ran)
        log = logger.info if outcome.state is TaskStatus.SUCCEEDED else logger.warning
        log(
            "%6.3fs %s %s[%s] attempt %d → %s",
            ran,
            envelope.queue,
            task.name,
            envelope.id,
            outcome.attempt,
            "retry" if outcome.state is TaskStatus.SCHEDULED else outcome.state,
            extra={
                "action": "task_done",
                "task_id": envelope.id,
                "task_name": task.name,
                "attempt": outcome.attempt,
                "queue": envelope.queue,
            },
        )
        if outcome.dead_reason is not None:
            await self._dead_letter(delivery, envelope)
        elif delivery not in self._handed_off:  # (a long task's was acked already)
            await _settle(delivery.ack())

    async def _dead_letter(self, delivery: Delivery, envelope: protocol.Envelope) -> None:
        if delivery in self._handed_off:
            # Acked early (a long task): put a copy in the dead-letter queue ourselves.
            await self._broker.publish_dead(envelope.queue, delivery.body, message_id=envelope.id)
        else:
            await _settle(delivery.reject(requeue=False))

    async def _hand_off(self, delivery: Delivery, task_id: str, attempt: int) -> None:
        """A long task: keep it by a lease in the store, and ack its message now, before
        RabbitMQ's consumer_timeout closes the channel and redelivers it to run twice."""
        until = datetime.now(UTC) + timedelta(seconds=self._lease_duration)
        held = await self._store.hand_off(task_id, attempt, until)
        if held:
            # The ack frees a prefetch slot while the task still runs: take the slot out of
            # the prefetch first, so the worker never holds more messages than free slots.
            if self.on_lease is not None:
                await self.on_lease(-1)
            await _settle(delivery.ack())
            self._handed_off.add(delivery)
            logger.info("task %s runs long: acked early, now kept by a lease", task_id)

    async def _release(self, delivery: Delivery, task_id: str, attempt: int) -> None:
        logger.warning(
            "task %s interrupted by shutdown: handed back for another worker",
            task_id,
            extra={"action": "release", "task_id": task_id},
        )
        try:
            await self._store.release(task_id, attempt)
        except TaskqError as exc:
            logger.error("could not hand task %s back in the store: %s", task_id, exc)
        if delivery not in self._handed_off:
            await _settle(delivery.reject(requeue=True))

    async def _store_outcome(self, outcome: Outcome) -> Outcome:
        """Write the outcome, even while being cancelled; a row that cannot hold it fails.
        → the outcome stored."""
        try:
            await _shielded(self._writer.record(outcome))
            return outcome
        except StoreError as exc:
            if isinstance(exc, StoreConnectionError) or outcome.state is TaskStatus.FAILED:
                raise
            message = f"the task's result could not be stored: {exc}"
            error = TaskError("ResultNotStored", message)
            base = {
                "task_id": outcome.task_id,
                "attempt": outcome.attempt,
                "worker_id": outcome.worker_id,
                "started_at": outcome.started_at,
            }
            failed = outcomes.failed(base, error)
            await _shielded(self._writer.record(failed))
            return failed

    async def _claim(self, envelope: protocol.Envelope, redelivered: bool) -> Claimed | None:
        claim = self._writer.claim
        claimed = await claim(envelope.id, self._worker_id, redelivered=redelivered)
        if claimed is None and await self._store.get_task(envelope.id) is None:
            # A message with no row (published by other means): record it, then run it.
            await self._store.insert_task_if_missing(new_task_row(envelope))
            claimed = await claim(envelope.id, self._worker_id, redelivered=redelivered)
        return claimed

    async def _expired(self, delivery: Delivery, envelope: protocol.Envelope) -> bool:
        """Expire a task that never started; → False if it had started (a redelivery)."""
        waiting = await self._store.expire_waiting(envelope.id)
        if not waiting:
            return False
        logger.warning("task %s expired before it started; dead-lettered", envelope.id)
        _count_dead(envelope.queue, "expired", envelope.task)
        await _settle(delivery.reject(requeue=False))
        self._announce(envelope.id, TaskStatus.EXPIRED, envelope)
        return True

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
            error = TaskError("ProtocolError", str(exc))
            await _quietly(self._store.fail_unclaimed(task_id, error, dead_reason="malformed"))
        _count_dead(delivery.queue, "malformed")
        await _settle(delivery.reject(requeue=False))
        if task_id is not None:
            self._announce(task_id, TaskStatus.FAILED)

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
            extra={"action": "reject_unknown", "task_id": envelope.id, "task_name": envelope.task},
        )
        error = TaskError("UnknownTask", message)
        await self._store.insert_task_if_missing(new_task_row(envelope))
        await self._store.fail_unclaimed(envelope.id, error, dead_reason="unknown_task")
        _count_dead(envelope.queue, "unknown_task")
        await _settle(delivery.reject(requeue=False))
        self._announce(envelope.id, TaskStatus.FAILED, envelope)

    def _announce(
        self,
        task_id: str,
        state: TaskStatus | None,
        envelope: protocol.Envelope | None = None,
        attempt: int = 0,
        result: list[Any] | None = None,
    ) -> None:
        self._events.add(
            protocol.Event(
                task_id=task_id,
                state=state.value if state else "",
                name=envelope.task if envelope else "",
                queue=envelope.queue if envelope else "",
                attempt=attempt,
                at=time.time(),
                result=result,
            ),
        )

    def _progress_reporter(
        self, envelope: protocol.Envelope, attempt: int, span: Span
    ) -> ProgressReporter:
        numbers = itertools.count(1)

        async def report(fraction: float, message: str | None, data: dict[str, Any]) -> None:
            protocol.check_value(data, "progress data")
            protocol.check_size(data, max_bytes=self._max_bytes, what="progress data")
            n, at = next(numbers), time.time()
            stored = {"fraction": fraction, "message": message, "data": data, "n": n, "at": at}
            self._writer.progress(envelope.id, attempt, stored)
            tracing.progress(span, fraction, message)
            event = protocol.Event(
                task_id=envelope.id,
                state=TaskStatus.RUNNING.value,
                name=envelope.task,
                queue=envelope.queue,
                attempt=attempt,
                at=at,
                progress=fraction,
                message=message,
                data=data or None,
                seq=n,
            )
            self._events.add(event)

        return report


def _count(envelope: protocol.Envelope, name: str, outcome: Outcome, ran: float) -> None:
    attributes = metrics.task_attributes(name, envelope.queue)
    retrying = outcome.state is TaskStatus.SCHEDULED
    state = "retried" if retrying else outcome.state.value
    metrics.batched.record(metrics.duration, ran, {**attributes, semconv.TASK_OUTCOME: state})
    if retrying:
        metrics.retried.add(1, attributes)
    if outcome.dead_reason is not None:
        metrics.dead_lettered.add(
            1, {**attributes, semconv.DEAD_LETTER_REASON: outcome.dead_reason}
        )


def _count_dead(queue: str, reason: str, name: str | None = None) -> None:
    attributes = {semconv.MESSAGING_DESTINATION_NAME: queue, semconv.DEAD_LETTER_REASON: reason}
    if name is not None:
        attributes[semconv.TASK_NAME] = name
    metrics.dead_lettered.add(1, attributes)


async def _shielded(write: Any) -> None:
    # Shielded: even if the worker is being cancelled, the write completes first.
    future = asyncio.ensure_future(write)  # (a future stays as it is: no task is made)
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        await future
        raise


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
