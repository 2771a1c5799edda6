"""Wake-ups for clients waiting on tasks, driven by broker events.

Events are hints, except a signed `succeeded` event's result (signed by a key only those
who may write the rows hold): a waiter re-reads the store, the source of truth. After
a reconnect, events may have been lost on either side (this client's subscription, or a
worker's publisher), so every waiter re-reads at once and keeps re-reading often for a
while; the same happens for a task whose event binding could not be made.

Workers send every task's events under one routing key, in batches; this client binds
that key while anything is watched, and picks out the watched tasks' events here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Collection
from typing import Any

from taskq import protocol
from taskq.broker import Broker, EventSubscription, topology
from taskq.exceptions import BrokerError, ProtocolError
from taskq.signing import BadSignature, Signer, unwrap
from taskq.status import FINAL, TaskStatus
from taskq.telemetry.logs import Throttled

logger = logging.getLogger(__name__)

_NOT_FINAL = frozenset(state.value for state in TaskStatus if state not in FINAL)
_SUCCEEDED = TaskStatus.SUCCEEDED.value

# How long after a reconnect waiters distrust events and re-read the store often.
DEGRADED_AFTER_RECONNECT = 15.0
# How many recently ended tasks a client remembers (see `may_have_ended_since`).
REMEMBERED_ENDS = 4096
# How long the events key stays bound once nothing is watched: a client awaiting results
# one after another binds once, not twice (bind, unbind) per task.
UNBIND_AFTER = 5.0


@dataclasses.dataclass(eq=False)
class Watch:
    """One watcher: `changed` is set whenever a watched task may have changed, and
    `events` (if asked for) receives each event as it arrives."""

    task_ids: frozenset[str]
    changed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    # Set by events that may mean a watched task has ended (a final state, or one that only
    # says "re-read"): what a wait for a result needs, rather than every `running`.
    may_have_ended: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    # Each event as it arrives; None for an end that is not signed (the store says).
    events: asyncio.Queue[protocol.Event | None] | None = None
    bound: bool = False
    # task id → the value its `succeeded` event carried (see `protocol.result_for_event`).
    results: dict[str, list[Any]] = dataclasses.field(default_factory=dict)


class Waiter:
    def __init__(
        self, broker: Broker, signer: Signer | None = None, *, strict: bool = False
    ) -> None:
        self._broker = broker
        # Events signed by it are a worker's; others (anyone who may publish on the vhost can
        # send events) only wake waiters, who then read the store, or with `strict` (the
        # app's own TASKQ_SIGNING_KEY) are ignored.
        self._signer = signer
        self._strict = strict
        self._refused = Throttled(logger)
        self._subscription: EventSubscription | None = None
        self._watches: dict[str, set[Watch]] = {}
        # The events key is bound while anything is watched; the lock orders bind and unbind.
        self._binding = asyncio.Lock()
        self._watching = 0
        self._bound = False
        self._subscribing = asyncio.Lock()
        self._degraded_until = 0.0
        self._bound_at: float | None = None  # (monotonic) since when the binding holds
        # Tasks whose ending events arrived lately, oldest first, each with the value its
        # signed `succeeded` event carried, if any (a `result()` begun after the end was
        # heard needs no read then); when one was last dropped.
        self._recent_ends: dict[str, list[Any] | None] = {}
        self._forgot_at = 0.0
        self._unbind_later: asyncio.TimerHandle | None = None
        self._unbinding: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self._unbind_later is not None:
            self._unbind_later.cancel()
        if self._unbinding is not None:
            self._unbinding.cancel()
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            await subscription.close()

    @contextlib.asynccontextmanager
    async def watch(
        self, task_ids: Collection[str], *, with_events: bool = False
    ) -> AsyncIterator[Watch]:
        """Watch `task_ids`; bound before it is yielded, so no later event is missed."""
        watch = Watch(frozenset(task_ids), events=asyncio.Queue() if with_events else None)
        subscription = await self._ensure_subscription()
        for task_id in watch.task_ids:
            self._watches.setdefault(task_id, set()).add(watch)
            if (carried := self._recent_ends.get(task_id)) is not None:
                watch.results[task_id] = carried
        try:
            watch.bound = await self._bind(subscription)
            yield watch
        finally:
            for task_id in watch.task_ids:
                watchers = self._watches.get(task_id)
                if watchers is not None:
                    watchers.discard(watch)
                    if not watchers:
                        del self._watches[task_id]
            self._unwatched()

    def may_have_ended_since(self, watch: Watch, since: float) -> bool:
        """Whether a watched task may have ended since `since` (monotonic) without `watch`
        hearing of it. False only if the events binding held all along (made before, no
        reconnect since) and no ending event for these tasks arrived before the watch did
        (those are remembered for the last `REMEMBERED_ENDS` ended tasks)."""
        heard_all = (
            self.trusts_events(watch)
            and self._bound_at is not None
            and self._bound_at <= since
            and self._degraded_until <= since
            and self._forgot_at <= since
        )
        return not heard_all or any(task_id in self._recent_ends for task_id in watch.task_ids)

    def trusts_events(self, watch: Watch) -> bool:
        """Whether events for `watch` can be relied on to arrive (else re-read often)."""
        return watch.bound and time.monotonic() >= self._degraded_until

    async def _bind(self, subscription: EventSubscription | None) -> bool:
        self._watching += 1
        if subscription is None:
            return False
        async with self._binding:
            if not self._bound:
                try:
                    await subscription.bind(topology.EVENTS_KEY)
                    self._bound = True
                    self._bound_at = time.monotonic()
                except BrokerError as exc:
                    logger.warning("watching tasks without events: %s", exc)
            return self._bound

    def _unwatched(self) -> None:
        self._watching -= 1
        if self._watching == 0:
            if self._unbind_later is not None:
                self._unbind_later.cancel()
            self._unbind_later = asyncio.get_running_loop().call_later(
                UNBIND_AFTER, self._start_unbinding
            )

    def _start_unbinding(self) -> None:
        self._unbind_later = None
        self._unbinding = asyncio.create_task(self._unbind_if_unwatched(), name="taskq-unbind")

    async def _unbind_if_unwatched(self) -> None:
        async with self._binding:
            # Re-checked under the lock: a newer watcher may have joined meanwhile.
            if self._watching == 0 and self._bound:
                self._bound = False
                self._bound_at = None
                if self._subscription is not None:
                    with contextlib.suppress(BrokerError):
                        await self._subscription.unbind(topology.EVENTS_KEY)

    async def _ensure_subscription(self) -> EventSubscription | None:
        """The events subscription; None while the broker is out of reach (a waiter then
        re-reads the store instead, and the next watch tries again)."""
        async with self._subscribing:
            if self._subscription is None:
                try:
                    self._subscription = await self._broker.subscribe_events(
                        self._on_event, self._on_reconnect
                    )
                except BrokerError as exc:
                    logger.warning("watching tasks without events for now: %s", exc)
            return self._subscription

    def _on_event(self, body: bytes) -> None:
        if self._signer is None:
            inner, signed = unwrap(body)[0], False
        else:
            inner, signed = self._signer.check(body)
        try:
            if self._strict and not signed:
                raise BadSignature("the event is not signed by an accepted key")
            events = protocol.decode_events(inner)
        except ProtocolError as exc:
            self._refused.warning("ignored a task event: %s", exc)
            return
        for event in events:
            ending = event.state not in _NOT_FINAL
            carried = None
            if signed and event.result is not None and event.state == _SUCCEEDED:
                carried = event.result  # (a worker's)
            if ending:
                self._remember_end(event.task_id, carried)
            for watch in self._watches.get(event.task_id, ()):
                watch.changed.set()
                if ending:
                    watch.may_have_ended.set()
                    if carried is not None:
                        watch.results[event.task_id] = carried
                if watch.events is not None:
                    watch.events.put_nowait(event if signed or not ending else None)

    def _remember_end(self, task_id: str, carried: list[Any] | None) -> None:
        self._recent_ends[task_id] = carried
        if len(self._recent_ends) > REMEMBERED_ENDS:
            del self._recent_ends[next(iter(self._recent_ends))]
            self._forgot_at = time.monotonic()

    def _on_reconnect(self) -> None:
        self._degraded_until = time.monotonic() + DEGRADED_AFTER_RECONNECT
        for watches in self._watches.values():
            for watch in watches:
                watch.changed.set()
                watch.may_have_ended.set()
