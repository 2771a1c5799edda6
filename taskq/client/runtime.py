"""What an open app holds: the lower client modules take this, never the whole `App`.

Settings, the broker, the store, the waiter and the event publisher. One `Runtime` lives as
long as its `App`; closing and reopening the app refills it, so handles made earlier keep
working after a reopen, as they did when they held the app.
"""

from __future__ import annotations

from collections.abc import Sequence

from taskq import broker as brokers
from taskq import middleware, signing
from taskq.client.events import EventBatcher
from taskq.client.sync import SyncBridge
from taskq.client.waiter import Waiter
from taskq.config import Settings
from taskq.exceptions import AppNotOpen
from taskq.serializer import Serializer
from taskq.store import Store


class Runtime:
    """The connections of one app, and the queues it has declared since it opened."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Task values beyond msgpack's (`app.serializer`): registrations last across opens.
        self.serializer = Serializer()
        # Signs task messages and events, and verifies them (None: TASKQ_SIGNING_KEY unset).
        self.signer = signing.Signer.from_setting(settings.signing_key)
        # Signs and verifies events: `signer`, else the store's key (set at `open()`).
        self.event_signer = self.signer
        self._broker: brokers.Broker | None = None
        self._store: Store | None = None
        self._waiter: Waiter | None = None
        self._events: EventBatcher | None = None
        self._declared: set[str] = set()
        # The background loop of sync callers (set by the app, which knows how to open).
        self.sync: SyncBridge
        # Set at `open()`: the app's middleware, and the submit chain through it.
        self.middleware: tuple[middleware.Middleware, ...] = ()
        self._submit: middleware.SubmitNext | None = None

    @property
    def is_open(self) -> bool:
        return self._store is not None

    async def open(
        self, middlewares: Sequence[middleware.Middleware], submit: middleware.SubmitNext
    ) -> None:
        """Connect to the store (checking its schema), then the broker; `submit` ends the
        chain of submit middleware, composed here once."""
        if self._store is not None:
            return
        self.middleware = tuple(middlewares)
        self._submit = middleware.compose_submit(self.middleware, submit)
        store = Store(self.settings.store_url, self.settings.namespace)
        await store.open()
        broker = brokers.from_settings(self.settings)
        try:
            await broker.connect()
        except BaseException:
            await store.close()
            raise
        self._store, self._broker = store, broker
        self.event_signer = self.signer or signing.Signer([store.event_key])
        self._waiter = Waiter(broker, self.event_signer, strict=self.signer is not None)
        self._events = EventBatcher(broker, self.event_signer)
        self._declared.clear()

    async def close(self) -> None:
        waiter, broker, store = self._waiter, self._broker, self._store
        if self._events is not None:
            await self._events.drain()
        self._waiter = self._broker = self._store = self._events = None
        if waiter is not None:
            await waiter.close()
        if broker is not None:
            await broker.close()
        if store is not None:
            await store.close()

    async def submit(self, submission: middleware.Submission) -> str:
        """Through the app's submit middleware to the store and the broker; → the task id."""
        if self._submit is None or self._store is None:
            raise AppNotOpen()
        return await self._submit(submission)

    @property
    def store(self) -> Store:
        if self._store is None:
            raise AppNotOpen()
        return self._store

    @property
    def broker(self) -> brokers.Broker:
        if self._broker is None:
            raise AppNotOpen()
        return self._broker

    @property
    def waiter(self) -> Waiter:
        if self._waiter is None:
            raise AppNotOpen()
        return self._waiter

    @property
    def events(self) -> EventBatcher:
        """Sends this client's task events (`queued`), those of one loop turn together."""
        if self._events is None:
            raise AppNotOpen()
        return self._events

    async def declare(self, queue: str) -> None:
        """Make sure `queue` (and its dead-letter queue) exists on the broker."""
        if queue not in self._declared:
            await self.broker.declare(queue)
            self._declared.add(queue)
