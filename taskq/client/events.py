"""Task events: what `handle.events()`, `app.events()` and `taskq events` yield.

Events travel on the broker's events exchange as hints; every state they report is
already durable in the store when they are sent (progress is written behind, coalesced).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from taskq import protocol
from taskq.broker import topology
from taskq.exceptions import ProtocolError, TaskqError
from taskq.signing import Signer, open_message
from taskq.status import TaskStatus

if TYPE_CHECKING:
    from taskq.broker import Broker
    from taskq.store import TaskRecord

logger = logging.getLogger(__name__)

TAIL_BUFFER = 10_000  # messages held for a slow reader of `app.events()`
MAX_BATCH = 1_000  # events per message


# Rebuilds progress data as sent (`Serializer.load`); by default, left as on the wire.
Load = Callable[[Any], Any]


def _as_sent(data: Any) -> Any:
    return data


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TaskEvent:
    """One state change (`kind="state"`) or progress update (`kind="progress"`) of a task."""

    kind: Literal["state", "progress"]
    task_id: str
    state: TaskStatus
    name: str
    queue: str
    attempt: int
    at: datetime
    progress: float | None = None
    message: str | None = None
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # The progress update's number within its attempt (1, 2, ...); 0 for state changes.
    seq: int = 0

    @property
    def is_final(self) -> bool:
        return self.kind == "state" and self.state.is_final

    @classmethod
    def from_wire(cls, event: protocol.Event, load: Load = _as_sent) -> TaskEvent | None:
        """The public event, or None for a bare "re-read the store" hint; `load` rebuilds
        its progress data (`Serializer.load`)."""
        try:
            state = TaskStatus(event.state)
        except ValueError:
            return None
        return cls(
            kind="state" if event.progress is None else "progress",
            task_id=event.task_id,
            state=state,
            name=event.name,
            queue=event.queue,
            attempt=event.attempt,
            at=datetime.fromtimestamp(event.at or time.time(), UTC),
            progress=event.progress,
            message=event.message,
            data=load(event.data) if event.data else {},
            seq=event.seq,
        )

    @classmethod
    def state_of(cls, record: TaskRecord) -> TaskEvent:
        """The current state as the store has it (filling in events a watcher missed)."""
        changed = record.finished_at or record.started_at or record.created_at
        return cls(
            kind="state",
            task_id=record.id,
            state=record.state,
            name=record.name,
            queue=record.queue,
            attempt=record.attempts,
            at=changed,
        )

    @classmethod
    def progress_of(cls, record: TaskRecord, load: Load = _as_sent) -> TaskEvent | None:
        """The latest stored progress of a running task, if it reported any."""
        stored = record.progress
        if record.state is not TaskStatus.RUNNING or not stored:
            return None
        at = stored.get("at")
        return cls(
            kind="progress",
            task_id=record.id,
            state=record.state,
            name=record.name,
            queue=record.queue,
            attempt=record.attempts,
            at=datetime.fromtimestamp(at, UTC)
            if isinstance(at, int | float)
            else record.created_at,
            progress=stored.get("fraction"),
            message=stored.get("message"),
            data=load(stored["data"]) if stored.get("data") else {},
            seq=stored.get("n", 0),
        )


def event(
    task_id: str,
    state: TaskStatus | None,
    *,
    name: str = "",
    queue: str = "",
    attempt: int = 0,
    **details: Any,
) -> protocol.Event:
    """Every task event taskq sends is made here, stamped now unless `details` give `at`.
    `state` None: the sender does not know it (watchers re-read the store); `details` are
    progress fields or a small result."""
    details.setdefault("at", time.time())  # (stamped later, it would cost a copy)
    return protocol.Event(
        task_id=task_id,
        state="" if state is None else state.value,
        name=name,
        queue=queue,
        attempt=attempt,
        **details,
    )


def task_event(
    envelope: protocol.Envelope, state: TaskStatus | None, **details: Any
) -> protocol.Event:
    """`event` for the task this message carries."""
    return event(envelope.id, state, name=envelope.task, queue=envelope.queue, **details)


def queued(record: TaskRecord) -> protocol.Event:
    """The event of a stored task just published (its attempts so far say which run next)."""
    return event(
        record.id, TaskStatus.QUEUED, name=record.name, queue=record.queue, attempt=record.attempts
    )


async def announce_many(
    broker: Broker, events: Sequence[protocol.Event], signer: Signer | None = None
) -> None:
    """Publish events in one message (signed, with a signer); never raises (events are
    hints, the store has the facts)."""
    if not events:
        return
    now = time.time()
    stamped = [event if event.at else dataclasses.replace(event, at=now) for event in events]
    body = protocol.encode_events(stamped)
    if signer is not None:
        body = signer.sign(body)
    try:
        await broker.publish_event(topology.EVENTS_KEY, body)
    except TaskqError as exc:
        logger.warning("%d task events not sent: %s", len(events), exc)


async def announce(broker: Broker, event: protocol.Event, signer: Signer | None = None) -> None:
    await announce_many(broker, [event], signer)


class EventBatcher:
    """Events added in one turn of the event loop go out as one message, in order, at the
    end of the turn: a worker's (a store flush resolves many tasks at once) and a client's
    (concurrent submits). `announce` also waits until its message is written, so what its
    caller sends next follows it."""

    def __init__(self, broker: Broker, signer: Signer | None = None) -> None:
        self._broker = broker
        self._signer = signer
        self._pending: list[protocol.Event] = []
        self._sending: asyncio.Future[None] | None = None

    def add(self, event: protocol.Event) -> asyncio.Future[None]:
        """Queue `event`; → a future done once it has been sent."""
        if not event.at:
            event = dataclasses.replace(event, at=time.time())
        self._pending.append(event)
        if self._sending is None:
            self._sending = asyncio.ensure_future(self._send())
        return self._sending

    async def announce(self, event: protocol.Event) -> None:
        # Shielded: a caller cancelled while waiting must not cancel the others' message.
        await asyncio.shield(self.add(event))

    async def drain(self) -> None:
        """Return once everything added so far has been sent."""
        if self._sending is not None:
            await asyncio.shield(self._sending)

    async def _send(self) -> None:
        try:
            await asyncio.sleep(0)  # the rest of this turn's events join
            while self._pending:  # (events added while one message is sent go in the next)
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                await announce_many(self._broker, batch, self._signer)
        finally:
            self._sending = None


async def tail_events(
    broker: Broker,
    *,
    queue: str | None = None,
    task: str | None = None,
    signer: Signer | None = None,
    load: Load = _as_sent,
    ready: asyncio.Event | None = None,
) -> AsyncIterator[TaskEvent]:
    """Every task's events from now on (those of `queue` / task name `task` if given);
    `ready` is set once they are being received (nothing sent after that is missed)."""
    arrived: asyncio.Queue[bytes] = asyncio.Queue()

    def on_event(body: bytes) -> None:
        if arrived.qsize() >= TAIL_BUFFER:
            logger.warning("events are arriving faster than they are read: one dropped")
            return
        arrived.put_nowait(body)

    def on_reconnect() -> None:
        logger.warning("reconnected to the broker: events sent meanwhile were missed")

    subscription = await broker.subscribe_events(on_event, on_reconnect)
    try:
        await subscription.bind(topology.EVENTS_KEY)
        if ready is not None:
            ready.set()
        while True:
            try:
                wires = protocol.decode_events(open_message(signer, await arrived.get()))
            except ProtocolError as exc:
                logger.warning("ignored a malformed task event: %s", exc)
                continue
            for wire in wires:
                event = TaskEvent.from_wire(wire, load)
                if event is None:
                    continue
                if (queue is None or event.queue == queue) and (task is None or event.name == task):
                    yield event
    finally:
        await subscription.close()
