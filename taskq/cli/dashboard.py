"""`taskq dashboard`: serve the web dashboard (the `taskq[dashboard]` extra)."""

from __future__ import annotations

from typing import Annotated

import typer

from taskq.app import App
from taskq.cli.common import BrokerUrl, StoreUrl, fail, out, settings_from
from taskq.config import redact_url, secret_from_env


def dashboard(
    host: Annotated[
        str, typer.Option(help="The address to listen on (another than 127.0.0.1 exposes it).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="The port to listen on.")] = 8080,
    broker_url: BrokerUrl = None,
    store_url: StoreUrl = None,
) -> None:
    """Serve the web dashboard: tasks, queues, workers, dead letters, schedules and workflows,
    live. Actions (cancel, retry, replay, purge) need TASKQ_DASHBOARD_TOKEN (or _FILE)."""
    try:
        import uvicorn

        from taskq.dashboard import create_app
    except ImportError as exc:
        fail(f"the dashboard needs its extra ({exc.name} is missing): "
             "pip install 'taskq[dashboard]'")  # fmt: skip
    settings = settings_from(broker_url=broker_url, store_url=store_url)
    if settings.broker_url.startswith("memory:"):
        fail("the dashboard needs the broker your workers use: set TASKQ_BROKER_URL "
             "(the memory broker lives inside one process)")  # fmt: skip
    token = secret_from_env("dashboard_token")
    app = App(settings.broker_url, settings.store_url)
    out().print(
        f"taskq dashboard on http://{host}:{port}/ over {redact_url(settings.store_url)}; "
        + ("actions need the token" if token else "read-only (no TASKQ_DASHBOARD_TOKEN)")
    )
    uvicorn.run(create_app(app, token=token), host=host, port=port, log_level="warning")
