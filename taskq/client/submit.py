"""Submitting tasks: validate, store the rows, then publish (or leave them `scheduled`).

Three ways in: one task (`submit`), a batch (`submit_many`: one insert, pipelined
publishes), and a task written inside the caller's own transaction, which the leader
publishes once that transaction has committed (the outbox pattern).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from taskq import middleware, protocol
from taskq.broker import topology
from taskq.client import events, limits
from taskq.client.rows import envelope_of, new_task_row
from taskq.exceptions import (
    BrokerConnectionError,
    BrokerError,
    ConfigurationError,
    PublishError,
    PublishUnconfirmed,
    TaskqError,
)
from taskq.status import TaskStatus
from taskq.store import Store, TaskError
from taskq.telemetry import metrics, tracing

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    from taskq.client.options import TaskOptions
    from taskq.client.runtime import Runtime

logger = logging.getLogger(__name__)

# Rows published per transaction by `publish_scheduled` (workers claiming them wait for it).
PUBLISH_CHUNK = 500


async def submit(runtime: Runtime, submission: middleware.Submission) -> str:
    """The end of the submit chain: store and publish one task whose arguments the task
    checked. → the task id (an earlier task's, if its idempotency key was used before)."""
    options = submission.options
    check_options(options, runtime.settings.max_priority)
    run_at = due_time(options)
    envelope = make_envelope(runtime, submission, where=f"task {submission.name!r}")
    span, traced = tracing.start_send(envelope)
    try:
        body = protocol.encode(traced, max_bytes=runtime.settings.max_payload_bytes)
        if options.transaction is not None:
            task_id = await _submit_in_transaction(
                runtime.store, options.transaction, traced, run_at, options
            )
        else:
            task_id = await _store_and_publish(runtime, traced, body, run_at, options)
    except BaseException as exc:
        tracing.end(span, exc)
        raise
    if task_id == envelope.id:
        metrics.submitted.add(1, metrics.task_attributes(submission.name, envelope.queue))
    else:  # an earlier task holds the idempotency key: this submit is that task's
        tracing.name_task(span, task_id)
    tracing.end(span)
    return task_id


async def _store_and_publish(
    runtime: Runtime,
    envelope: protocol.Envelope,
    body: bytes,
    run_at: datetime | None,
    options: TaskOptions,
) -> str:
    store, broker = runtime.store, runtime.broker
    relay = not options.confirm_publish
    try:
        # (Its tagged queue too: declared before any publish, so a task that no running
        # worker has the tags for waits in it, not lost as unroutable.)
        await runtime.declare(envelope.queue)
    except BrokerError:
        if not relay:
            raise
    row = new_task_row(envelope, run_at=run_at, idempotency_key=options.idempotency_key)
    # The row first, then the message: a worker never sees a task the store lacks.
    task_id = await store.insert_task(row)
    if task_id != envelope.id:
        await _republish_if_queued(runtime, task_id)  # an earlier submit with this key
    elif row.state is TaskStatus.QUEUED:
        if relay and not broker.connected:
            await _hand_to_relay(store, task_id, "the broker is not connected")
            return task_id
        # Queued now, sent at the end of this turn of the loop: after the message's frames,
        # but long before a worker that took it could have claimed it and sent `running`
        # (events from different processes carry no order anyway; docs/client.md).
        runtime.events.add(events.task_event(envelope, TaskStatus.QUEUED))
        try:
            await publish(runtime, envelope.queue, body, envelope)
        except PublishError as exc:
            if relay and isinstance(exc, PublishUnconfirmed):
                await _hand_to_relay(store, task_id, str(exc))
                return task_id
            await _record_unpublished(store, task_id, exc)
            await runtime.events.announce(events.task_event(envelope, TaskStatus.FAILED))
            raise
    # (A `scheduled` row is published by the leader when it is due.)
    return task_id


async def _hand_to_relay(store: Store, task_id: str, why: str) -> None:
    """The row is committed: the leader publishes it once the broker is back."""
    await store.hand_to_relay(task_id)
    logger.warning(
        "task %s is stored but not yet published (%s); the leader publishes it once "
        "RabbitMQ is back",
        task_id,
        why,
        extra={"action": "relay", "task_id": task_id},
    )


async def submit_many(
    runtime: Runtime,
    name: str,
    options: TaskOptions,
    calls: Iterable[tuple[tuple[Any, ...], dict[str, Any]]],
) -> tuple[str, list[str]]:
    """→ (batch id, task ids). Every call goes through the submit middleware and is checked
    before anything is stored or sent; then the rows in one insert, the messages pipelined."""
    check_options(options, runtime.settings.max_priority)
    if options.idempotency_key is not None or options.transaction is not None:
        raise ConfigurationError(
            "submit_many takes neither idempotency_key nor transaction; submit those one by one"
        )
    run_at = due_time(options)
    max_bytes = runtime.settings.max_payload_bytes
    checked: list[tuple[protocol.Envelope, bytes]] = []

    async def accept(submission: middleware.Submission) -> str:
        # (Stored with the others once every item has come through.)
        index = len(checked)
        if submission.options is not options:  # a middleware gave this item options of its own
            check_options(submission.options, runtime.settings.max_priority)
        envelope = make_envelope(
            runtime, submission, where=f"item {index}: task {submission.name!r}"
        )
        try:
            checked.append((envelope, protocol.encode(envelope, max_bytes=max_bytes)))
        except TaskqError as exc:
            raise type(exc)(f"item {index}: {exc}") from None
        return envelope.id

    chain = middleware.compose_submit(runtime.middleware, accept)
    for args, kwargs in calls:
        await chain(middleware.Submission(name=name, args=args, kwargs=kwargs, options=options))
    batch_id = str(uuid.uuid4())
    sends, messages = start_sends(checked, max_bytes)
    try:
        # Stored `scheduled` and due, then published: rows whose publishing a crash cut
        # short are the leader's to publish, like any due task.
        due = run_at or datetime.now(UTC)
        rows = [
            new_task_row(traced, run_at=due, batch_id=batch_id, scheduled=True)
            for traced, _ in messages
        ]
        await runtime.store.insert_tasks(rows, due_now=run_at is None)
        if run_at is None:
            await publish_batch(runtime, messages, relay=not options.confirm_publish)
    except BaseException as exc:
        for span in sends:
            tracing.end(span, exc)
        raise
    for span in sends:
        tracing.end(span)
    queue = topology.tagged_queue(options.queue, options.tags)
    metrics.submitted.add(len(rows), metrics.task_attributes(name, queue))
    return batch_id, [envelope.id for envelope, _ in messages]


def start_sends(
    checked: Sequence[tuple[protocol.Envelope, bytes]], max_bytes: int
) -> tuple[list[Any], list[tuple[protocol.Envelope, bytes]]]:
    """A `send` span for each message; → (the spans, the messages as sent: with tracing
    on, each carries its span's context, so it is encoded again)."""
    sends = []
    messages: list[tuple[protocol.Envelope, bytes]] = []
    for envelope, body in checked:
        span, traced = tracing.start_send(envelope)
        sends.append(span)
        messages.append(
            (traced, body if traced is envelope else protocol.encode(traced, max_bytes=max_bytes))
        )
    return sends, messages


async def publish_batch(
    runtime: Runtime, messages: Sequence[tuple[protocol.Envelope, bytes]], *, relay: bool
) -> None:
    """Publish a stored batch; with `relay`, a broker out of reach leaves it to the leader
    (its rows are due `scheduled` ones until published)."""
    try:
        if relay and not runtime.broker.connected:
            raise PublishUnconfirmed("the broker is not connected")
        await publish_scheduled(runtime, messages)
    except BrokerError as exc:
        if not relay or (isinstance(exc, PublishError) and not isinstance(exc, PublishUnconfirmed)):
            raise
        logger.warning(
            "%d tasks are stored but not yet published (%s); the leader publishes them once "
            "RabbitMQ is back",
            len(messages),
            exc,
            extra={"action": "relay"},
        )


async def publish_scheduled(
    runtime: Runtime, messages: Sequence[tuple[protocol.Envelope, bytes]]
) -> None:
    """Publish the messages of these `scheduled` rows and mark them `queued`, a chunk per
    transaction.

    Each chunk's rows stay locked until its messages are confirmed, so a worker that gets
    one waits to see it `queued`; rows the leader is publishing meanwhile are left to it.
    """
    for start in range(0, len(messages), PUBLISH_CHUNK):
        chunk = {
            envelope.id: (envelope, body)
            for envelope, body in messages[start : start + PUBLISH_CHUNK]
        }

        async def publish_chunk(
            ids: list[str], chunk: dict[str, tuple[protocol.Envelope, bytes]] = chunk
        ) -> None:
            await publish_many(runtime, [chunk[task_id] for task_id in ids])

        # (No `queued` events: for a batch they would double the broker's work; watchers
        # read the state from the store, and see events from `running` on.)
        await runtime.store.publish_scheduled(list(chunk), publish_chunk)


async def publish_many(
    runtime: Runtime, messages: Sequence[tuple[protocol.Envelope, bytes]]
) -> None:
    """Publish with confirms, pipelined: all sent, then all confirmations awaited."""
    for queue in {envelope.queue for envelope, _ in messages}:
        await runtime.declare(queue)
    await asyncio.gather(
        *(
            runtime.broker.publish(
                envelope.queue,
                signed(runtime, body),
                priority=envelope.priority,
                message_id=envelope.id,
                expiration=time_left(envelope),
            )
            for envelope, body in messages
        )
    )


def signed(runtime: Runtime, body: bytes) -> bytes:
    """The bytes to publish: signed when the app has a signing key."""
    return body if runtime.signer is None else runtime.signer.sign(body)


def encoded(
    runtime: Runtime, envelopes: Sequence[protocol.Envelope]
) -> list[tuple[protocol.Envelope, bytes]]:
    """Envelopes with their bytes, for `publish_many`."""
    max_bytes = runtime.settings.max_payload_bytes
    return [(envelope, protocol.encode(envelope, max_bytes=max_bytes)) for envelope in envelopes]


async def _submit_in_transaction(
    store: Store,
    transaction: AsyncConnection | AsyncSession,
    envelope: protocol.Envelope,
    run_at: datetime | None,
    options: TaskOptions,
) -> str:
    """Write the row in the caller's transaction, `scheduled` and due at once (or at its
    countdown/eta). Nothing is published here: once the transaction commits, the leader
    publishes it like any due task (woken at once on PostgreSQL); a rollback leaves nothing."""
    row = new_task_row(
        envelope, run_at=run_at, idempotency_key=options.idempotency_key, scheduled=True
    )
    return await store.insert_in(transaction, row, due_now=run_at is None)


def make_envelope(
    runtime: Runtime, submission: middleware.Submission, *, where: str
) -> protocol.Envelope:
    """The message for one call, its arguments and headers checked for msgpack."""
    options, args, kwargs = submission.options, submission.args, submission.kwargs
    expires_at = expiry_time(options)
    headers = middleware.check_headers(submission.headers)
    dump = runtime.serializer.dump
    return protocol.Envelope(
        id=str(uuid.uuid4()),
        task=submission.name,
        queue=topology.tagged_queue(options.queue, options.tags),  # (routed by tags)
        args=[dump(value, f"{where}: argument {index}") for index, value in enumerate(args)],
        kwargs={key: dump(value, f"{where}: argument {key!r}") for key, value in kwargs.items()},
        priority=options.priority,
        timeout=options.timeout,
        created_at=time.time(),
        headers=dict(headers),
        max_retries=options.max_retries,
        expires_at=None if expires_at is None else expires_at.timestamp(),
        limits=limits.row_limits(
            submission.name,
            args,
            kwargs,
            options.rate_limit,
            options.concurrency_limit,
            options.quota,
        ),
    )


def call_of(item: Any, index: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A batch item: a tuple (or list) of positional arguments, or a dict of keyword ones."""
    if isinstance(item, tuple | list):
        return tuple(item), {}
    if isinstance(item, dict):
        return (), dict(item)
    raise TypeError(
        f"item {index}: each item of submit_many is a tuple of positional arguments or a "
        f"dict of keyword arguments, not {type(item).__name__} (wrap one argument as (x,))"
    )


async def _republish_if_queued(runtime: Runtime, task_id: str) -> None:
    """The earlier submit may have stored its row and died before publishing: publish it
    again. If its message is in the queue after all, the second copy is acked unrun."""
    record = await runtime.store.get_task(task_id)
    if record is not None and record.state is TaskStatus.QUEUED:
        envelope = envelope_of(record)
        body = protocol.encode(envelope, max_bytes=runtime.settings.max_payload_bytes)
        try:
            await runtime.declare(record.queue)
            await publish(runtime, record.queue, body, envelope)
        except (PublishUnconfirmed, BrokerConnectionError) as exc:
            await _hand_to_relay(runtime.store, task_id, str(exc))


async def publish(runtime: Runtime, queue: str, body: bytes, envelope: protocol.Envelope) -> None:
    await runtime.broker.publish(
        queue,
        signed(runtime, body),
        priority=envelope.priority,
        message_id=envelope.id,
        expiration=time_left(envelope),
    )


def due_time(options: TaskOptions) -> datetime | None:
    """When a delayed task is due, or None to run it now."""
    if options.countdown is not None and options.eta is not None:
        raise ConfigurationError("pass countdown or eta, not both")
    if options.countdown is not None:
        if options.countdown < 0:
            raise ConfigurationError(f"countdown must be >= 0 seconds, not {options.countdown}")
        return datetime.now(UTC) + timedelta(seconds=options.countdown)
    if options.eta is not None:
        if options.eta.tzinfo is None:
            raise ConfigurationError(
                "eta must be timezone-aware, e.g. datetime(..., tzinfo=timezone.utc)"
            )
        return options.eta.astimezone(UTC)
    return None


def expiry_time(options: TaskOptions) -> datetime | None:
    """When a task that has not started by then must never run, or None."""
    expires = options.expires
    if expires is None:
        return None
    if isinstance(expires, datetime):
        if expires.tzinfo is None:
            raise ConfigurationError("expires must be timezone-aware, or a number of seconds")
        return expires.astimezone(UTC)
    if expires <= 0:
        raise ConfigurationError(f"expires must be > 0 seconds, not {expires}")
    return datetime.now(UTC) + timedelta(seconds=expires)


def time_left(envelope: protocol.Envelope) -> float | None:
    """Seconds until the envelope expires (its message's TTL), or None."""
    if envelope.expires_at is None:
        return None
    return max(envelope.expires_at - time.time(), 0.0)


def check_options(options: TaskOptions, max_priority: int) -> None:
    topology.validate_queue_name(options.queue)
    if len(options.tags) > topology.MAX_WORKER_TAGS:
        raise ConfigurationError(
            f"a task takes at most {topology.MAX_WORKER_TAGS} tags (as a worker does), "
            f"not {len(options.tags)}: no worker could run it"
        )
    topology.tagged_queue(options.queue, options.tags)  # (its name within the limit)
    if not 0 <= options.priority <= max_priority:
        raise ConfigurationError(
            f"priority {options.priority} is outside 0..{max_priority} (the app's max_priority)"
        )
    if options.timeout is not None and options.timeout <= 0:
        raise ConfigurationError(
            f"timeout must be a positive number of seconds, not {options.timeout}"
        )
    key = options.idempotency_key
    if key is not None and not 1 <= len(key) <= 255:
        raise ConfigurationError("idempotency_key must be 1 to 255 characters")
    if options.max_retries < 0 or options.max_deliveries < 1:
        raise ConfigurationError("max_retries must be >= 0 and max_deliveries >= 1")


async def _record_unpublished(store: Store, task_id: str, exc: PublishError) -> None:
    """A task whose message the broker never confirmed must not sit `queued` forever."""
    error = TaskError("PublishError", str(exc))
    try:
        await store.fail_unclaimed(task_id, error, only_queued=True)
    except Exception:
        logger.exception("could not record unpublished task %s", task_id)
