"""Dead letters: what is in `<queue>.dlq`, why, and sending it back for new attempts.

dead = app.dlq("default")
for letter in await dead.list():
    print(letter.task_id, letter.task, letter.reason, letter.error_type)
await dead.replay(ids=[...])   # or replay() for all
await dead.purge()
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from taskq import protocol
from taskq.broker import Browsed, topology
from taskq.exceptions import ProtocolError
from taskq.signing import BadSignature, unwrap

if TYPE_CHECKING:
    from taskq.client.runtime import Runtime

DEFAULT_LIMIT = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered message, with what its task's row says about it."""

    task_id: str | None  # None for bytes that name no task
    task: str | None
    reason: str  # failed, max_deliveries, expired, unknown_task, malformed, ...
    error_type: str | None
    error_message: str | None
    dead_at: datetime | None


class DeadLetters:
    """The dead-letter queue of one taskq queue."""

    def __init__(self, runtime: Runtime, queue: str) -> None:
        topology.validate_routed_queue(queue)  # (a tagged queue's, `default@gpu`, too)
        self._runtime = runtime
        self.queue = queue
        self.name = topology.dlq_name(queue)

    async def list(self, limit: int = DEFAULT_LIMIT) -> list[DeadLetter]:
        """The first `limit` dead letters, oldest first; the queue is left as it was."""
        await self._runtime.declare(self.queue)
        async with self._runtime.broker.browse(self.name, limit=limit) as found:
            return [await self._describe(message) for message in found]

    async def replay(self, ids: Iterable[str] | None = None, *, limit: int = 100_000) -> int:
        """Send dead tasks back as new attempts (all of them if `ids` is None); → how many.

        Each task's row becomes due again and the leader publishes it, in the transaction
        that marks it queued; then its dead letter is removed.
        """
        wanted = None if ids is None else set(ids)
        await self._runtime.declare(self.queue)
        replayed = 0
        async with self._runtime.broker.browse(self.name, limit=limit) as found:
            for message in found:
                task_id = _task_id(message)
                if task_id is None or (wanted is not None and task_id not in wanted):
                    continue
                if await self._runtime.store.replay([task_id]):
                    replayed += 1
                elif not await self._replayed_before(task_id):
                    continue  # no task row to run it from: leave it for a person to read
                # (Reset first, then remove: a crash in between leaves a stale copy, which the
                # next replay finds already replayed and removes.)
                await message.remove()
        return replayed

    async def _replayed_before(self, task_id: str) -> bool:
        record = await self._runtime.store.get_task(task_id)
        return record is not None and not record.state.is_final

    async def purge(self) -> int:
        """Delete every dead letter of this queue (the rows keep their record); → how many."""
        await self._runtime.declare(self.queue)
        return await self._runtime.broker.purge(self.name)

    async def _describe(self, message: Browsed) -> DeadLetter:
        signer = self._runtime.signer
        if signer is not None:
            try:
                signer.open(message.body)
            except BadSignature:  # (it names no task of ours, whatever id it carries)
                return DeadLetter(None, None, "bad_signature", None, None, None)
        task_id = _task_id(message)
        record = None if task_id is None else await self._runtime.store.get_task(task_id)
        if record is None:  # bytes that never were a task of this store
            return DeadLetter(task_id, None, "malformed", None, None, None)
        return DeadLetter(
            task_id=task_id,
            task=record.name,
            reason=record.dead_reason or message.reason or "rejected",
            error_type=record.error.type if record.error else None,
            error_message=record.error.message if record.error else None,
            dead_at=record.finished_at,
        )


def _task_id(message: Browsed) -> str | None:
    try:
        return protocol.decode(unwrap(message.body)[0], max_bytes=len(message.body)).id
    except ProtocolError as exc:
        if exc.task_id is not None:
            return exc.task_id
    candidate = message.message_id.partition(":")[0]
    return candidate if _is_uuid(candidate) else None


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
