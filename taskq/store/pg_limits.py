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
from taskq.store.limits import Bucket, Read, Row
from taskq.store.records import Held

# The rows (locked), the transaction's "now", per concurrency key the tasks running and
# those waiting for a slot, and the rate keys' GCRA rows (locked), in one statement, read
# after the keys' locks are held (a statement's snapshot is taken when it starts).
_READ = """WITH r AS (
    SELECT id::text AS id, name, queue, state, run_at, limits::text AS limits, held_by
    FROM taskq_tasks WHERE id = ANY($1::uuid[]) FOR UPDATE
), c AS (
    SELECT slot_key,
        count(*) FILTER (WHERE state = 'running')::int AS running,
        count(*) FILTER (WHERE state = 'scheduled' AND held_by = 'slots' AND run_at IS NULL)::int
            AS waiting
    FROM taskq_tasks
    WHERE slot_key = ANY($2::text[]) AND state IN ('running', 'scheduled') GROUP BY slot_key
), b AS (
    SELECT key, tat, booked, per_second, burst FROM taskq_rate_limits
    WHERE key = ANY($3::text[]) FOR UPDATE
)
SELECT 'n' AS kind, NULL::text AS key, NULL::text AS name, NULL::text AS queue,
    NULL::text AS state, NULL::timestamptz AS run_at, NULL::text AS limits, NULL::text AS held_by,
    NULL::int AS running, NULL::int AS waiting, NULL::float8 AS tat, NULL::float8 AS booked,
    NULL::float8 AS per_second, NULL::int AS burst, extract(epoch FROM now())::float8 AS now,
    extract(epoch FROM clock_timestamp())::float8 AS clock
UNION ALL SELECT 'r', id, name, queue, state, run_at, limits, held_by, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL FROM r
UNION ALL SELECT 'c', slot_key, NULL, NULL, NULL, NULL, NULL, NULL, running, waiting, NULL, NULL,
    NULL, NULL, NULL, NULL FROM c
UNION ALL SELECT 'b', key, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, tat, booked,
    per_second, burst, NULL, NULL FROM b"""
_LOCK = "SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k"
# The GCRA rows saved, the rows held back, and the others started, in one statement (every
# part runs, whether or not the final one reads it).
_WRITE = """WITH saved AS (
    INSERT INTO taskq_rate_limits (key, tat, booked, per_second, burst)
    SELECT * FROM unnest($1::text[], $2::float8[], $3::float8[], $4::float8[], $5::int[])
    ON CONFLICT (key) DO UPDATE SET tat = excluded.tat, booked = excluded.booked,
        per_second = excluded.per_second, burst = excluded.burst
), held AS (
    UPDATE taskq_tasks AS t SET state = 'scheduled', run_at = h.run_at, held_by = h.held
    FROM unnest($6::uuid[], $7::timestamptz[], $8::text[]) AS h (id, run_at, held)
    WHERE t.id = ANY($6::uuid[]) AND t.id = h.id
)
UPDATE taskq_tasks AS t SET state = 'running', attempts = t.attempts + 1,
    deliveries = t.deliveries + 1, worker_id = $10, started_at = $11, finished_at = NULL,
    lease_until = NULL, progress = NULL, expires_at = NULL, held_by = NULL
WHERE t.id = ANY($9::uuid[])
RETURNING t.id::text AS id, t.attempts, t.deliveries, t.retries, t.max_retries,
    t.cancel_requested_at IS NOT NULL AS cancel_requested, t.workflow_id::text AS workflow_id,
    t.receives::text AS receives, t.slot_key"""
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

    def __init__(self, raw: Any, scope: str, locked: Iterable[str] = ()) -> None:
        self._raw, self._scope = raw, scope
        self._locked = set(locked)  # (by the flush's own statement: `pg.flush`)

    async def lock(self, keys: Iterable[str]) -> None:
        numbers = sorted({limits.lock_number(self._scope, k) for k in set(keys) - self._locked})
        if numbers:
            await self._raw.execute(_LOCK, numbers)

    async def read(
        self, task_ids: Sequence[str], slot_keys: Iterable[str], rate_keys: Iterable[str]
    ) -> Read:
        found = await self._raw.fetch(_READ, list(task_ids), list(slot_keys), list(rate_keys))
        read = Read({}, 0.0, 0.0, Counter(), Counter(), {})
        for r in found:
            if r["kind"] == "n":  # (the clocks: the transaction's start, and now)
                read = read._replace(due_by=r["now"], clock=r["clock"])
            elif r["kind"] == "r":
                limits_of = json.loads(r["limits"]) if r["limits"] else {}
                read.rows[r["key"]] = Row(
                    r["key"], r["name"], r["queue"], r["state"], r["run_at"], limits_of,
                    r["held_by"],
                )  # fmt: skip
            elif r["kind"] == "c":
                read.used[r["key"]], read.waiting[r["key"]] = r["running"], r["waiting"]
            else:
                read.buckets[r["key"]] = Bucket(r["tat"], r["booked"], r["per_second"], r["burst"])
        return read

    async def write(
        self,
        buckets: Mapping[str, Bucket],
        held: Mapping[str, Held],
        going: Sequence[records.ClaimRequest],
    ) -> dict[str, records.Claimed]:
        by_worker: dict[str, list[str]] = {}
        for claim in going:
            by_worker.setdefault(claim.worker_id, []).append(claim.task_id)
        groups = list(by_worker.items()) or [("", [])]
        started: dict[str, records.Claimed] = {}
        for index, (worker_id, ids) in enumerate(groups):
            saved, holding = (buckets, held) if index == 0 else ({}, {})
            found = await self._raw.fetch(
                _WRITE,
                list(saved),
                [b.tat for b in saved.values()],
                [b.booked for b in saved.values()],
                [b.per_second for b in saved.values()],
                [b.burst for b in saved.values()],
                list(holding),
                [h.until for h in holding.values()],
                [h.reason for h in holding.values()],
                ids,
                worker_id,
                records.now(),
            )
            started.update((r["id"], pg.claimed_of(r)) for r in found)
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
    # (the keys the claims name and those the outcomes may free, locked by the flush's own
    # statement when it has one: a round trip fewer)
    named = {k for c in limited for k in (c.rate_key, c.slot_key) if k}
    named |= {o.slot_key for o in outcomes if o.slot_key}
    if claims or outcomes:
        numbers = [limits.lock_number(scope, key) for key in named]
        written = await pg.flush(raw, claims, outcomes, numbers)
    else:
        named = set()
    freed = limits.freed_keys(outcomes, written.stale)
    going, started, held, released = await limits.claim_then_release(
        RawIO(raw, scope, locked=named), limited, freed
    )
    if written.released or released or any(h.until is not None for h in held.values()):
        await raw.execute("SELECT pg_notify($1, '')", channel)
    claimed = {**written.claimed, **started}
    return dataclasses.replace(written, claimed=claimed, held=held), going
