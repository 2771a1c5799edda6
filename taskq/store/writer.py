"""Write-behind: many workers' writes share one transaction and one round trip.

Each call queues an item and returns once the batch holding it is committed, so a caller
that awaits it (the executor, before acking) knows its write is durable. A flush runs at
most every `flush_interval` seconds while writes keep coming, at once when the writer was idle
or a batch is full. Progress reports
are coalesced instead: only each task's latest is written, at most every
`progress_interval` seconds, and nobody waits for it.

Where a batch goes is a `Batches`: one set-based statement on PostgreSQL
(`store.pg`), SQLAlchemy Core statements in one transaction elsewhere (`SqlBatches`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from taskq.exceptions import StoreConnectionError, StoreError
from taskq.store import records
from taskq.store.records import ClaimRequest, ProgressReport

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5


class Batches(Protocol):
    """Writes one flush's items, durably, before returning."""

    async def write(
        self, claims: Sequence[ClaimRequest], outcomes: Sequence[records.Outcome]
    ) -> records.Written:
        """Store outcomes, then claims (see `statements.claim`); → the claims that took and
        the outcomes stored."""
        ...

    async def write_progress(self, reports: Sequence[ProgressReport]) -> None: ...

    async def close(self) -> None: ...


class SqlBatches:
    """Batches as SQLAlchemy Core statements in one transaction (any dialect)."""

    def __init__(
        self,
        flush: Callable[[Sequence[ClaimRequest], Sequence[records.Outcome]], Awaitable[Any]],
        write_progress: Callable[[Sequence[ProgressReport]], Awaitable[None]],
    ) -> None:
        self._flush = flush  # (in one transaction: `lifecycle.write_batch`)
        self._write_progress = write_progress

    async def write(
        self, claims: Sequence[ClaimRequest], outcomes: Sequence[records.Outcome]
    ) -> records.Written:
        result: records.Written = await self._flush(claims, outcomes)
        return result

    async def write_progress(self, reports: Sequence[ProgressReport]) -> None:
        await self._write_progress(reports)

    async def close(self) -> None:
        return None


class Durable(asyncio.Future[bool]):
    """An outcome's future, which its waiter's cancellation cannot cancel: the write is
    queued and happens anyway, so a waiter being cancelled still learns when it is durable
    and only then gets its `CancelledError` (what `asyncio.shield` gives, without its second
    future and the extra turn of the loop, for every task)."""

    def cancel(self, msg: Any | None = None) -> bool:
        return False


_Claim = tuple[ClaimRequest, "asyncio.Future[records.Claimed | records.Held | None]"]
_Outcome = tuple[records.Outcome, "asyncio.Future[bool]"]


