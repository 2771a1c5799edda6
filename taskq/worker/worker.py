"""Worker: consumes queues with bounded concurrency and runs each delivery's executor.

The bound is the broker's prefetch: the broker never hands over more unsettled messages
than there are slots, and a slot is freed only when its message is settled, so at most
`concurrency` tasks run and the local buffer never holds more than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from taskq import protocol
from taskq.broker import Delivery
from taskq.exceptions import ProtocolError
from taskq.scheduler import LeaderWork, campaign
from taskq.worker import heartbeat
from taskq.worker.executor import Executor

if TYPE_CHECKING:
    from taskq.app import App

logger = logging.getLogger(__name__)


class Worker:
    """Runs tasks from `queues` until `stop()`; then finishes what it started."""

    def __init__(
        self,
        app: App,
        *,
        concurrency: int = 10,
        queues: Sequence[str] | None = None,
        scheduler: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.app = app
        self.concurrency = concurrency
        self.queues = list(queues or _queues_of(app))
        self.scheduler = scheduler
        self.id = heartbeat.new_process_id()
        self.started = asyncio.Event()
        self._deliveries: asyncio.Queue[Delivery | None] = asyncio.Queue()

    def __repr__(self) -> str:
        return f"<Worker {self.id} queues={self.queues} concurrency={self.concurrency}>"

    def stop(self) -> None:
        """Stop taking messages; `run()` returns once running tasks are done."""
        self._deliveries.put_nowait(None)

    async def run(self) -> None:
        app = self.app
        for queue in self.queues:
            await app.declare(queue)
        writer = app.store.writer(flush_interval=app.settings.flush_interval)
        threads = ThreadPoolExecutor(self.concurrency, thread_name_prefix="taskq-task")
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
        )
        logger.info(
            "worker %s consuming %s with concurrency %d",
            self.id,
            self.queues,
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
                    concurrency=self.concurrency,
                    lease_duration=app.settings.lease_duration,
                ),
                asyncio.TaskGroup() as side,
            ):
                side.create_task(writer.run(), name="taskq-writer")
                candidate = None
                if self.scheduler:  # every worker stands for leadership unless told not to
                    lead = LeaderWork(app, self.id).run
                    candidate = side.create_task(
                        campaign(app.store, self.id, lead), name="taskq-candidate"
                    )
                control = await app.broker.subscribe_control(
                    lambda body: _on_control(executor, body)
                )
                try:
                    await self._consume(executor)
                finally:
                    await control.cancel()
                    if candidate is not None:
                        candidate.cancel()
                    writer.close()  # flushes what is left, then its loop ends
        finally:
            threads.shutdown(wait=False, cancel_futures=True)
            logger.info("worker %s stopped", self.id, extra={"action": "stop_worker"})

    async def _consume(self, executor: Executor) -> None:
        subscription = await self.app.broker.consume(
            self.queues,
            prefetch=self.concurrency,
            on_delivery=self._deliveries.put_nowait,
        )
        self.started.set()
        async with asyncio.TaskGroup() as running:
            while (delivery := await self._deliveries.get()) is not None:
                running.create_task(executor.execute(delivery), name="taskq-execute")
            # Stop: no new deliveries; hand back the ones that arrived but never started.
            await subscription.cancel()
            while not self._deliveries.empty():
                if (leftover := self._deliveries.get_nowait()) is not None:
                    await leftover.reject(requeue=True)
        # Leaving the TaskGroup waited for every running task to be stored and settled.


def _on_control(executor: Executor, body: bytes) -> None:
    try:
        command, task_id = protocol.decode_control(body)
    except ProtocolError as exc:
        logger.warning("ignored a malformed control message: %s", exc)
        return
    if command == "cancel":
        executor.cancel(task_id)


def _queues_of(app: App) -> list[str]:
    return sorted({task.default_options.queue for task in app.tasks.values()}) or ["default"]


@contextlib.asynccontextmanager
async def running_worker(
    app: App, *, concurrency: int, queues: Sequence[str] | None, scheduler: bool
) -> AsyncIterator[Worker]:
    """`app.worker()`: a worker running in this process for the block's duration."""
    worker = Worker(app, concurrency=concurrency, queues=queues, scheduler=scheduler)
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
