"""The leader's work: publish due delayed tasks, submit periodic ticks, mark silent workers.

Each loop survives its own transient failures (logged, retried); only losing the
leadership connection ends the term.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from taskq.client import events, retention, rows
from taskq.client import submit as submission
from taskq.client.periodic import Periodic, tick_key
from taskq.exceptions import BrokerError, StoreConnectionError, StoreError, TaskqError
from taskq.status import TaskStatus
from taskq.store import PRUNE_BATCH, SILENT_FOR, PruneRule, TaskRecord

if TYPE_CHECKING:
    from taskq.client.app import App

logger = logging.getLogger(__name__)

BATCH = 500
POLL_INTERVAL = 0.25  # the longest a newly due task waits to be noticed
CRON_INTERVAL = 1.0
REAP_INTERVAL = 5.0
SWEEP_INTERVAL = 1.0
RETRY_AFTER_ERROR = 1.0
PRUNE_INTERVAL = 60.0  # between passes that found nothing more to delete
PRUNE_PAUSE = 0.25  # between full batches: the workers keep most of the database
# Between steps of partition work (detaching, a batch of a dropped partition's attempts):
# longer, since a partition waits a week anyway, and one 10M-row drop under a full-speed
# drain cost it 17% at 0.25 s (docs/performance.md#retention-at-scale).
PARTITION_PAUSE = 0.5
IDLE_RATE_KEY = 3600.0  # seconds unused before a rate-limit key's row is deleted


class LeaderWork:
    """What the leader runs; `run()` returns only by cancellation (the end of the term)."""

    def __init__(self, app: App, process_id: str) -> None:
        self._app = app
        self._process_id = process_id
        # Set when a transaction that wrote a due task commits (PostgreSQL NOTIFY).
        self._due_soon = asyncio.Event()

    async def run(self) -> None:
        store = self._app.store
        await store.set_leader(self._process_id, True)
        now = datetime.now(UTC)
        for schedule in self._app.schedules.values():
            logger.info(
                "periodic %s (%s): next tick at %s",
                schedule.name,
                schedule.spec,
                schedule.next_after(now).isoformat(),
                extra={"action": "periodic_next", "task_name": schedule.task},
            )
        try:
            async with (
                store.due_soon() as self._due_soon,
                asyncio.TaskGroup() as loops,
            ):
                loops.create_task(
                    self._forever(self.publish_due, self._due_soon), name="taskq-publish-due"
                )
                loops.create_task(self._forever(self.submit_ticks), name="taskq-cron")
                loops.create_task(self._forever(self.reap_workers), name="taskq-reap-workers")
                loops.create_task(self._forever(self.sweep), name="taskq-sweep")
                loops.create_task(self._forever(self.prune), name="taskq-prune")
        finally:
            # The term is over; the mark is cosmetic (the advisory lock is the truth).
            with contextlib.suppress(StoreError):
                await store.set_leader(self._process_id, False)

    async def _forever(
        self, step: Callable[[], Awaitable[float]], wake: asyncio.Event | None = None
    ) -> None:
        while True:
            try:
                wait = await step()
            except StoreConnectionError:
                raise
            except (StoreError, BrokerError) as exc:
                logger.warning("%s failed, retrying: %s", step.__name__, exc)
                wait = RETRY_AFTER_ERROR
            if wake is None:
                await asyncio.sleep(wait)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await wake.wait()
            wake.clear()

    async def publish_due(self) -> float:
        """Publish one batch of due tasks; → seconds until the next may be due."""
        # The rows stay locked (FOR UPDATE SKIP LOCKED) until the store's transaction commits,
        # so a worker claiming one waits for `queued`. After a crash before the commit the
        # rows are still `scheduled` and due: the first copy to reach a worker claims and
        # runs the task, and the next leader finds nothing left to publish.
        due, next_due = await self._app.store.publish_due(BATCH, self._publish)
        if due:
            logger.debug("published %d due tasks", len(due))
            queued = [events.queued(record) for record in due]
            await events.announce_many(self._app.broker, queued, self._app.runtime.event_signer)
        if len(due) >= BATCH:
            return 0.0
        if next_due is None:
            return POLL_INTERVAL
        return min(max((next_due - datetime.now(UTC)).total_seconds(), 0.0), POLL_INTERVAL)

    async def _publish(self, due: list[TaskRecord]) -> None:
        envelopes = [rows.envelope_of(record) for record in due]
        runtime = self._app.runtime
        await submission.publish_many(runtime, submission.encoded(runtime, envelopes))

    async def sweep(self) -> float:
        """Waiting tasks past their expiry end `expired`; long tasks whose worker died (their
        lease lapsed) become due again, for `publish_due`; so do tasks waiting for a
        concurrency slot that is free."""
        store = self._app.store
        ended = await store.expire_overdue(BATCH)
        for task_id, name, queue, state in ended:
            if state is TaskStatus.EXPIRED:
                logger.info(
                    "task %s expired before it started", task_id, extra={"task_id": task_id}
                )
            change = events.event(task_id, state, name=name, queue=queue)
            await events.announce(self._app.broker, change, self._app.runtime.event_signer)
        requeued = await store.requeue_lapsed(BATCH)
        for task_id in requeued:
            logger.warning("task %s lost its worker (lease lapsed): requeued", task_id)
        # (a slot freed where no flush saw it: a lapsed lease, a cancel, a lost release)
        await store.release_free_slots(BATCH)
        return SWEEP_INTERVAL

    async def submit_ticks(self) -> float:
        """Submit every due tick of every periodic schedule; → seconds to the next tick."""
        schedules = self._app.schedules
        if not schedules:
            return CRON_INTERVAL
        store = self._app.store
        last = await store.last_ticks()
        now = datetime.now(UTC)
        for schedule in schedules.values():
            submitted = None
            if schedule.name not in last:
                # A new schedule starts from now: its first tick is the next one.
                await store.record_tick(schedule.name, now)
                last[schedule.name] = now
            for tick in schedule.due(last[schedule.name], now):
                try:
                    await self._submit_tick(schedule, tick)
                    submitted = tick
                except (StoreConnectionError, BrokerError):
                    raise  # transient: the whole pass is retried
                except TaskqError as exc:
                    # One schedule's bad tick must not stop the leader or the other schedules.
                    logger.error("periodic %s: tick %s not submitted: %s", schedule.name, tick, exc)
            # Every tick up to `now` is handled (a crash before this line only means the
            # next leader submits them again, and their idempotency keys make that a no-op).
            await store.record_tick(schedule.name, now)
            await store.describe_schedule(
                schedule.name,
                task=schedule.task,
                spec=schedule.spec,
                timezone=schedule.timezone,
                next_tick=schedule.next_after(now),
                ticked_at=submitted,
            )
        soonest = min(schedule.next_after(now) for schedule in schedules.values())
        return min(max((soonest - datetime.now(UTC)).total_seconds(), 0.0), CRON_INTERVAL)

    async def _submit_tick(self, schedule: Periodic, tick: datetime) -> None:
        task = self._app.tasks[schedule.task]
        # Stored as a due `scheduled` row, so `publish_due` publishes it in the same
        # transaction that marks it queued: a crash between storing and publishing cannot
        # strand the tick (its key would make a resubmit a no-op).
        bound = task.options(idempotency_key=tick_key(schedule.name, tick), eta=tick)
        await bound.submit(*schedule.args, **schedule.kwargs)
        logger.info(
            "periodic %s: submitted the tick of %s",
            schedule.name,
            tick.isoformat(),
            extra={"action": "periodic_tick", "task_name": schedule.task},
        )

    async def prune(self) -> float:
        """Delete one batch of finished tasks past their retention; → seconds to the next
        (a pause between full batches leaves the database to the workers). Once no batch
        is full, the rows of processes stopped for as long go too."""
        now = datetime.now(UTC)
        store = self._app.store
        try:
            period = self._app.settings.retention_period
            rules = retention.rules(self._app.tasks.values(), period, now)
            # (the partitioned table: whole partitions first, a step a call)
            if await self._retire_partitions(rules, now):
                return PARTITION_PAUSE
            for rule in await store.row_rules(rules):
                deleted = await store.prune(rule, limit=PRUNE_BATCH)
                if deleted:
                    logger.info(
                        "retention: deleted %d finished tasks that ended before %s",
                        deleted,
                        rule.cutoff.isoformat(timespec="seconds"),
                        extra={"action": "retention_prune"},
                    )
                if deleted >= PRUNE_BATCH:
                    return PRUNE_PAUSE
            if period is not None:
                await store.forget_workers(now - period)
                await store.forget_workflows(now - period)
                await store.forget_idle_rates(IDLE_RATE_KEY)
        except StoreConnectionError:
            raise
        except StoreError as exc:  # (a role without DELETE: say how to fix it, once a pass)
            logger.warning(
                "retention: cannot delete old rows (%s); GRANT DELETE on taskq_tasks, "
                "taskq_attempts, taskq_workers, taskq_workflows and taskq_rate_limits to this "
                "role, or set TASKQ_RETENTION=off",
                exc,
            )
        return PRUNE_INTERVAL

    async def _retire_partitions(self, rules: list[PruneRule], now: datetime) -> bool:
        """One step of partition work; → whether it did some (more may follow)."""
        try:
            step = await self._app.store.retire_partitions(rules, now)
        except StoreConnectionError:
            raise
        except StoreError as exc:  # (row deletes still run)
            logger.warning(
                "retention: cannot manage the partitions of taskq_tasks (%s); the leader's "
                "role must own the table (or run `taskq prune` as its owner)",
                exc,
            )
            return False
        return step.kind in ("created", "detached", "attempts", "dropped")

    async def reap_workers(self) -> float:
        """Mark workers whose heartbeat stopped as dead."""
        dead = await self._app.store.mark_dead(SILENT_FOR)
        for worker_id in dead:
            logger.warning("worker %s stopped beating: marked dead", worker_id)
        return REAP_INTERVAL
