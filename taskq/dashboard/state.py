"""What every request of one dashboard shares."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from taskq.app import App
from taskq.dashboard.access import Access
from taskq.dashboard.stream import EventHub


class Dashboard:
    """What every request shares: the taskq client (opened on first use, so a dashboard
    mounted in another app, whose lifespan it never sees, works too), who may act, and the
    one subscription to task events that every open page shares."""

    def __init__(self, app: App, access: Access) -> None:
        self.access = access
        self.events = EventHub(app)
        self._app = app
        self._opening = asyncio.Lock()

    async def client(self) -> App:
        if not self._app.runtime.is_open:
            async with self._opening:
                await self._app.open()
        return self._app

    async def close(self) -> None:
        await self.events.close()
        await self._app.close()


def dashboard_of(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard
