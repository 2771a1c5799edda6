"""Wake-ups for handles waiting on tasks, driven by broker events.

Events are hints: a waiter always re-reads the store, which is the source of truth. A
reconnect (when events may have been lost) wakes every waiter so each re-reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from taskq import protocol
from taskq.broker import Broker, EventSubscription, topology
from taskq.exceptions import ProtocolError

logger = logging.getLogger(__name__)


class Waiter:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._subscription: EventSubscription | None = None
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            await subscription.close()

    @contextlib.asynccontextmanager
    async def watch(self, task_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever `task_id` may have changed; bound before it is yielded."""
        changed = asyncio.Event()
        subscription = await self._ensure_subscription()
        watchers = self._watchers.setdefault(task_id, set())
        if not watchers:
            await subscription.bind(topology.event_key(task_id))
        watchers.add(changed)
        try:
            yield changed
        finally:
            watchers.discard(changed)
            if not watchers:
                del self._watchers[task_id]
                if self._subscription is not None:
                    await self._subscription.unbind(topology.event_key(task_id))

    async def _ensure_subscription(self) -> EventSubscription:
        async with self._lock:
            if self._subscription is None:
                self._subscription = await self._broker.subscribe_events(
                    self._on_event, self._wake_all
                )
            return self._subscription

    def _on_event(self, body: bytes) -> None:
        try:
            task_id, _state = protocol.decode_event(body)
        except ProtocolError as exc:
            logger.warning("ignored a malformed task event: %s", exc)
            return
        for changed in self._watchers.get(task_id, ()):
            changed.set()

    def _wake_all(self) -> None:
        for watchers in self._watchers.values():
            for changed in watchers:
                changed.set()
