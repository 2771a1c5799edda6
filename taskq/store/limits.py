"""Flow control in the database: claims through rate and concurrency limits, the release of
tasks waiting for a slot, and quotas at submit: the decisions, made once for both ways to
the database (`LimitIO`: SQLAlchemy Core in `limit_sql`, asyncpg in `pg_limits`).

Every limit is cluster-wide because every decision is taken in one transaction holding the
key's lock (a transaction-scoped advisory lock on PostgreSQL; SQLite has one writer):

- **Rate** (GCRA): each key keeps the theoretical arrival time `tat` of its starts in
  `taskq_rate_limits`. A start is allowed while `tat - (burst - 1/2) / rate <= now` (half an
  interval of slack for the jitter of turns coming due), and moves `tat` on by `1 / rate`:
  no window of one period ever holds more than rate x period + burst starts. A task that may
  not start yet is given a turn after those held back before it (`booked`), as a `scheduled`
  row held by "rate" that the leader publishes then. A new task never starts ahead of tasks
  waiting their turn; a turn that comes too late to start (the leader was late, and the
  turns behind it came due together) goes to the back of the line.
- **Concurrency**: the slots in use are the key's `running` rows, counted, so a slot is free
  again whenever its task stops running, however that happens (an outcome, a retry, the
  leader requeueing a dead worker's task once its lease lapsed). A task without a free slot
  waits `scheduled`, held by "slots" with no `run_at`; an attempt's end makes the oldest
  waiters due (`release_slots`), and the leader's sweep does so for any key with free slots.
- **Quota**: the key's unfinished rows, counted in the submit's transaction.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from taskq.status import TaskStatus
from taskq.store import records
from taskq.store.records import Held

RATE, SLOTS = "rate", "slots"
# Waiters for a slot made due per key in one release (the leader's sweep does the rest).
RELEASE_AT_ONCE = 100
_EPSILON = 1e-6  # seconds: float noise, never a real gap between starts


class Row(NamedTuple):
    """What a limited claim reads of its task's row (locked)."""

    id: str
    name: str
    queue: str
    state: str
    run_at: datetime | None
    limits: dict[str, Any]
    held_by: str | None


class Read(NamedTuple):
    """What a limited claim reads once the keys are locked: the rows (locked), the
    transaction's "now" (epoch seconds), per concurrency key the tasks running and those
    waiting for a slot, and the rate keys' GCRA rows (locked; missing: never used, or
    forgotten while idle)."""

    rows: dict[str, Row]
    due_by: float
    clock: float  # epoch seconds when the read began: after the keys' locks were held
    used: Counter[str]
    waiting: Counter[str]
    buckets: dict[str, Bucket]


class LimitIO(Protocol):
    """The statements a limited claim and a release need, in one transaction."""

    async def lock(self, keys: Iterable[str]) -> None:
        """Hold the keys' locks until the transaction ends."""
        ...

    async def read(
        self, task_ids: Sequence[str], slot_keys: Iterable[str], rate_keys: Iterable[str]
    ) -> Read: ...

    async def write(
        self,
        buckets: Mapping[str, Bucket],
        held: Mapping[str, Held],
        going: Sequence[records.ClaimRequest],
    ) -> dict[str, records.Claimed]:
        """Save the GCRA rows, hold back the held, and mark the going rows (locked and
        checked) `running`, counting attempt and delivery; → their claims."""
        ...

    async def release(self, keys: Sequence[str], most: int) -> int:
        """Make due the oldest tasks waiting for a slot of these keys (locked), as many as
        are free, at most `most` per key; → how many."""
        ...


async def claim_then_release(
    io: LimitIO, claims: Sequence[records.ClaimRequest], freed: Sequence[str] = ()
) -> tuple[list[records.ClaimRequest], dict[str, records.Claimed], dict[str, Held], int]:
    """Decide the claims of tasks with limits, then release the tasks waiting for the slots
    of `freed` keys (counted after these claims took theirs), in one transaction.
    → (claims to make as usual, those started here, those held back, how many became due).

    The keys the messages name are locked first, all at once in one order (so two
    transactions never wait for each other), then everything is read in one go; the rows
    stay the truth: a key a row has and its message did not name is locked and read then.
    Only a row that would start now (queued, or scheduled and due, of the claim's name and
    queue) is decided, and started here if its limits allow; any other claim goes on as
    usual, to be refused or taken over."""
    named_rates = {c.rate_key for c in claims if c.rate_key}
    named_slots = {c.slot_key for c in claims if c.slot_key} | set(freed)
    locked = named_rates | named_slots
    if locked:
        await io.lock(locked)
    read = await io.read([c.task_id for c in claims], named_slots, named_rates)
    now = read.clock  # (starts count from then)
    starting = [
        (c, read.rows[c.task_id])
        for c in claims
        if _starts(read.rows.get(c.task_id), c, read.due_by)
    ]
    rate_keys = {row.limits[RATE][0] for _, row in starting if RATE in row.limits}
    slot_keys = {row.limits[SLOTS][0] for _, row in starting if SLOTS in row.limits}
    if unnamed := (rate_keys | slot_keys) - locked:  # (rare: a message hid its limits)
        await io.lock(unnamed)
        more = await io.read([], slot_keys & unnamed, rate_keys & unnamed)
        now = more.clock
        read.used.update(more.used)
        read.buckets.update(more.buckets)
    held, started = await _decide(io, starting, read.used, read.buckets, now)
    # (a key with nobody waiting for a slot needs no release: most keys, most of the time)
    releasing = sorted(key for key in set(freed) if read.waiting[key])
    released = await io.release(releasing, RELEASE_AT_ONCE) if releasing else 0
    decided = {c.task_id for c, _ in starting}
    return [c for c in claims if c.task_id not in decided], started, held, released


