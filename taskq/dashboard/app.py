"""The dashboard's ASGI app: `create_app()` for `taskq dashboard`, or to mount in your own.

from starlette.applications import Starlette
from starlette.routing import Mount
import taskq.dashboard

site = Starlette(routes=[Mount("/taskq", taskq.dashboard.create_app())])
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import ClassVar

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskq.app import App
from taskq.config import secret_from_env
from taskq.dashboard import api, errors, pages
from taskq.dashboard.access import Access
from taskq.dashboard.state import Dashboard


def create_app(app: App | None = None, *, token: str | None = None) -> Starlette:
    """The dashboard over `app`'s broker and store (default: an `App()` configured from
    TASKQ_BROKER_URL and TASKQ_STORE_URL). Actions need `token`, else TASKQ_DASHBOARD_TOKEN
    (or the file TASKQ_DASHBOARD_TOKEN_FILE names); with neither it is read-only."""
    dashboard = Dashboard(app or App(), Access(token or secret_from_env("dashboard_token")))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await dashboard.close()

    site = Starlette(
        routes=[*pages.routes(), *api.routes()],
        lifespan=lifespan,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers=errors.handlers(),  # type: ignore[arg-type]
    )
    site.state.dashboard = dashboard
    return site


class SecurityHeaders:
    """No script but the dashboard's own file, no framing, no sniffing, no referrer sent
    elsewhere: the pages show values any task submitter chose."""

    HEADERS: ClassVar[list[tuple[bytes, bytes]]] = [
        (
            b"content-security-policy",
            b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
        (b"x-frame-options", b"DENY"),
    ]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)