class Writer:
    """Batches attempt claims and outcomes; one background flush loop per worker."""

    def __init__(self, batches: Batches, *, flush_interval: float, max_batch: int = 500) -> None:
        self._batches = batches
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._claims: list[_Claim] = []
        self._outcomes: list[_Outcome] = []
        # task id → (attempt, progress): the latest report of each, not yet written.
        self._progress: dict[str, tuple[int, dict[str, Any]]] = {}
        self._progress_timer: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._closing = False
        # Told the (id, name, queue) of workflow steps a flush cancelled (`Written.cancelled`).
        self.on_cancelled: Callable[[Sequence[tuple[str, str, str]]], None] | None = None

    async def claim(
        self,
        task_id: str,
        worker_id: str,
        *,
        redelivered: bool,
        name: str | None = None,
        queue: str | None = None,
        limited: bool = False,
        keys: tuple[str | None, str | None] = (None, None),
    ) -> records.Claimed | records.Held | None:
        """Count an attempt and mark `running`; → the claim, why a limit holds the task back
        (`limited`: its message says it has limits, `keys` its rate and concurrency keys),
        or None if not claimable (or the row's task name or queue is not `name` or `queue`,
        when given)."""
        future: asyncio.Future[records.Claimed | records.Held | None]
        future = asyncio.get_running_loop().create_future()
        request = ClaimRequest(task_id, worker_id, redelivered, name, queue, limited, *keys)
        self._claims.append((request, future))
        self._wake.set()
        return await future

    def record(self, outcome: records.Outcome) -> Durable:
        """Queue a final state; → a future done once it is committed: True if stored, False
        if its attempt was no longer the row's latest (another attempt took the row over).
        Awaiting it holds a cancelled caller until then (`Durable`)."""
        future = Durable(loop=asyncio.get_running_loop())
        self._outcomes.append((outcome, future))
        self._wake.set()
        return future

    def progress(self, task_id: str, attempt: int, value: dict[str, Any]) -> None:
        """Keep `value` as the task's latest progress; written with a later flush."""
        self._progress[task_id] = (attempt, value)
        if self._progress_timer is None:
            self._progress_timer = asyncio.get_running_loop().call_later(
                PROGRESS_INTERVAL, self._wake.set
            )

    async def run(self) -> None:
        """Flush until `close()`; meant to run as a named child task of the worker."""
        while not (self._closing and not self._pending()):
            await self._wake.wait()
            if self._pending() < self._max_batch and not self._closing:
                # Group commit: what comes while a flush runs waits for the next one, so
                # batches grow with the load; `flush_interval` can add a wait for more.
                await asyncio.sleep(self._flush_interval)
            self._wake.clear()
            await self.flush()
        await self._batches.close()

    def close(self) -> None:
        """Ask `run()` to flush what is left and return."""
        self._closing = True
        self._wake.set()

    def _pending(self) -> int:
        return len(self._claims) + len(self._outcomes) + len(self._progress)

    async def flush(self) -> None:
        claims, self._claims = self._claims[: self._max_batch], self._claims[self._max_batch :]
        outcomes = self._outcomes[: self._max_batch]
        self._outcomes = self._outcomes[self._max_batch :]
        if self._progress_timer is not None and (
            self._progress_timer.when() <= _now() or self._closing
        ):
            progress = [(task_id, *report) for task_id, report in self._progress.items()]
            self._progress.clear()
            self._progress_timer.cancel()
            self._progress_timer = None
        else:
            # A task that ends keeps its last report: written before its outcome fences it out.
            ending = [o.task_id for o, _ in outcomes if o.task_id in self._progress]
            progress = [(task_id, *self._progress.pop(task_id)) for task_id in ending]
        if len(self._claims) + len(self._outcomes):
            self._wake.set()
        if progress:
            await self._write_progress(progress)
        if claims or outcomes:
            await self._write(claims, outcomes)

    async def _write_progress(self, reports: list[ProgressReport]) -> None:
        """Best effort: a lost progress write is superseded by the next one or the outcome."""
        try:
            await self._batches.write_progress(reports)
        except StoreError as exc:
            logger.warning("progress of %d tasks not stored: %s", len(reports), exc)

    async def _write(self, claims: list[_Claim], outcomes: list[_Outcome]) -> None:
        try:
            written = await self._batches.write(
                [claim for claim, _ in claims], [outcome for outcome, _ in outcomes]
            )
        except StoreError as exc:
            if len(claims) + len(outcomes) > 1 and not isinstance(exc, StoreConnectionError):
                # One bad row must not fail (and re-run) the tasks batched with it.
                for claim in claims:
                    await self._write([claim], [])
                for outcome in outcomes:
                    await self._write([], [outcome])
                return
            logger.error(
                "store write of %d claims and %d outcomes failed: %s",
                len(claims),
                len(outcomes),
                exc,
                extra={"action": "flush_failed"},
            )
            for _, claim_future in claims:
                _settle(claim_future, exc=exc)
            for _, outcome_future in outcomes:
                _settle(outcome_future, exc=exc)
            return
        if written.cancelled and self.on_cancelled is not None:
            self.on_cancelled(written.cancelled)
        claimed: dict[str, records.Claimed | records.Held] = {**written.held, **written.claimed}
        for request, claim_future in claims:
            # Two copies of one message in one batch: only the first runs the attempt.
            _settle(claim_future, claimed.pop(request.task_id, None))
        for done, outcome_future in outcomes:
            _settle(outcome_future, (done.task_id, done.attempt) not in written.stale)


def _now() -> float:
    return asyncio.get_running_loop().time()


def _settle(
    future: asyncio.Future[records.Claimed | records.Held | None] | asyncio.Future[bool],
    value: records.Claimed | records.Held | bool | None = None,
    exc: BaseException | None = None,
) -> None:
    with contextlib.suppress(asyncio.InvalidStateError):  # the waiter was cancelled
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)  # type: ignore[arg-type]
