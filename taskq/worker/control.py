"""Control messages to workers (a cancel). Anyone who may publish on the vhost can send one,
so a worker acts on a cancel only once the task's row says that it was asked for: the
client sets `cancel_requested_at` before it sends the message."""

from __future__ import annotations

import asyncio
import logging
import time

from taskq import protocol
from taskq.exceptions import ProtocolError, StoreError
from taskq.store import Store
from taskq.telemetry.logs import Throttled
from taskq.worker.running import Runs

logger = logging.getLogger(__name__)

# How long a cancel is checked again while the store cannot be read.
CHECK_FOR = 60.0


class Control:
    """Receives a worker's control messages and cancels what the store confirms."""

    def __init__(self, store: Store, runs: Runs) -> None:
        self._store = store
        self._runs = runs
        self._checks: set[asyncio.Task[None]] = set()
        self._refused = Throttled(logger)

    def on_message(self, body: bytes) -> None:
        try:
            command, task_id = protocol.decode_control(body)
        except ProtocolError as exc:
            self._refused.warning("ignored a malformed control message: %s", exc)
            return
        if command == "cancel":
            check = asyncio.get_running_loop().create_task(self._cancel_if_asked(task_id))
            self._checks.add(check)
            check.add_done_callback(self._checks.discard)

    async def close(self) -> None:
        for check in list(self._checks):
            check.cancel()
        await asyncio.gather(*self._checks, return_exceptions=True)

    async def _cancel_if_asked(self, task_id: str) -> None:
        deadline = time.monotonic() + CHECK_FOR
        while True:
            try:
                record = await self._store.get_task(task_id)
                break
            except StoreError as exc:
                if time.monotonic() >= deadline:
                    logger.warning("could not check a cancel request for %s: %s", task_id, exc)
                    return
                await asyncio.sleep(1.0)
        if record is None or record.cancel_requested_at is None:
            self._refused.warning(
                "ignored a cancel of %s: its row records no cancel request", task_id
            )
            return
        self._runs.cancel(task_id)
