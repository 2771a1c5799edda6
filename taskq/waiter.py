"""Wake-ups for handles waiting on tasks, driven by broker events.

Events are hints: a waiter always re-reads the store, which is the source of truth. After
a reconnect, events may have been lost on either side (this client's subscription, or a
worker's publisher), so every waiter re-reads at once and keeps re-reading often for a
while; the same happens for a task whose event binding could not be made.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator

from taskq import protocol
from taskq.broker import Broker, EventSubscription, topology
from taskq.exceptions import BrokerError, ProtocolError

logger = logging.getLogger(__name__)

# How long after a reconnect waiters distrust events and re-read the store often.
DEGRADED_AFTER_RECONNECT = 15.0


@dataclasses.dataclass(eq=False)
class _Watched:
    """One task's watchers and its binding; the lock orders its bind and unbind."""

    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    watchers: set[asyncio.Event] = dataclasses.field(default_factory=set)
    bound: bool = False


class Waiter:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._subscription: EventSubscription | None = None
        self._watched: dict[str, _Watched] = {}
        self._subscribing = asyncio.Lock()
        self._degraded_until = 0.0

    async def close(self) -> None:
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            await subscription.close()

    @contextlib.asynccontextmanager
    async def watch(self, task_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever `task_id` may have changed; bound before it is yielded."""
        changed = asyncio.Event()
        subscription = await self._ensure_subscription()
        watched = self._watched.setdefault(task_id, _Watched())
        watched.watchers.add(changed)
        key = topology.event_key(task_id)
        try:
            async with watched.lock:
                if not watched.bound:
                    try:
                        await subscription.bind(key)
                        watched.bound = True
                    except BrokerError as exc:
                        logger.warning("waiting on task %s without events: %s", task_id, exc)
            yield changed
        finally:
            watched.watchers.discard(changed)
            async with watched.lock:
                # Re-checked under the lock: a newer watcher may have joined meanwhile.
                if not watched.watchers:
                    if watched.bound and self._subscription is not None:
                        with contextlib.suppress(BrokerError):
                            await self._subscription.unbind(key)
                    watched.bound = False
                    if not watched.watchers and self._watched.get(task_id) is watched:
                        del self._watched[task_id]

    def trusts_events(self, task_id: str) -> bool:
        """Whether an event for `task_id` can be relied on to arrive (else re-read often)."""
        watched = self._watched.get(task_id)
        bound = watched is not None and watched.bound
        return bound and time.monotonic() >= self._degraded_until

    async def _ensure_subscription(self) -> EventSubscription:
        async with self._subscribing:
            if self._subscription is None:
                self._subscription = await self._broker.subscribe_events(
                    self._on_event, self._on_reconnect
                )
            return self._subscription

    def _on_event(self, body: bytes) -> None:
        try:
            task_id, _state = protocol.decode_event(body)
        except ProtocolError as exc:
            logger.warning("ignored a malformed task event: %s", exc)
            return
        if (watched := self._watched.get(task_id)) is not None:
            for changed in watched.watchers:
                changed.set()

    def _on_reconnect(self) -> None:
        self._degraded_until = time.monotonic() + DEGRADED_AFTER_RECONNECT
        for watched in self._watched.values():
            for changed in watched.watchers:
                changed.set()
