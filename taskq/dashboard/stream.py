"""`GET /api/events`: task events as server-sent events, for the pages' live parts.

The first message, `ready`, comes once events are being received, so a page that refreshes
itself then has missed nothing. A comment every few seconds keeps proxies from closing an
idle stream, and shows the server that a browser has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator

from starlette.requests import Request
from starlette.responses import StreamingResponse

from taskq.app import App
from taskq.client.as_json import event_json, json_value
from taskq.client.events import TaskEvent

logger = logging.getLogger(__name__)

KEEP_ALIVE = 10.0  # seconds
BACKLOG = 1_000  # events held for a slow browser before the stream ends (it reconnects)


def event_stream(app: App, request: Request) -> StreamingResponse:
    """Events of every task, or of the task / queue / task name the query names."""
    params = request.query_params
    task_id = params.get("task") or None
    lines = _lines(app, task_id, params.get("queue") or None, params.get("name") or None)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(lines, media_type="text/event-stream", headers=headers)


async def _lines(
    app: App, task_id: str | None, queue: str | None, name: str | None
) -> AsyncGenerator[str, None]:
    arrived: asyncio.Queue[TaskEvent | None] = asyncio.Queue(BACKLOG)
    ready = asyncio.Event()

    async def pump() -> None:
        try:
            async for event in app.events(queue=queue, task=name, ready=ready):
                if task_id is None or event.task_id == task_id:
                    arrived.put_nowait(event)
        except asyncio.QueueFull:
            pass  # (the browser reads too slowly: end the stream, it reconnects)
        except Exception as exc:  # (the broker went away: end the stream, it reconnects)
            logger.warning("dashboard: an event stream ended: %s", exc)
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                arrived.put_nowait(None)

    pumping = asyncio.create_task(pump())
    try:
        yield "retry: 2000\n\n"
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait([waiting, pumping], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not ready.is_set():
            return  # (the broker refused the subscription: the browser retries)
        yield "event: ready\ndata: {}\n\n"
        while True:
            try:
                event = await asyncio.wait_for(arrived.get(), KEEP_ALIVE)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if event is None:
                return
            data = json.dumps(event_json(event), default=json_value)
            yield f"event: task\ndata: {data}\n\n"
    finally:
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumping
