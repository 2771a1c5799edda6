"""The task store: the only door to the database, one method per domain verb.

PostgreSQL in production, SQLite for the embedded default; the dialect is chosen once, at
`open()`. Statements live in `statements`, `lifecycle` and `coordination` (SQLAlchemy Core,
both dialects) and `pg` (PostgreSQL's hot path, one statement per step); nobody outside this
package holds a connection. Nothing from SQLAlchemy or the drivers escapes: errors become
`StoreError` and its subclasses.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import text

from taskq.exceptions import AppNotOpen, StoreError
from taskq.status import TaskStatus
from taskq.store import coordination, held, lifecycle, locks, migrations, pg, pruning, statements
from taskq.store import engine as engines
from taskq.store.async_core import Connection, Engine
from taskq.store.limit_ops import LimitOperations, under_quota
from taskq.store.listing import PageMark, Summary
from taskq.store.reads import ReadOperations
from taskq.store.records import (
    SILENT_FOR,
    Claimed,
    ClaimRequest,
    Held,
    NewTask,
    Outcome,
    ProgressReport,
    TaskError,
    TaskRecord,
    WorkerRecord,
    WorkflowPlace,
    Written,
)
from taskq.store.retention_ops import RetentionOperations
from taskq.store.schedule_ops import ScheduleOperations, ScheduleRecord
from taskq.store.workflow_ops import WorkflowOperations
from taskq.store.writer import Batches, SqlBatches, Writer

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__all__ = [
    "DUE_CHANNEL",
    "PRUNE_BATCH",
    "SILENT_FOR",
    "ClaimRequest",
    "Claimed",
    "Held",
    "NewTask",
    "Outcome",
    "PageMark",
    "ProgressReport",
    "PruneRule",
    "ScheduleRecord",
    "Store",
    "Summary",
    "TaskError",
    "TaskRecord",
    "WorkerRecord",
    "WorkflowPlace",
    "Writer",
    "Written",
]

T = TypeVar("T")

# The channel the leader listens on, so a committed transactional task is published at once.
DUE_CHANNEL = lifecycle.DUE_CHANNEL
# Ids per statement in reads of many tasks (an IN list this long is still cheap to plan).
READ_CHUNK = 1_000
# Tasks deleted per retention transaction: short enough never to hold locks for long.
PRUNE_BATCH = 1_000
PruneRule = pruning.PruneRule


class Store(
    ReadOperations, WorkflowOperations, LimitOperations, ScheduleOperations, RetentionOperations
):
    """Owns the engine. `open()` checks (SQLite: applies) migrations before any use."""

    def __init__(self, url: str, namespace: str = "") -> None:
        # A namespace keeps its tables apart: a schema of that name on PostgreSQL (created
        # by `taskq db upgrade`), a file of its own on SQLite; and its locks and wake-ups.
        self.namespace = namespace
        self._url = engines.in_namespace(engines.parse_url(url), namespace)
        self._scope = f"{namespace}:" if namespace else ""
        self._due_channel = DUE_CHANNEL + (f"_{namespace}" if namespace else "")
        self._engine: Engine | None = None
        # SQLite has one writer at a time (and :memory: one shared connection): take turns
        # here rather than fail with "database is locked".
        self._turns = asyncio.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()
        self._local_locks: dict[str, asyncio.Lock] = {}
        self._leader_turn = asyncio.Lock()
        self._due_here = asyncio.Event()  # (SQLite's `due_soon`)
        # PostgreSQL: single statements sent through asyncpg (`pg`, `held`).
        self._pg: held.PgPaths | None = None
        self._event_key: str | None = None

    def __repr__(self) -> str:
        return f"Store({engines.shown(self._url)!r})"

    @property
    def dialect(self) -> str:
        return self._url.get_backend_name()

    # -- lifetime ----------------------------------------------------------------------------

    async def open(self) -> None:
        url = self._url.render_as_string(hide_password=False)
        engine = engines.create_engine(url, schema=self.namespace)
        try:
            async with engines.translated_errors(self._url), engine.begin() as conn:
                if self.dialect == "sqlite":
                    # The embedded default needs no setup step: migrate on open.
                    await migrations.upgrade(conn)
                else:
                    await migrations.check(conn, engines.shown(self._url), self.namespace)
                self._event_key = await statements.read_secret(conn, "event_key")
        except BaseException:
            await engine.dispose()
            raise
        self._engine = engine
        if self.dialect == "postgresql":
            self._pg = held.PgPaths(pg.Pooled(engine, self._translated))

    async def close(self) -> None:
        paths, self._pg = self._pg, None
        if paths is not None:
            await paths.close()
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    async def _run(self, operation: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `operation` in one transaction, with errors translated."""
        if self._engine is None:
            raise AppNotOpen("the store is not open: use `async with app:` first")
        async with self._turns:
            async with self._translated(), self._engine.begin() as conn:
                return await operation(conn)

    @property
    def event_key(self) -> bytes:
        """The key signing task events (`taskq.signing`): who reads it can write rows too."""
        if self._event_key is None:
            raise AppNotOpen("the store is not open: use `async with app:` first")
        return self._event_key.encode()

    def _translated(self) -> contextlib.AbstractAsyncContextManager[None]:
        return engines.translated_errors(self._url)

    async def ping(self, within: float = 2.0) -> bool:
        """Whether the database answers within `within` seconds."""
        try:
            async with asyncio.timeout(within):
                await self._run(lambda conn: conn.execute(text("SELECT 1")))
        except (TimeoutError, StoreError):
            return False
        return True

    # -- submitting --------------------------------------------------------------------------

    async def insert_task(self, task: NewTask) -> str:
        """→ the task's id, or the earlier task's if its idempotency key was taken."""
        if under_quota([task]):
            return await self._insert_under_quota([task], due_now=False)
        if self._pg is not None and task.idempotency_key is None:
            await self._pg.inserts.insert(task)
            return task.id
        return await self._run(lambda conn: statements.insert_task(conn, task))

    async def insert_tasks(self, rows: Sequence[NewTask], *, due_now: bool) -> None:
        """Many rows (a batch: no idempotency keys) in one statement and one transaction;
        `due_now`: due by the database's clock (see `statements.insert_tasks`)."""
        if under_quota(rows):
            await self._insert_under_quota(rows, due_now=due_now)
            return
        if self._pg is not None:
            await pg.insert_tasks(self._pg.pooled, rows, due_now=due_now)
            return
        await self._run(lambda conn: statements.insert_tasks(conn, rows, due_now=due_now))

    async def insert_task_if_missing(self, task: NewTask) -> None:
        await self._run(lambda conn: statements.insert_task_if_missing(conn, task))

    async def insert_in(
        self, transaction: AsyncConnection | AsyncSession, task: NewTask, *, due_now: bool
    ) -> str:
        """Write the row in the caller's transaction (the outbox); → its id, or the earlier
        task's if its idempotency key was taken. `due_now`: the leader is woken (NOTIFY,
        delivered only if the transaction commits) to publish it at once."""
        schema = self.namespace if self.dialect == "postgresql" else None
        conn = await Connection.of_callers_transaction(transaction, schema=schema)
        async with self._translated():
            await self._check_quotas(conn, [task])
            task_id = await statements.insert_task(conn, task, due_now=due_now)
            if due_now:
                await lifecycle.wake_leader(conn, self._due_channel)
        return task_id

    async def hand_to_relay(self, task_id: str) -> bool:
        """A `queued` task whose message could not be published becomes a due `scheduled`
        row, which the leader publishes (woken at once on PostgreSQL); → whether it did."""
        channel = self._due_channel
        return await self._run(lambda conn: lifecycle.hand_to_relay(conn, task_id, channel))

    async def publish_scheduled(
        self, task_ids: Sequence[str], publish: Callable[[list[str]], Awaitable[None]]
    ) -> list[str]:
        """Lock those rows still `scheduled` (waiting for a leader publishing them), call
        `publish(their ids)`, then mark them `queued`, all in one transaction: a worker
        that gets a message before the commit waits to see it `queued`. → the ids published."""

        return await self._run(lambda conn: lifecycle.publish_scheduled(conn, task_ids, publish))

    async def publish_due(
        self, limit: int, publish: Callable[[list[TaskRecord]], Awaitable[None]]
    ) -> tuple[list[TaskRecord], datetime | None]:
        """The leader's step: lock up to `limit` due rows (FOR UPDATE SKIP LOCKED), call
        `publish(them)`, mark them `queued`, in one transaction. → (the rows published,
        when the next scheduled row is due)."""

        return await self._run(lambda conn: lifecycle.publish_due(conn, limit, publish))

    # -- reading -----------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> TaskRecord | None:
        if self._pg is not None:
            return await self._pg.reads.get(task_id)
        return await self._run(lambda conn: statements.get_task(conn, task_id))

    async def get_tasks(self, task_ids: Sequence[str]) -> dict[str, TaskRecord]:
        """id → record of those that exist, read `READ_CHUNK` ids per statement."""
        found: dict[str, TaskRecord] = {}
        for chunk in _chunks(task_ids):
            found.update(await self._run(functools.partial(statements.get_tasks, task_ids=chunk)))
        return found

    async def ids_starting_with(self, prefix: str, limit: int = 2) -> list[str]:
        """At most `limit` task ids that start with `prefix` (hex digits; hyphens ignored)."""
        return await self._run(lambda conn: statements.ids_starting_with(conn, prefix, limit))

    async def get_states(self, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        """id → state of those that exist."""
        found: dict[str, TaskStatus] = {}
        for chunk in _chunks(task_ids):
            states = functools.partial(statements.get_states, task_ids=chunk)
            found.update(await self._run(states))
        return found

    # -- running -----------------------------------------------------------------------------

    def writer(self, *, flush_interval: float, worker_id: str | None = None) -> Writer:
        """The worker's write-behind: on PostgreSQL, one statement per flush, on a session
        of its own named `worker_id`, which shows others the worker lives (`statements.claim`)."""
        if self._engine is None:
            raise AppNotOpen("the store is not open: use `async with app:` first")
        batches: Batches
        if self._pg is not None:
            connection = self._pg.held(worker_id)
            flush = functools.partial(self._flush, connection)
            batches = held.PgBatches(connection, flush, self.write_progress)
        else:
            batches = SqlBatches(functools.partial(self._flush, None), self.write_progress)
        return Writer(batches, flush_interval=flush_interval)

    async def write(self, claims: Sequence[ClaimRequest], outcomes: Sequence[Outcome]) -> Written:
        """Outcomes (fenced by attempt), then claims, as one flush (the writer batches
        these; call it directly only for one-off writes); → what `Written` says."""
        return await self._flush(None if self._pg is None else self._pg.pooled, claims, outcomes)

    async def write_progress(self, reports: Sequence[ProgressReport]) -> None:
        """The latest progress of running attempts (fenced by attempt)."""
        await self._run(lambda conn: statements.record_progress(conn, reports))

    async def fail_unclaimed(
        self,
        task_id: str,
        error: TaskError,
        *,
        only_queued: bool = False,
        dead_reason: str | None = None,
    ) -> None:
        """Fail a task that never ran (unknown name, bad message, never published)."""
        failing = functools.partial(
            lifecycle.fail_unclaimed, task_id=task_id, error=error, only_queued=only_queued,
            dead_reason=dead_reason, channel=self._due_channel,
        )  # fmt: skip
        await self._run(failing)

    async def hand_off(self, task_id: str, attempt: int, until: datetime) -> bool:
        """A long task's message is about to be acked early: from now its lease keeps it."""
        return await self._run(lambda conn: lifecycle.hand_off(conn, task_id, attempt, until))

    async def release(self, task_id: str, attempt: int) -> None:
        """A stopping worker hands a running task back (see `lifecycle.release`)."""
        await self._run(lambda conn: lifecycle.release(conn, task_id, attempt))

    async def expire_waiting(self, task_id: str) -> bool:
        """A task received past its expiry ends `expired`; → whether it was waiting."""
        channel = self._due_channel
        return await self._run(lambda conn: lifecycle.expire_waiting(conn, task_id, channel))

    async def cancel_many(self, task_ids: Sequence[str]) -> dict[str, tuple[TaskStatus, str, str]]:
        """Cancel waiting tasks, mark running ones; → id → (state after, name, queue)."""
        channel = self._due_channel
        return await self._run(lambda conn: lifecycle.request_cancel_many(conn, task_ids, channel))

    async def replay(self, task_ids: Sequence[str]) -> list[str]:
        """Dead tasks back as due `scheduled` rows; → the ids reset."""
        return await self._run(lambda conn: lifecycle.reset_for_replay(conn, task_ids))

    # -- processes and the leader ------------------------------------------------------------

    async def register_worker(
        self,
        worker_id: str,
        *,
        role: str,
        queues: Sequence[str],
        concurrency: int,
        tags: Sequence[str] = (),
    ) -> None:
        """A `running` row for this process (host and pid taken from here)."""
        await self._run(
            lambda conn: coordination.register_worker(
                conn,
                worker_id=worker_id,
                role=role,
                host=socket.gethostname(),
                pid=os.getpid(),
                queues=queues,
                concurrency=concurrency,
                tags=tags,
            )
        )

    async def heartbeat(
        self, worker_id: str, *, running: Sequence[str], memory: int, leases_until: datetime
    ) -> None:
        """Refresh the worker's row and extend the leases of the tasks it runs (their ids),
        in one transaction: a lease of a task it no longer runs lapses."""

        async def beat(conn: Connection) -> None:
            await coordination.heartbeat(conn, worker_id, running=len(running), memory=memory)
            if running:
                await lifecycle.extend_leases(conn, worker_id, running, leases_until)

        await self._run(beat)

    async def stop_worker(self, worker_id: str) -> None:
        await self._run(lambda conn: coordination.stop_worker(conn, worker_id))

    async def mark_process_dead(self, worker_id: str) -> list[str]:
        """A supervisor saw its child die: its row is dead at once; → [its id] if it was
        running."""
        return await self._run(lambda conn: lifecycle.bury_process(conn, worker_id))

    async def mark_dead(self, silent_for: timedelta) -> list[str]:
        """Workers silent for `silent_for` are `dead`; → their ids."""
        return await self._run(lambda conn: lifecycle.bury_silent(conn, silent_for))

    async def set_leader(self, worker_id: str, leading: bool) -> None:
        await self._run(lambda conn: coordination.set_leader(conn, worker_id, leading))

    async def expire_overdue(self, limit: int) -> list[tuple[str, str, str, TaskStatus]]:
        """Waiting tasks past their expiry end `expired`; → (id, name, queue, state) of each,
        and of each workflow step that was waiting for one (`cancelled`)."""
        channel = self._due_channel
        return await self._run(lambda conn: lifecycle.expire_overdue(conn, limit, channel))

    async def prune(self, rule: pruning.PruneRule, *, limit: int = PRUNE_BATCH) -> int:
        """Delete up to `limit` finished tasks that `rule` matches, with their attempts, in
        one short transaction; → how many (call again while it returns `limit`)."""
        return await self._run(lambda conn: pruning.prune(conn, rule, limit))

    async def count_prunable(self, rule: pruning.PruneRule) -> int:
        return await self._run(lambda conn: pruning.count(conn, rule))

    async def forget_workers(self, before: datetime) -> int:
        """Delete the rows of processes that stopped before `before`; → how many."""
        return await self._run(lambda conn: pruning.forget_workers(conn, before))

    async def forget_workflows(self, before: datetime) -> int:
        """Delete the rows of workflows submitted before `before` with no step left."""
        return await self._run(lambda conn: pruning.forget_workflows(conn, before))

    async def requeue_lapsed(self, limit: int) -> list[str]:
        """Running tasks whose lease lapsed become due `scheduled` rows; → their ids."""
        return await self._run(lambda conn: lifecycle.requeue_lapsed(conn, limit))

    # -- notifications and locks -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def due_soon(self) -> AsyncIterator[asyncio.Event]:
        """An event set whenever a transaction that wrote a due task commits (PostgreSQL
        NOTIFY; on SQLite, where only this process writes, by a flush that released
        workflow steps)."""
        if self.dialect == "sqlite":
            yield self._due_here
            return
        async with locks.listening(
            self._url.render_as_string(hide_password=False),
            self._due_channel,
            engines.shown(self._url),
        ) as wake:
            yield wake

    def session_lock(self, name: str, *, application_name: str) -> locks.LeaderLock:
        """A lock for leadership, held on a connection of its own (see `locks.SessionLock`)."""
        if self.dialect == "sqlite":
            return locks.InProcessSessionLock(self._leader_turn)
        return locks.SessionLock(
            self._url.render_as_string(hide_password=False),
            self._scope + name,
            application_name=application_name,
        )

    @contextlib.asynccontextmanager
    async def lock(self, name: str, wait: float | None) -> AsyncIterator[None]:
        """Mutual exclusion on `name` across every process using this database."""
        if self._engine is None:
            raise AppNotOpen("the store is not open: use `async with app:` first")
        if self.dialect != "sqlite":
            async with locks.transaction_lock(self._engine, self._scope + name, wait):
                yield
            return
        held = self._local_locks.setdefault(name, asyncio.Lock())
        async with locks.in_process_lock(held, name, wait):
            yield


def _chunks(ids: Sequence[str]) -> list[list[str]]:
    unique = list(dict.fromkeys(ids))
    return [unique[start : start + READ_CHUNK] for start in range(0, len(unique), READ_CHUNK)]
