"""`GET /api/events`: task events as server-sent events, for the pages' live parts.

One subscription to the broker's events serves every open page (`EventHub`): a page that
closes only leaves the hub's set of listeners, with nothing to await, so no way a browser
goes away can strand a broker queue. The first message, `ready`, comes once events are being
received, so a page that refreshes itself then has missed nothing. A comment every few
seconds keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncGenerator

from starlette.requests import Request
from starlette.responses import StreamingResponse

from taskq.app import App
from taskq.client.as_json import event_json, json_value
from taskq.client.events import TaskEvent
from taskq.exceptions import BrokerError

logger = logging.getLogger(__name__)

KEEP_ALIVE = 10.0  # seconds
BACKLOG = 1_000  # events held for a slow browser before its stream ends (it reconnects)
# Each task's latest progress report, for a page that opens between the report and the row's
# write of it (progress is written behind, up to half a second late).
RECENT_PROGRESS = 10_000
SUBSCRIBE_WITHIN = 10.0  # seconds


@dataclasses.dataclass(eq=False)
class Listener:
    """One open stream: the events it wants, waiting for it (None: the stream ends)."""

    task_id: str | None = None
    queue: str | None = None
    name: str | None = None
    arrived: asyncio.Queue[TaskEvent | None] = dataclasses.field(
        default_factory=lambda: asyncio.Queue(BACKLOG)
    )

    def offer(self, event: TaskEvent) -> bool:
        """Queue `event` if wanted; → False once this stream has ended."""
        if (
            (self.task_id is None or event.task_id == self.task_id)
            and (self.queue is None or event.queue == self.queue)
            and (self.name is None or event.name == self.name)
        ):
            try:
                self.arrived.put_nowait(event)
            except asyncio.QueueFull:  # (a browser that reads too slowly starts afresh)
                self.end()
                return False
        return True

    def end(self) -> None:
        while not self.arrived.empty():
            self.arrived.get_nowait()
        self.arrived.put_nowait(None)


class EventHub:
    """The dashboard's one subscription to task events, fanned out to every open stream."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._listeners: set[Listener] = set()
        self._progress: collections.OrderedDict[str, TaskEvent] = collections.OrderedDict()
        self._pumping: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def listen(self, listener: Listener) -> None:
        """Add `listener` once events are being received; BrokerError if they cannot be."""
        if self._pumping is None or self._pumping.done():
            self._ready = asyncio.Event()
            self._pumping = asyncio.create_task(self._pump(self._ready))
        waiting = asyncio.ensure_future(self._ready.wait())
        await asyncio.wait([waiting, self._pumping], timeout=SUBSCRIBE_WITHIN,
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        waiting.cancel()
        if not self._ready.is_set():
            raise BrokerError("cannot subscribe to task events: is the broker up?")
        self._listeners.add(listener)
        if listener.task_id is not None and (latest := self._progress.get(listener.task_id)):
            listener.offer(latest)

    def drop(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    async def close(self) -> None:
        if self._pumping is not None:
            self._pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pumping

    def _remember(self, event: TaskEvent) -> None:
        if event.kind == "progress":
            self._progress[event.task_id] = event
            self._progress.move_to_end(event.task_id)
            if len(self._progress) > RECENT_PROGRESS:
                self._progress.popitem(last=False)
        elif event.state.is_final:
            self._progress.pop(event.task_id, None)

    async def _pump(self, ready: asyncio.Event) -> None:
        try:
            async for event in self._app.events(ready=ready):
                self._remember(event)
                for listener in list(self._listeners):
                    if not listener.offer(event):
                        self._listeners.discard(listener)
        except Exception as exc:  # (the broker went away: every stream ends; browsers retry)
            logger.warning("dashboard: the task events stopped: %s", exc)
        finally:
            for listener in self._listeners:
                listener.end()
            self._listeners.clear()


async def event_stream(hub: EventHub, request: Request) -> StreamingResponse:
    """Events of every task, or of the task / queue / task name the query names."""
    params = request.query_params
    listener = Listener(params.get("task") or None, params.get("queue") or None,
                        params.get("name") or None)  # fmt: skip
    await hub.listen(listener)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(lines(hub, listener), media_type="text/event-stream", headers=headers)


async def lines(hub: EventHub, listener: Listener) -> AsyncGenerator[str, None]:
    """The stream's text: `ready`, then each event, until the browser goes (or the hub ends
    it); leaving only drops the listener, which nothing can interrupt."""
    try:
        yield "retry: 2000\n\n"
        yield "event: ready\ndata: {}\n\n"
        while True:
            try:
                event = await asyncio.wait_for(listener.arrived.get(), KEEP_ALIVE)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if event is None:
                return
            data = json.dumps(event_json(event), default=json_value)
            yield f"event: task\ndata: {data}\n\n"
    finally:
        hub.drop(listener)
