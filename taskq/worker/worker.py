"""Worker: consumes queues with bounded concurrency and runs each delivery's executor.

The bound is the broker's prefetch: the broker never hands over more unsettled messages
than there are slots, and a slot is freed only when its message is settled, so at most
`concurrency` tasks run and the local buffer never holds more than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from taskq import middleware
from taskq.broker import topology
from taskq.client.events import EventBatcher, event
from taskq.context import WorkerState, worker_state
from taskq.exceptions import BrokerError
from taskq.scheduler import LeaderWork, campaign
from taskq.status import TaskStatus
from taskq.store import Store
from taskq.telemetry import metrics
from taskq.worker import health, heartbeat, hooks, running
from taskq.worker.control import Control
from taskq.worker.executor import Executor
from taskq.worker.inbox import Inbox
from taskq.worker.limits import HardLimits
from taskq.worker.options import WorkerOptions
from taskq.worker.running import start as start_task

if TYPE_CHECKING:
    from taskq.client.app import App

logger = logging.getLogger(__name__)

DEFAULTS = WorkerOptions()
OBSERVE_INTERVAL = 5.0  # seconds between queue-depth readings, when metrics are on


class Worker:
    """Runs tasks from `queues` until `stop()`; then finishes what it started."""

    def __init__(self, app: App, options: WorkerOptions = DEFAULTS) -> None:
        self.app = app
        self.options = options
        self.queues = list(options.queues or _queues_of(app))
        # What it consumes: its queues, and with tags each of them per subset of its tags.
        self.consumed = topology.queues_for(self.queues, options.tags)
        self.recycled: str | None = None  # why the worker stopped itself, if it did
        self.bound_health_port: int | None = None
        self._completed = 0
        self.id = heartbeat.new_process_id()
        self._force = asyncio.Event()
        self.started = asyncio.Event()
        self._inbox = Inbox()

    @property
    def concurrency(self) -> int:
        return self.options.concurrency

    def __repr__(self) -> str:
        tags = f" tags={','.join(sorted(self.options.tags))}" if self.options.tags else ""
        return f"<Worker {self.id} queues={self.queues}{tags} concurrency={self.concurrency}>"

    def stop(self, *, force: bool = False) -> None:
        """Stop taking messages; `run()` returns once running tasks are done, or once
        `shutdown_timeout` has passed (or at once with `force`): the tasks still running
        then are cancelled and handed back for another worker."""
        self._inbox.close()
        if force:
            self._force.set()

    async def run(self) -> None:
        state = WorkerState()
        current = worker_state.set(state)  # (the tasks this run starts see it)
        try:
            await hooks.start(self.app.worker_start_hooks, state)
            await self._run()
        finally:
            await hooks.stop(self.app.worker_stop_hooks, state)
            worker_state.reset(current)

    async def _run(self) -> None:
        app = self.app
        for queue in self.consumed:
            await app.declare(queue)
        writer = app.store.writer(flush_interval=app.settings.flush_interval, worker_id=self.id)
        events = EventBatcher(app.broker, app.runtime.event_signer)
        writer.on_cancelled = functools.partial(_announce_cancelled, events)
        # Twice the slots: a plain def task that timed out or was cancelled keeps its thread
        # until it returns (a thread cannot be stopped), and must not starve the next ones.
        threads = ThreadPoolExecutor(2 * self.concurrency, thread_name_prefix="taskq-task")
        executor = Executor(
            tasks=app.tasks,
            broker=app.broker,
            store=app.store,
            writer=writer,
            worker_id=self.id,
            max_payload_bytes=app.settings.max_payload_bytes,
            threads=threads,
            lease_after=app.settings.lease_after,
            lease_duration=app.settings.lease_duration,
            events=events,
            run_chain=middleware.compose_run(app.runtime.middleware, running.invoke),
            signer=app.runtime.signer,
        )
        logger.info(
            "worker %s consuming %s with concurrency %d",
            self.id,
            self.consumed,
            self.concurrency,
            extra={"action": "start_worker", "worker_id": self.id},
        )
        try:
            async with (
                heartbeat.registered(
                    app.store,
                    self.id,
                    role="worker",
                    queues=self.queues,
                    tags=self.options.tags,
                    concurrency=self.concurrency,
                    lease_duration=app.settings.lease_duration,
                    running=executor.runs.ids,
                ),
                asyncio.TaskGroup() as side,
            ):
                side.create_task(writer.run(), name="taskq-writer")
                watchdog = health.LoopWatchdog(self.options.blocked_threshold, executor.runs.blame)
                watching = side.create_task(watchdog.run(), name="taskq-watchdog")
                limits = self._hard_limits(executor, watchdog)
                observing = None
                if self.options.observe_queues:
                    observing = side.create_task(self._observe_queues(), name="taskq-observe")
                candidate = None
                if self.options.scheduler:  # every worker stands for leadership unless told not to
                    lead = LeaderWork(app, self.id).run
                    candidate = side.create_task(
                        campaign(app.store, self.id, lead), name="taskq-candidate"
                    )
                commands = Control(app.store, executor.runs)
                control = await app.broker.subscribe_control(commands.on_message)
                try:
                    async with contextlib.AsyncExitStack() as probes:
                        if self.options.health_port is not None:
                            self.bound_health_port = await probes.enter_async_context(
                                health.http_probes(
                                    self.options.health_host, self.options.health_port, self._ready
                                )
                            )
                        await self._consume(executor)
                finally:
                    await control.cancel()
                    await commands.close()
                    watching.cancel()
                    if limits is not None:
                        limits.stop()
                    if observing is not None:
                        observing.cancel()
                    if candidate is not None:
                        candidate.cancel()
                    writer.close()  # flushes what is left, then its loop ends
                    await events.drain()  # the last tasks' events
        finally:
            threads.shutdown(wait=False, cancel_futures=True)
            logger.info("worker %s stopped", self.id, extra={"action": "stop_worker"})

    async def _observe_queues(self) -> None:
        """Refresh the queue and dead-letter queue depths that the metrics report."""
        while True:
            for queue in self.consumed:
                for name, into in (
                    (queue, metrics.gauges.queue_depth),
                    (topology.dlq_name(queue), metrics.gauges.dlq_depth),
                ):
                    try:
                        stats = await self.app.broker.stats(name)
                    except BrokerError as exc:
                        logger.debug("queue depth of %s unknown: %s", name, exc)
                        continue
                    if stats is not None:
                        into[queue] = stats.ready
            await asyncio.sleep(OBSERVE_INTERVAL)

    async def _consume(self, executor: Executor) -> None:
        subscription = await self.app.broker.consume(
            self.consumed,
            prefetch=self.concurrency,
            on_delivery=self._inbox.put,
        )
        prefetch = self.concurrency

        async def on_lease(change: int) -> None:
            nonlocal prefetch
            prefetch += change
            await subscription.set_prefetch(max(prefetch, 1))

        executor.on_lease = on_lease
        self.started.set()
        running: set[asyncio.Task[None]] = set()
        # The broker's prefetch bounds unsettled messages (lowered while long tasks run on
        # leases); this semaphore is the last guard that concurrency is a hard bound.
        slots = asyncio.Semaphore(self.concurrency)
        try:
            while await self._slot(slots):
                if (delivery := await self._inbox.get()) is None:
                    break
                started = start_task(executor.execute(delivery), name="taskq-execute")
                running.add(started)
                # One callback, not three: each is a turn of the loop, for every task.
                started.add_done_callback(functools.partial(self._after_task, running, slots))
            # The shutdown sequence. 1: no new deliveries; hand back those never started.
            logger.info("worker %s: stopping; %d tasks running", self.id, len(running))
            await subscription.cancel()
            for leftover in self._inbox.take_all():
                await leftover.reject(requeue=True)
            # 2: let running tasks finish, until the shutdown timeout or a forced stop.
            await self._drain(running)
        finally:
            # 3: cancel what still runs; each executor hands its task back, then ends.
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _slot(self, slots: asyncio.Semaphore) -> bool:
        """Wait for a free slot; → False if the worker stops first. Deliveries kept waiting
        that long (every slot held by long tasks on leases) are handed back after
        `lease_after`, before RabbitMQ's consumer_timeout could close the channel and
        redeliver one while its first copy is still here."""
        if not slots.locked():  # (the usual case: no timer needed)
            await slots.acquire()
            return True
        lease_after = self.app.settings.lease_after
        closing = asyncio.ensure_future(self._inbox.closing.wait())
        try:
            while True:
                acquiring = asyncio.ensure_future(slots.acquire())
                waited = self._inbox.waited_longest() or 0.0
                await asyncio.wait(
                    (acquiring, closing),
                    timeout=max(lease_after - waited, 0.0),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if acquiring.done():
                    return True
                acquiring.cancel()
                await asyncio.gather(acquiring, return_exceptions=True)
                if not acquiring.cancelled():
                    return True  # (acquired as it was being cancelled)
                if closing.done():
                    return False
                for delivery in self._inbox.take_older(lease_after):
                    await delivery.reject(requeue=True)
        finally:
            closing.cancel()

    def _hard_limits(self, executor: Executor, watchdog: health.LoopWatchdog) -> HardLimits | None:
        """The thread that ends this process past a hard limit, if any is set (started)."""
        options, settings = self.options, self.app.settings
        if options.hard_time_limit is None and options.memory_limit is None:
            return None
        limits = HardLimits(
            runs=executor.runs,
            touched=watchdog.touched,
            new_store=functools.partial(Store, settings.store_url, settings.namespace),
            worker_id=self.id,
            time_limit=options.hard_time_limit,
            memory_limit=options.memory_limit,
        )
        limits.start()
        return limits

    async def _ready(self) -> dict[str, bool]:
        return {"broker": self.app.broker.connected, "store": await self.app.store.ping()}

    def _after_task(
        self,
        running: set[asyncio.Task[None]],
        slots: asyncio.Semaphore,
        task: asyncio.Task[None],
    ) -> None:
        """The task's slot is free. Over a limit, stop taking messages; the running tasks
        finish, then the process exits and its supervisor replaces it."""
        running.discard(task)
        slots.release()
        self._completed += 1
        if self.recycled is not None:
            return
        if self.options.max_tasks is not None and self._completed >= self.options.max_tasks:
            self.recycled = (
                f"ran {self._completed} tasks (max_tasks_per_child={self.options.max_tasks})"
            )
        elif (
            self.options.max_memory is not None
            and (rss := heartbeat.rss_bytes()) > self.options.max_memory
        ):
            self.recycled = (
                f"resident memory {rss / 2**20:.0f} MiB is over max_memory_per_child "
                f"({self.options.max_memory / 2**20:.0f} MiB)"
            )
        if self.recycled is not None:
            logger.warning(
                "worker %s %s: finishing its tasks, then exiting to be replaced",
                self.id,
                self.recycled,
                extra={"action": "recycle"},
            )
            self.stop()

    async def _drain(self, running: set[asyncio.Task[None]]) -> None:
        if not running:
            return
        loop = asyncio.get_running_loop()
        deadline = (
            None
            if self.options.shutdown_timeout is None
            else loop.time() + self.options.shutdown_timeout
        )
        forced = asyncio.create_task(self._force.wait())
        try:
            while running and not forced.done():
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                await asyncio.wait(
                    {*running, forced}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            forced.cancel()
        if running:
            logger.warning(
                "worker %s: %d tasks still running at shutdown; handing them back",
                self.id,
                len(running),
                extra={"action": "shutdown_timeout"},
            )


def _queues_of(app: App) -> list[str]:
    return sorted({task.default_options.queue for task in app.tasks.values()}) or ["default"]


@contextlib.asynccontextmanager
async def running_worker(app: App, options: WorkerOptions) -> AsyncIterator[Worker]:
    """`app.worker()`: a worker running in this process for the block's duration."""
    worker = Worker(app, options)
    running = asyncio.create_task(worker.run(), name=f"taskq-worker-{worker.id}")
    started = asyncio.create_task(worker.started.wait())
    await asyncio.wait({running, started}, return_when=asyncio.FIRST_COMPLETED)
    if running.done():
        started.cancel()
        await running  # raises the reason the worker could not start
    try:
        yield worker
    finally:
        worker.stop()
        await running


def _announce_cancelled(events: EventBatcher, steps: Sequence[tuple[str, str, str]]) -> None:
    """Workflow steps a flush cancelled (a step they wait for failed): tell their waiters."""
    for task_id, name, queue in steps:
        events.add(event(task_id, TaskStatus.CANCELLED, name=name, queue=queue))
