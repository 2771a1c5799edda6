"""Whether the broker and the store answer, as seen from a supervisor, for its /readyz.

The supervisor runs no task, but its probe speaks for its children, which need both: it
keeps one broker connection (reconnecting by itself) and one store of its own, opened on
the first probe and again after a failure, each check bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib

from taskq import broker as brokers
from taskq.config import Settings
from taskq.exceptions import TaskqError
from taskq.store import Store

CHECK_TIMEOUT = 2.0


class Reachability:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._broker: brokers.Broker | None = None
        self._store: Store | None = None

    async def check(self) -> dict[str, bool]:
        broker, store = await asyncio.gather(self._broker_up(), self._store_up())
        return {"broker": broker, "store": store}

    async def close(self) -> None:
        if self._broker is not None:
            await self._broker.close()
        if self._store is not None:
            await self._store.close()

    async def _broker_up(self) -> bool:
        if self._broker is None:
            settings = self._settings
            broker = brokers.from_settings(settings, publish_timeout=CHECK_TIMEOUT)
            try:
                async with asyncio.timeout(CHECK_TIMEOUT):
                    await broker.connect()
            except (TaskqError, TimeoutError):
                with contextlib.suppress(TaskqError):
                    await broker.close()
                return False
            self._broker = broker
        return self._broker.connected

    async def _store_up(self) -> bool:
        if self._store is None:
            store = Store(self._settings.store_url, self._settings.namespace)
            try:
                async with asyncio.timeout(CHECK_TIMEOUT):
                    await store.open()
            except (TaskqError, TimeoutError):
                await store.close()
                return False
            self._store = store
        return await self._store.ping(within=CHECK_TIMEOUT)
