"""Flow control's statements on PostgreSQL through asyncpg, for the writer's flushes: the
same decisions as everywhere (`limits`), each step one prepared statement found by primary
key or by its key's partial index, on the writer's held connection, in one transaction."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from taskq.store import limits, pg, records
from taskq.store.limits import Bucket, Row
from taskq.store.records import Held

_ROWS = (
    "SELECT id::text AS id, name, queue, state, run_at, limits::text AS limits, held_by, "
    "extract(epoch FROM now())::float8 AS now "
    "FROM taskq_tasks WHERE id = ANY($1::uuid[]) FOR UPDATE"
)
# `max(clock_timestamp())` is read after the last lock is held: starts count from then.
_LOCK = (
    "SELECT extract(epoch FROM max(clock_timestamp()))::float8 FROM ("
    "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k) AS locked"
)
_COUNTS = (
    "SELECT slot_key, count(*) FILTER (WHERE state = 'running')::int AS running, "
    "count(*) FILTER (WHERE state = 'scheduled' AND held_by = 'slots' AND run_at IS NULL)::int "
    "AS waiting FROM taskq_tasks "
    "WHERE slot_key = ANY($1::text[]) AND state IN ('running', 'scheduled') GROUP BY slot_key"
)
_BUCKETS = (
    "SELECT key, tat, booked, per_second, burst FROM taskq_rate_limits "
    "WHERE key = ANY($1::text[]) FOR UPDATE"
)
_SAVE = (
    "INSERT INTO taskq_rate_limits (key, tat, booked, per_second, burst) "
    "SELECT * FROM unnest($1::text[], $2::float8[], $3::float8[], $4::float8[], $5::int[]) "
    "ON CONFLICT (key) DO UPDATE SET tat = excluded.tat, booked = excluded.booked, "
    "per_second = excluded.per_second, burst = excluded.burst"
)
_HOLD = (
    "UPDATE taskq_tasks AS t SET state = 'scheduled', run_at = h.run_at, held_by = h.held "
    "FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS h (id, run_at, held) "
    "WHERE t.id = ANY($1::uuid[]) AND t.id = h.id"
)
_START = (
    "UPDATE taskq_tasks AS t SET state = 'running', attempts = t.attempts + 1, "
    "deliveries = t.deliveries + 1, worker_id = $2, started_at = $3, finished_at = NULL, "
    "lease_until = NULL, progress = NULL, expires_at = NULL, held_by = NULL "
    "WHERE t.id = ANY($1::uuid[]) "
    "RETURNING t.id::text AS id, t.attempts, t.deliveries, t.retries, t.max_retries, "
    "t.cancel_requested_at IS NOT NULL AS cancel_requested, t.workflow_id::text AS workflow_id, "
    "t.receives::text AS receives, t.slot_key"
)
# Slots in use, the line of waiters, and the first of them made due, in one statement (the
# keys are locked, and this statement's snapshot is taken after that).
_RELEASE = """WITH used AS (
    SELECT slot_key, count(*) AS n FROM taskq_tasks
    WHERE slot_key = ANY($1::text[]) AND state = 'running' GROUP BY slot_key
), waiting AS (
    SELECT id, slot_key, (limits -> 'slots' ->> 1)::int AS most,
        row_number() OVER (PARTITION BY slot_key ORDER BY created_at, id) AS place
    FROM taskq_tasks
    WHERE slot_key = ANY($1::text[]) AND state = 'scheduled' AND held_by = 'slots'
        AND run_at IS NULL
), due AS (
    UPDATE taskq_tasks AS t SET run_at = now()
    FROM waiting AS w LEFT JOIN used AS u ON u.slot_key = w.slot_key
    WHERE t.id = w.id AND w.place <= $2 AND w.place <= w.most - coalesce(u.n, 0)
    RETURNING t.id
)
SELECT count(*)::int FROM due"""


class RawIO:
    """`limits.LimitIO` on an asyncpg connection inside a transaction."""

    def __init__(self, raw: Any, scope: str) -> None:
        self._raw, self._scope = raw, scope

    async def rows(self, task_ids: Sequence[str]) -> tuple[dict[str, Row], float]:
        found = await self._raw.fetch(_ROWS, list(task_ids))
        rows = {
            r["id"]: Row(
                r["id"], r["name"], r["queue"], r["state"], r["run_at"],
                json.loads(r["limits"]) if r["limits"] else {}, r["held_by"],
            )
            for r in found
        }  # fmt: skip
        return rows, float(found[0]["now"]) if found else 0.0  # (no row: nothing starts)

    async def lock(self, keys: Iterable[str]) -> float:
        numbers = sorted({limits.lock_number(self._scope, key) for key in keys})
        return float(await self._raw.fetchval(_LOCK, numbers))

    async def counts(self, keys: Iterable[str]) -> tuple[Counter[str], Counter[str]]:
        found = await self._raw.fetch(_COUNTS, list(keys))
        running = Counter({r["slot_key"]: r["running"] for r in found})
        return running, Counter({r["slot_key"]: r["waiting"] for r in found})

    async def buckets(self, keys: Iterable[str]) -> dict[str, Bucket]:
        found = await self._raw.fetch(_BUCKETS, list(keys))
        return {r["key"]: Bucket(r["tat"], r["booked"], r["per_second"], r["burst"]) for r in found}

    async def save(self, buckets: Mapping[str, Bucket]) -> None:
        await self._raw.execute(
            _SAVE,
            list(buckets),
            [b.tat for b in buckets.values()],
            [b.booked for b in buckets.values()],
            [b.per_second for b in buckets.values()],
            [b.burst for b in buckets.values()],
        )

    async def hold(self, held: Mapping[str, Held]) -> None:
        await self._raw.execute(
            _HOLD, list(held), [h.until for h in held.values()], [h.reason for h in held.values()]
        )

    async def start(self, claims: Sequence[records.ClaimRequest]) -> dict[str, records.Claimed]:
        by_worker: dict[str, list[str]] = {}
        for claim in claims:
            by_worker.setdefault(claim.worker_id, []).append(claim.task_id)
        started: dict[str, records.Claimed] = {}
        for worker_id, ids in by_worker.items():
            for r in await self._raw.fetch(_START, ids, worker_id, records.now()):
                started[r["id"]] = records.Claimed(
                    attempt=r["attempts"],
                    deliveries=r["deliveries"],
                    retries=r["retries"],
                    max_retries=r["max_retries"],
                    cancel_requested=r["cancel_requested"],
                    workflow_id=r["workflow_id"],
                    receives=None if r["receives"] is None else json.loads(r["receives"]),
                    slot_key=r["slot_key"],
                )
        return started

    async def release(self, keys: Sequence[str], most: int) -> int:
        return int(await self._raw.fetchval(_RELEASE, list(keys), most))


async def flush(
    raw: Any,
    claims: Sequence[records.ClaimRequest],
    outcomes: Sequence[records.Outcome],
    limited: Sequence[records.ClaimRequest],
    channel: str,
    scope: str,
) -> tuple[records.Written, list[records.ClaimRequest]]:
    """A writer's flush with limits, in the caller's transaction on `raw`: the outcomes and
    the other claims (`pg.flush`), then the limited claims and the release of the tasks
    waiting for the slots those outcomes freed (`limits.claim_then_release`); the leader is
    woken if a task became due, now or later. → (what it wrote, the limited claims to make
    as usual: takeovers, and claims to refuse)."""
    written = records.Written(claimed={})
    if claims or outcomes:
        written = await pg.flush(raw, claims, outcomes)
    freed = limits.freed_keys(outcomes, written.stale)
    going, started, held, released = await limits.claim_then_release(
        RawIO(raw, scope), limited, freed
    )
    if written.released or released or any(h.until is not None for h in held.values()):
        await raw.execute("SELECT pg_notify($1, '')", channel)
    claimed = {**written.claimed, **started}
    return dataclasses.replace(written, claimed=claimed, held=held), going