async def _decide(
    io: LimitIO,
    starting: Sequence[tuple[records.ClaimRequest, Row]],
    used: Counter[str],
    buckets: dict[str, Bucket],
    now: float,
) -> tuple[dict[str, Held], dict[str, records.Claimed]]:
    """Hold back the rows their limits refuse, start the others; → (held, started)."""
    held: dict[str, Held] = {}
    for claim, row in starting:
        refusal = _refusal(row, used, buckets, now)
        if refusal is not None:
            held[claim.task_id] = refusal
        elif SLOTS in row.limits:
            used[row.limits[SLOTS][0]] += 1
    changed = {key: bucket for key, bucket in buckets.items() if bucket.changed}
    going = [c for c, _ in starting if c.task_id not in held]
    if not (changed or held or going):
        return held, {}
    return held, await io.write(changed, held, going)


async def release_slots(io: LimitIO, keys: Iterable[str]) -> int:
    """Make due the oldest tasks waiting for a slot of these keys, as many as are free
    (at most `RELEASE_AT_ONCE` per key); → how many (the caller wakes the leader)."""
    keys = sorted(set(keys))
    if not keys:
        return 0
    await io.lock(keys)
    return await io.release(keys, RELEASE_AT_ONCE)


@dataclasses.dataclass(slots=True)
class Bucket:
    """A rate key: `tat`, the GCRA's theoretical arrival time of starts; `booked`, the end of
    the turns given to tasks held back (epoch seconds)."""

    tat: float
    booked: float
    per_second: float
    burst: int
    changed: bool = False


def _refusal(row: Row, used: Counter[str], buckets: dict[str, Bucket], now: float) -> Held | None:
    """Why this row may not start now (None: it may; its slot or rate token is taken)."""
    if SLOTS in row.limits:
        key, most = row.limits[SLOTS]
        if used[key] >= most:
            return Held(SLOTS, key, None)
    if RATE not in row.limits:
        return None
    key, per_second, burst = row.limits[RATE]
    bucket = buckets.setdefault(key, Bucket(now, now, per_second, burst))
    bucket.per_second, bucket.burst, bucket.changed = per_second, burst, True
    interval = 1.0 / per_second
    start = max(bucket.tat, now)
    # Half an interval of slack for the jitter of turns coming due: still never more than
    # rate x period + burst starts in a period.
    allowed = start - (burst - 0.5) * interval <= now + _EPSILON
    queue_ahead = row.held_by != RATE and bucket.booked > now + _EPSILON
    if allowed and not queue_ahead:
        bucket.tat = start + interval
        return None
    # Its turn: after every task held back before it (or, at the front, when a start is free).
    turn = max(bucket.booked, start - (burst - 1) * interval)
    bucket.booked = turn + interval
    return Held(RATE, key, datetime.fromtimestamp(turn, UTC))


def _starts(row: Row | None, claim: records.ClaimRequest, now: float) -> bool:
    """Whether the claim would start this row now (and its limits must say whether)."""
    if row is None or not row.limits or (claim.name, claim.queue) != (row.name, row.queue):
        return False
    if row.state == TaskStatus.QUEUED.value:
        return True
    run_at = records.aware(row.run_at)
    return row.state == TaskStatus.SCHEDULED.value and (
        run_at is not None and run_at.timestamp() <= now
    )


def lock_number(scope: str, key: str) -> int:
    """A key's advisory lock (64 bits of a hash of it, in the namespace's scope)."""
    digest = hashlib.blake2b(f"{scope}taskq-limit:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def freed_keys(outcomes: Sequence[records.Outcome], stale: Iterable[tuple[str, int]]) -> list[str]:
    """The concurrency keys of the attempts whose end was stored."""
    lost = set(stale)
    return [o.slot_key for o in outcomes if o.slot_key and (o.task_id, o.attempt) not in lost]
