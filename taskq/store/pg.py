"""The hot path on PostgreSQL: each step ONE statement, sent through asyncpg directly.

The writer's batches: a whole flush in one statement. Submits: the rows of every `submit()`
waiting at once in one INSERT. Reads of one task: a single SELECT. Each statement is its own
transaction (no BEGIN and COMMIT round trips) and skips SQLAlchemy's per-statement work.

A flush holds claims, outcomes (finals and retries) and their attempt-log rows. Through
SQLAlchemy they cost BEGIN, one statement each (an executemany is a statement per row) and
COMMIT: six round trips, and more CPU in the worker than the task itself. Here they are one
statement of data-modifying CTEs over arrays (`unnest`), prepared once per connection, which
is its own transaction: one round trip and one commit per flush. SQLite runs the same
verbs as SQLAlchemy Core (`statements.claim`, `statements.record_outcomes`); the contract
suite in tests/integration/store runs both and compares the rows they leave.

Reads select JSON columns as text and decode them in `records.record_of`: nothing here
depends on the codecs SQLAlchemy registers on its connections.

A claim and an outcome of the same row never meet in one flush (an outcome needs its claim
committed first); if they did, PostgreSQL would apply one of the two, and either is safe.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from taskq.status import TaskStatus
from taskq.store import codec, records
from taskq.store.async_core import Engine
from taskq.store.records import (
    Claimed,
    ClaimRequest,
    NewTask,
    Outcome,
    Written,
)
from taskq.store.tables import tasks

logger = logging.getLogger(__name__)

# A flush is one statement made of the parts it needs (a part with no rows is left out, so
# that no plan is ever made for an empty array). `{name}` marks a parameter.
#
# Every UPDATE must find its rows by primary key (`t.id = ANY(...)`), whatever the table's
# statistics say: the conditions on `state` are written as CASE expressions, which no index
# serves, because with `state = 'queued'` the planner picks the state index whenever it
# believes few rows are queued, and after a sudden backlog each flush would then read every
# queued row (and a prepared statement keeps its plan).
_CLAIMED = """claimed AS (
    UPDATE taskq_tasks AS t SET
        state = 'running', attempts = t.attempts + 1, deliveries = t.deliveries + 1,
        worker_id = {worker_id}::text, started_at = {now}::timestamptz, finished_at = NULL,
        lease_until = NULL, progress = NULL, expires_at = NULL
    FROM unnest({claim_ids}::uuid[], {claim_names}::text[], {claim_queues}::text[])
        AS c (id, name, queue)
    WHERE t.id = ANY({claim_ids}::uuid[]) AND t.id = c.id
        AND t.name = coalesce(c.name, t.name) AND t.queue = coalesce(c.queue, t.queue)
        AND t.limits IS NULL
        AND CASE t.state
        WHEN 'queued' THEN true
        WHEN 'running' THEN t.id = ANY({redelivered_ids}::uuid[]) AND (
            t.worker_id = {worker_id}::text OR NOT EXISTS (
                SELECT 1 FROM taskq_workers AS w
                WHERE w.id = t.worker_id AND w.state = 'running'
                    AND w.heartbeat_at > now() - {silent_for}::interval
                    AND EXISTS (
                        SELECT 1 FROM pg_stat_activity AS a WHERE a.application_name = w.id)))
        WHEN 'scheduled' THEN t.run_at <= now()
        ELSE false END
    RETURNING t.id::text AS id, t.attempts, t.deliveries, t.retries, t.max_retries,
        t.cancel_requested_at IS NOT NULL AS cancel_requested,
        t.workflow_id::text AS workflow_id, t.receives::text AS receives
)"""
_FINISHED = """finished AS (
    UPDATE taskq_tasks AS t SET
        state = o.state, result = o.result, error = o.error, dead_reason = o.dead_reason,
        finished_at = {now}::timestamptz, lease_until = NULL
    FROM unnest({final_ids}::uuid[], {final_attempts}::int[], {final_states}::text[],
        {final_results}::jsonb[], {final_errors}::jsonb[], {final_dead_reasons}::text[])
        AS o (id, attempt, state, result, error, dead_reason)
    WHERE t.id = ANY({final_ids}::uuid[]) AND t.id = o.id AND t.attempts = o.attempt
        AND CASE t.state WHEN 'running' THEN true ELSE false END
    RETURNING t.id, t.attempts, t.state, t.workflow_id, t.children
)"""
# Workflow steps that succeeded count down the steps waiting for them (`store.workflows`
# says why here); a step that did not succeed never comes here: its release may cancel
# others, which `workflows.release` does in a transaction of its own.
_COUNTED = """counted AS (
    UPDATE taskq_tasks AS c SET
        waiting_for = c.waiting_for - r.n,
        run_at = CASE WHEN c.waiting_for - r.n <= 0 THEN now() ELSE NULL END
    FROM (
        SELECT f.workflow_id, child.step::int AS step, count(*)::int AS n
        FROM finished AS f CROSS JOIN LATERAL jsonb_array_elements_text(f.children) AS child (step)
        WHERE f.workflow_id IS NOT NULL AND f.state = 'succeeded'
        GROUP BY f.workflow_id, child.step
    ) AS r
    WHERE c.workflow_id = r.workflow_id AND c.step = r.step
        AND CASE c.state WHEN 'scheduled' THEN true ELSE false END
    RETURNING c.id, c.waiting_for
)"""
_RETRIED = """retried AS (
    UPDATE taskq_tasks AS t SET
        state = 'scheduled', error = r.error, run_at = r.run_at, retries = t.retries + 1,
        deliveries = 0, lease_until = NULL
    FROM unnest({retry_ids}::uuid[], {retry_attempts}::int[], {retry_errors}::jsonb[],
        {retry_run_ats}::timestamptz[]) AS r (id, attempt, error, run_at)
    WHERE t.id = ANY({retry_ids}::uuid[]) AND t.id = r.id AND t.attempts = r.attempt
        AND CASE t.state WHEN 'running' THEN true ELSE false END
    RETURNING t.id, t.attempts
)"""
_LOGGED = """logged AS (
    INSERT INTO taskq_attempts (task_id, attempt, worker_id, state, started_at, finished_at, error)
    SELECT a.task_id, a.attempt, a.worker_id,
        CASE WHEN (a.task_id, a.attempt) IN ({stored}) THEN a.state ELSE 'superseded' END,
        a.started_at, {now}::timestamptz, a.error
    FROM unnest({log_ids}::uuid[], {log_attempts}::int[], {log_workers}::text[],
        {log_states}::text[], {log_started}::timestamptz[], {log_errors}::jsonb[])
        AS a (task_id, attempt, worker_id, state, started_at, error)
    ON CONFLICT DO NOTHING
)"""


# Flow control's keys, locked for the rest of the flush's transaction (`pg_limits.flush`).
_LOCKED = """locked AS (
    SELECT count(pg_advisory_xact_lock(k))::int AS n FROM unnest({lock_numbers}::bigint[]) AS k
)"""


@functools.cache
def _flush_statement(
    claims: bool, finals: bool, retries: bool, releases: bool = False, locks: bool = False
) -> tuple[str, tuple[str, ...]]:
    """→ (SQL, the parameter names in $1, $2, ... order) for a flush with these parts.

    It returns a row per claim that took (`kind` 'claim'), per outcome that was not
    stored (`kind` 'stale': its attempt was no longer the row's latest), usually none, and
    per workflow step that became due (`kind` 'released'). With `locks`, it also takes the
    advisory locks `lock_numbers` (inside a transaction, which holds them until it ends)."""
    stored = " UNION ALL ".join(
        f"SELECT id, attempts FROM {part}"
        for part, wanted in (("finished", finals), ("retried", retries))
        if wanted
    )
    parts = [
        part
        for part, wanted in (
            (_CLAIMED, claims),
            (_FINISHED, finals),
            (_RETRIED, retries),
            (_LOGGED.replace("{stored}", stored), finals or retries),
            (_COUNTED, releases),
            (_LOCKED, locks),
        )
        if wanted
    ]
    selects = []
    if locks:  # (no row: it makes the locks be taken)
        selects.append(
            "SELECT 'locked' AS kind, NULL::text AS id, n AS attempts, NULL::int AS deliveries, "
            "NULL::int AS retries, NULL::int AS max_retries, NULL::bool AS cancel_requested, "
            "NULL::text AS workflow_id, NULL::text AS receives FROM locked WHERE n < 0"
        )
    if claims:
        selects.append(
            "SELECT 'claim' AS kind, id, attempts, deliveries, retries, max_retries, "
            "cancel_requested, workflow_id, receives FROM claimed"
        )
    if stored:
        selects.append(
            "SELECT 'stale' AS kind, a.id::text AS id, a.attempt AS attempts, "
            "NULL::int AS deliveries, NULL::int AS retries, NULL::int AS max_retries, "
            "NULL::bool AS cancel_requested, NULL::text AS workflow_id, NULL::text AS receives "
            "FROM unnest({log_ids}::uuid[], {log_attempts}::int[]) AS a (id, attempt) "
            f"WHERE (a.id, a.attempt) NOT IN ({stored})"
        )
    if releases:
        selects.append(
            "SELECT 'released' AS kind, id::text AS id, NULL::int AS attempts, "
            "NULL::int AS deliveries, NULL::int AS retries, NULL::int AS max_retries, "
            "NULL::bool AS cancel_requested, NULL::text AS workflow_id, NULL::text AS receives "
            "FROM counted WHERE waiting_for <= 0"
        )
    returning = " UNION ALL ".join(selects) or "SELECT NULL LIMIT 0"
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    sql = re.sub(r"\{(\w+)\}", number, "WITH " + ",\n".join(parts) + "\n" + returning)
    return sql, tuple(names)


# (column, PostgreSQL type) of a new row, in `records.task_values`'s names. `attempts` is 0.
_NEW_ROW = (
    ("id", "uuid"),
    ("name", "text"),
    ("queue", "text"),
    ("priority", "smallint"),
    ("state", "text"),
    ("args", "jsonb"),
    ("kwargs", "jsonb"),
    ("timeout", "float8"),
    ("created_at", "timestamptz"),
    ("run_at", "timestamptz"),
    ("idempotency_key", "text"),
    ("expires_at", "timestamptz"),
    ("max_retries", "int"),
    ("batch_id", "uuid"),
    ("headers", "jsonb"),
    ("limits", "jsonb"),
    ("rate_key", "text"),
    ("slot_key", "text"),
    ("quota_key", "text"),
)


# A workflow step's place (`records.WorkflowPlace`), after those.
_STEP_ROW = (
    *_NEW_ROW,
    ("workflow_id", "uuid"),
    ("step", "int"),
    ("parents", "jsonb"),
    ("children", "jsonb"),
    ("waiting_for", "int"),
    ("receives", "jsonb"),
    ("tolerates_failures", "bool"),
)


def _insert_sql(run_at: str, row: tuple[tuple[str, str], ...] = _NEW_ROW) -> str:
    names = ", ".join(name for name, _ in row)
    arrays = ", ".join(f"${n}::{kind}[]" for n, (_, kind) in enumerate(row, start=1))
    chosen = names.replace("run_at", run_at)
    return (
        f"INSERT INTO taskq_tasks ({names}, attempts) SELECT {chosen}, 0 "
        f"FROM unnest({arrays}) AS n ({names})"
    )


INSERT = _insert_sql("run_at")
# Due by the database's clock, as `statements.insert_tasks(due_now=True)` makes them.
_INSERT_DUE_NOW = _insert_sql("now()")
# A whole workflow: its row and its steps' (those waiting for none due now), one statement.
_N = len(_STEP_ROW)
_INSERT_WORKFLOW = (
    f"WITH workflow AS (INSERT INTO taskq_workflows (id, created_at, steps, output) "
    f"VALUES (${_N + 1}::uuid, ${_N + 2}::timestamptz, ${_N + 3}::int, ${_N + 4}::jsonb)) "
    + _insert_sql("CASE WHEN waiting_for = 0 THEN now() END", _STEP_ROW)
)
# Tasks by id, their JSON columns as text (decoded by `records.record_of`).
GET_TASKS = "SELECT {} FROM taskq_tasks WHERE id = ANY($1::uuid[])".format(
    ", ".join(
        f"{column.name}::text AS {column.name}"
        if column.name in records.JSON_COLUMNS
        else column.name
        for column in tasks.columns
    )
)


class Fetch(Protocol):
    """Sends one statement, its own transaction; errors come out as taskq's."""

    async def fetch(self, statement: str, *arguments: Any) -> list[Any]: ...


async def flush(
    connection: Fetch,
    claims: Sequence[ClaimRequest],
    outcomes: Sequence[Outcome],
    lock_numbers: Sequence[int] = (),
) -> Written:
    """Outcomes and claims in one statement (one per worker id among the claims: a
    worker's writer has one); → the claims that took, and the outcomes stored. In a
    transaction, `lock_numbers` are advisory locks it also takes (held until it ends)."""
    by_worker: dict[str, list[ClaimRequest]] = {}
    for claim in claims:
        by_worker.setdefault(claim.worker_id, []).append(claim)
    groups = list(by_worker.items()) or [("", [])]
    rows = []
    for index, (worker_id, group) in enumerate(groups):
        values = _values(worker_id, group, outcomes if index == 0 else ())
        values["lock_numbers"] = sorted(lock_numbers) if index == 0 else []
        releases = index == 0 and any(
            outcome.in_workflow and outcome.state is TaskStatus.SUCCEEDED for outcome in outcomes
        )
        sql, names = _flush_statement(
            bool(group),
            bool(values["final_ids"]),
            bool(values["retry_ids"]),
            releases,
            bool(values["lock_numbers"]),
        )
        rows += await connection.fetch(sql, *(values[name] for name in names))
    return Written(
        claimed={row["id"]: claimed_of(row) for row in rows if row["kind"] == "claim"},
        stale=frozenset((row["id"], row["attempts"]) for row in rows if row["kind"] == "stale"),
        released=sum(1 for row in rows if row["kind"] == "released"),
    )


def claimed_of(row: Any) -> Claimed:
    """A claim from a row its statement returned (`attempts`, `deliveries`, `retries`,
    `max_retries`, `cancel_requested`, `workflow_id`, `receives` as JSON text, and
    `slot_key` if it selected one)."""
    return Claimed(
        attempt=row["attempts"],
        deliveries=row["deliveries"],
        retries=row["retries"],
        max_retries=row["max_retries"],
        cancel_requested=row["cancel_requested"],
        workflow_id=row["workflow_id"],
        receives=None if row["receives"] is None else json.loads(row["receives"]),
        slot_key=row.get("slot_key"),
    )


def _values(
    worker_id: str, claims: Sequence[ClaimRequest], outcomes: Sequence[Outcome]
) -> dict[str, Any]:
    finals = [o for o in outcomes if o.state is not TaskStatus.SCHEDULED]
    retries = [o for o in outcomes if o.state is TaskStatus.SCHEDULED]
    return {
        "now": records.now(),
        "worker_id": worker_id,
        "silent_for": records.SILENT_FOR,
        "claim_ids": [c.task_id for c in claims],
        "redelivered_ids": [c.task_id for c in claims if c.redelivered],
        "claim_names": [c.name for c in claims],
        "claim_queues": [c.queue for c in claims],
        "final_ids": [o.task_id for o in finals],
        "final_attempts": [o.attempt for o in finals],
        "final_states": [o.state.value for o in finals],
        "final_results": [_json(codec.to_json(o.result)) for o in finals],
        "final_errors": [_json(records.error_json(o.error)) for o in finals],
        "final_dead_reasons": [o.dead_reason for o in finals],
        "retry_ids": [o.task_id for o in retries],
        "retry_attempts": [o.attempt for o in retries],
        "retry_errors": [_json(records.error_json(o.error)) for o in retries],
        "retry_run_ats": [o.retry_at for o in retries],
        "log_ids": [o.task_id for o in outcomes],
        "log_attempts": [o.attempt for o in outcomes],
        "log_workers": [o.worker_id for o in outcomes],
        "log_states": [o.logged_state for o in outcomes],
        "log_started": [o.started_at for o in outcomes],
        "log_errors": [_json(records.error_json(o.error)) for o in outcomes],
    }


_json = records.json_text


class Pooled:
    """Statements on pooled connections, one each (no BEGIN or COMMIT round trips)."""

    def __init__(
        self,
        engine: Engine,
        translated: Callable[[], contextlib.AbstractAsyncContextManager[None]],
    ) -> None:
        self.engine = engine
        self.translated = translated  # (errors come out as taskq's inside it)

    async def fetch(self, statement: str, *arguments: Any) -> list[Any]:
        async with self.translated(), _driver_connection(self.engine) as raw:
            rows: list[Any] = await raw.fetch(statement, *arguments)
        return rows


async def insert_tasks(connection: Fetch, rows: Sequence[NewTask], *, due_now: bool) -> None:
    """Many rows (without idempotency keys) in one INSERT, its own transaction."""
    await connection.fetch(_INSERT_DUE_NOW if due_now else INSERT, *columns(rows))


@contextlib.asynccontextmanager
async def _driver_connection(engine: Engine) -> AsyncIterator[Any]:
    """A pooled connection's asyncpg connection, for one statement (its own transaction)."""
    async with await engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        yield raw


async def insert_workflow(
    connection: Fetch,
    workflow_id: str,
    created_at: datetime,
    output: Any,
    rows: Sequence[NewTask],
) -> None:
    """A workflow's row and its steps' (`workflows.insert`), in one statement."""
    arrays = columns(rows, _STEP_ROW)
    await connection.fetch(
        _INSERT_WORKFLOW, *arrays, workflow_id, created_at, len(rows), _json(output)
    )


def columns(
    rows: Sequence[NewTask], row: tuple[tuple[str, str], ...] = _NEW_ROW
) -> list[list[Any]]:
    """`records.task_values` of each row, as one array per column (JSON as text)."""
    values = [records.task_values(new) for new in rows]
    return [[_json(v[name]) if kind == "jsonb" else v[name] for v in values] for name, kind in row]
