"""Hard limits, enforced from outside the event loop: a task that blocks the loop (an
`async def` that never yields: its `timeout` cannot cancel it) or takes the process's memory
past a limit ends the worker process.

A thread samples every SAMPLE seconds. On a breach it charges the task to blame, if it can
tell which (the one whose code is on the blocked loop's stack, or the only task running):
that attempt is stored `failed` (`TimeLimitExceeded` or `MemoryLimitExceeded`), fenced by
its attempt number, from a connection of the thread's own. Then the process exits with
LIMIT_EXIT, for its supervisor (or systemd, Docker) to replace it. The task's message comes
back to a worker, finds its row final and goes to the dead letters; it never runs again. A
task it could not tell apart from others runs again alone (see `isolation`), where the next
breach charges it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import psutil

from taskq.status import TaskStatus
from taskq.store import Outcome, Store, TaskError
from taskq.worker.running import Run, Runs

logger = logging.getLogger(__name__)

SAMPLE = 0.2
LIMIT_EXIT = 4  # the process ended itself at a hard limit
RECORD_TIMEOUT = 5.0


class HardLimits:
    """Watches the loop, the task threads' times and the memory; see the module's docstring.

    `touched()` gives the monotonic time the loop last turned (the loop watchdog's)."""

    def __init__(
        self,
        *,
        runs: Runs,
        touched: Callable[[], float],
        new_store: Callable[[], Store],
        worker_id: str,
        time_limit: float | None,
        memory_limit: int | None,
        exit: Callable[[int], object] = os._exit,
    ) -> None:
        self._runs, self._touched = runs, touched
        self._new_store, self._worker_id = new_store, worker_id
        self._time_limit, self._memory_limit = time_limit, memory_limit
        self._exit = exit
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="taskq-limits", daemon=True)

    def start(self) -> None:
        """Start watching (call it on the loop's thread)."""
        self._loop_thread = threading.get_ident()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        process = psutil.Process()
        while not self._stop.wait(SAMPLE):
            breach = self._breach(process)
            if breach is not None:
                self._end(*breach)
                return

    def _breach(self, process: psutil.Process) -> tuple[str, str, Run | None] | None:
        """(error type, why, the run to charge) if a limit is passed, else None."""
        if self._time_limit is not None:
            stalled = time.monotonic() - self._touched()
            if stalled >= self._time_limit:
                frame = sys._current_frames().get(self._loop_thread)
                culprit = None if frame is None else self._runs.culprit(frame)
                why = f"it kept the event loop blocked for {stalled:.1f} s"
                return "TimeLimitExceeded", why, culprit or self._runs.only()
        if self._memory_limit is not None:
            rss = process.memory_info().rss
            if rss >= self._memory_limit:
                frame = sys._current_frames().get(self._loop_thread)
                culprit = None if frame is None else self._runs.culprit(frame)
                why = (
                    f"the worker's resident memory reached {rss / 2**20:.0f} MiB, over its "
                    f"limit of {self._memory_limit / 2**20:.0f} MiB"
                )
                return "MemoryLimitExceeded", why, culprit or self._runs.only()
        return None

    def _end(self, error_type: str, why: str, run: Run | None) -> None:
        blamed = "" if run is None else f" by task {run.name}[{run.task_id}]"
        logger.critical(
            "hard limit passed%s: %s; ending this worker process (exit code %d) for it to be "
            "replaced",
            blamed,
            why,
            LIMIT_EXIT,
            extra={"action": "hard_limit", "task_id": None if run is None else run.task_id},
        )
        if run is not None:
            try:
                asyncio.run(self._charge(run, TaskError(error_type, f"the task was ended: {why}")))
            except Exception as exc:  # (the process ends anyway: the task runs again, alone)
                logger.error("could not record the limit on task %s: %r", run.task_id, exc)
        logging.shutdown()
        self._exit(LIMIT_EXIT)

    async def _charge(self, run: Run, error: TaskError) -> None:
        reason = "time_limit" if error.type == "TimeLimitExceeded" else "memory_limit"
        outcome = Outcome(
            task_id=run.task_id,
            attempt=run.attempt,
            state=TaskStatus.FAILED,
            error=error,
            dead_reason=reason,
            worker_id=self._worker_id,
            started_at=datetime.now(UTC),
        )
        store = self._new_store()  # (its own: the loop's is stuck)
        try:
            async with asyncio.timeout(RECORD_TIMEOUT):
                await store.open()
                await store.write([], [outcome])
        finally:
            await store.close()
