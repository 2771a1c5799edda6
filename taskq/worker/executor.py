"""One delivery, start to finish: decode → claim → run → decide → store → settle.

The message is settled only after the outcome is durable, so a crash at any point leaves
it to be redelivered, and a redelivery of a finished task is acked without running. Final
failures and poison are rejected into `<queue>.dlq`; everything else is acked. Tracing,
metrics, the task log and events wrap each attempt as middleware (`instruments`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from taskq import middleware, protocol
from taskq.broker import Broker, Delivery
from taskq.client.events import EventBatcher
from taskq.client.task import Task
from taskq.context import TaskContext
from taskq.exceptions import ProtocolError, StoreConnectionError, StoreError, TaskqError
from taskq.middleware import RunNext
from taskq.signing import Signer, open_message
from taskq.status import TaskStatus
from taskq.store import Claimed, Outcome, Store, TaskError, Writer
from taskq.telemetry import logs
from taskq.worker import claims, inputs, instruments, outcomes, progress, settling
from taskq.worker.instruments import Attempt
from taskq.worker.isolation import Isolation, Turn
from taskq.worker.running import Finished, Run, Runs
from taskq.worker.settling import settle, shielded

logger = logging.getLogger(__name__)

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
        lease_after: float,
        lease_duration: float,
        events: EventBatcher,
        run_chain: RunNext | None = None,
        signer: Signer | None = None,
    ) -> None:
        self._tasks = tasks
        self._signer = signer  # (with one, a message not signed by an accepted key never runs)
        self._events = events
        self._broker = broker
        self._store = store
        self._writer = writer
        self._worker_id = worker_id
        self._max_bytes = max_payload_bytes
        self._threads = threads
        self._lease_after = lease_after
        self._lease_duration = lease_duration
        self._run_chain = run_chain
        self._attempt_chain = middleware.compose(instruments.builtin(events), self._attempt)
        self.runs = Runs()  # what runs here now
        self._isolation = Isolation()
        self._turns: dict[str, Turn] = {}  # of the attempts running (see `isolation`)
        # Tasks running here whose message was acked early (kept by a lease instead).
        self._handed_off: set[str] = set()
        # Set by the worker: lowers and restores the prefetch around early-acked long tasks.
        self.on_lease: Callable[[int], Awaitable[None]] | None = None

    async def execute(self, delivery: Delivery) -> None:
        try:
            body = open_message(self._signer, delivery.body)
            envelope = protocol.decode(body, max_bytes=self._max_bytes)
        except Exception as exc:  # (a decoder bug too must cost one message, never a slot)
            if not isinstance(exc, ProtocolError):
                exc = ProtocolError(f"message could not be decoded: {exc!r}")
            await settling.reject_malformed(self._store, self._events, delivery, exc)
            return
        if envelope.queue != delivery.queue:  # (taskq publishes a task to its own queue)
            wrong = ProtocolError(f"message for queue {envelope.queue!r} came from another")
            await settling.reject_malformed(self._store, self._events, delivery, wrong)
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
            await settle(delivery.reject(requeue=True))
        except Exception as exc:
            # A bug of ours must cost one message (dead-lettered, logged), never the worker.
            logger.exception(
                "task %s: internal error; dead-lettering its message",
                envelope.id,
                extra={"action": "internal_error", "task_id": envelope.id},
            )
            error = TaskError("InternalError", repr(exc))
            failing = self._store.fail_unclaimed(envelope.id, error, dead_reason="internal")
            await settling.quietly(failing)
            await settle(delivery.reject(requeue=False))

    async def _execute(self, delivery: Delivery, envelope: protocol.Envelope) -> None:
        task = self._tasks.get(envelope.task)
        if task is None:
            await settling.reject_unknown(self._store, self._events, delivery, envelope)
            return
        if envelope.expires_at is not None and time.time() >= envelope.expires_at:
            if await settling.expire(self._store, self._events, delivery, envelope):
                return  # (else it had started before: a redelivery, which runs on)
        if delivery.redelivered and await self._keep_running(delivery, envelope.id):
            return
        turn = await self._isolation.turn(redelivered=delivery.redelivered)
        try:
            claimed = await claims.claim(
                self._writer,
                self._store,
                envelope,
                self._worker_id,
                redelivered=delivery.redelivered,
                lease_duration=self._lease_duration,
            )
            if not isinstance(claimed, Claimed):
                turn.done()
                await settling.not_claimed(self._events, delivery, envelope, claimed)
                return
            suspect = claimed.deliveries > 1
            turn.claimed(suspect=suspect)
            if suspect:
                await turn.alone()
            if (fields := logs.handling.get()) is not None:
                fields["attempt"] = claimed.attempt  # (this delivery's own dict, set in `execute`)
            runs = (
                not claimed.cancel_requested
                and claimed.deliveries <= task.default_options.max_deliveries
            )
            attempt = Attempt(
                envelope=envelope, task=task, claimed=claimed, delivery=delivery, runs=runs
            )
            self._turns[envelope.id] = turn
            outcome = await self._attempt_chain(attempt)
        finally:
            turn.done()
            self._turns.pop(envelope.id, None)
        await self._settle(delivery, envelope, outcome, stored=attempt.stored)

    async def _keep_running(self, delivery: Delivery, task_id: str) -> bool:
        """A redelivery of a task this worker runs now (its channel closed under it): keep
        the run, by a lease from now, and ack the copy; → whether it did."""
        run = self.runs.get(task_id)
        if run is None:
            return False
        logger.warning(
            "task %s was delivered again while it runs here (the connection or channel "
            "closed under it); it runs on, kept by a lease, and the copy is acked",
            task_id,
            extra={"action": "keep_running", "task_id": task_id},
        )
        if task_id in self._handed_off:
            await settle(delivery.ack())
            return True
        return await self._hand_off(delivery, task_id, run.attempt)

    async def _attempt(self, attempt: Attempt) -> Outcome:
        """The end of the attempt chain: run (unless the claim decided), decide, store."""
        envelope, claimed = attempt.envelope, attempt.claimed
        base = {
            "task_id": envelope.id,
            "attempt": claimed.attempt,
            "worker_id": self._worker_id,
            "started_at": datetime.now(UTC),
            "in_workflow": claimed.workflow_id is not None,
            "slot_key": claimed.slot_key,
        }
        if not attempt.runs and not claimed.cancel_requested:
            limit = attempt.task.default_options.max_deliveries
            outcome = outcomes.too_many_deliveries(base, claimed.deliveries, limit)
        else:
            finished = await self._run(attempt) if attempt.runs else Finished("cancelled")
            outcome = outcomes.decide(
                attempt.task,
                claimed,
                finished,
                task_id=envelope.id,
                timeout=envelope.timeout,
                max_bytes=self._max_bytes,
                base=base,
            )
        attempt.ran = time.monotonic() - attempt.started
        return await self._store_outcome(attempt, outcome)

    async def _run(self, attempt: Attempt) -> Finished:
        """Run the task's own code (through users' run middleware) and wait for its end."""
        envelope, number = await inputs.with_input(self._store, attempt), attempt.claimed.attempt
        delivery = attempt.delivery
        report = progress.reporter(attempt, self._writer, self._events, max_bytes=self._max_bytes)
        loop = asyncio.get_running_loop()
        ctx = TaskContext(
            envelope.id, attempt.task.name, envelope.queue, number, report, loop, envelope.headers
        )
        run = Run(attempt.task, envelope, ctx, self._threads, self._run_chain)
        self.runs.start(envelope.id, run)
        try:
            run.begin()
            return await run.wait(
                envelope.timeout,
                hand_off_after=self._lease_after,
                hand_off=lambda: self._hand_off(delivery, envelope.id, number),
            )
        except asyncio.CancelledError:
            # The worker is stopping past its shutdown timeout: hand the task back.
            await shielded(self._release(delivery, envelope.id, number))
            raise
        finally:
            self.runs.end(envelope.id)
            if envelope.id in self._handed_off and self.on_lease is not None:
                await self.on_lease(+1)  # its prefetch slot comes back

    async def _settle(
        self, delivery: Delivery, envelope: protocol.Envelope, outcome: Outcome, *, stored: bool
    ) -> None:
        acked_early = envelope.id in self._handed_off  # (a long task's, or a copy's)
        self._handed_off.discard(envelope.id)
        if outcome.dead_reason is None or not stored:
            if not acked_early:
                await settle(delivery.ack())
        elif acked_early or not await settle(delivery.reject(requeue=False)):
            # Acked early, or the channel that held it is gone: put a copy in the dead-letter
            # queue ourselves (the broker's redelivery, if any, finds the row final).
            await self._broker.publish_dead(envelope.queue, delivery.body, message_id=envelope.id)

    async def _hand_off(self, delivery: Delivery, task_id: str, attempt: int) -> bool:
        """A long task (or one whose message came again while it runs): keep it by a lease
        in the store, and ack its message now, before RabbitMQ's consumer_timeout closes
        the channel and redelivers it to run twice. → whether it is kept by a lease."""
        if task_id in self._handed_off:
            return True
        until = datetime.now(UTC) + timedelta(seconds=self._lease_duration)
        if not await self._store.hand_off(task_id, attempt, until):
            return False
        # The ack frees a prefetch slot while the task still runs: take the slot out of
        # the prefetch first, so the worker never holds more messages than free slots.
        if self.on_lease is not None:
            await self.on_lease(-1)
        self._handed_off.add(task_id)
        await settle(delivery.ack())
        if (turn := self._turns.get(task_id)) is not None:
            turn.done()  # a suspect kept by a lease no longer runs alone
        logger.info("task %s runs long: acked early, now kept by a lease", task_id)
        return True

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
        if task_id not in self._handed_off:
            await settle(delivery.reject(requeue=True))

    async def _store_outcome(self, attempt: Attempt, outcome: Outcome) -> Outcome:
        """Write the outcome, even while being cancelled (a cancelled wait ends once it is
        durable: `Durable`); a row that cannot hold it fails.
        → the outcome meant for the row. `attempt.stored` is False if the row had moved on
        (another attempt took it over): then it must not be announced."""
        try:
            attempt.stored = await self._writer.record(outcome)
            return outcome
        except StoreError as exc:
            if isinstance(exc, StoreConnectionError) or outcome.state is TaskStatus.FAILED:
                raise
            error = TaskError("ResultNotStored", f"the task's result could not be stored: {exc}")
            failed = outcomes.failed(outcomes.base_of(outcome), error)
            attempt.stored = await self._writer.record(failed)
            return failed
