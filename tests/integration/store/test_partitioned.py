"""The time-partitioned tasks table (`taskq db upgrade --partitioned`) on real PostgreSQL:
its shape, the store's verbs on it, and retention by whole partitions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from taskq.cli.prune import _prune
from taskq.status import TaskStatus
from taskq.store import PruneRule, Store
from taskq.store import partitions as parts
from taskq.store.migrations import upgrade_database

# A part of the store's contract, and row-by-row pruning, run here on the partitioned table
# too (all of it passes; a subset keeps CI short): inserts, the reads, a claim, outcomes
# (the current and a stale attempt's), the writer, the leader's publishing, the relay's
# insert-if-missing (its ON CONFLICT on (id, created_at)).
from tests.integration.store.test_contract import (  # noqa: F401
    new_task,
    test_claim_marks_running_and_counts_the_attempt,
    test_insert_if_missing_keeps_the_existing_row,
    test_insert_then_get_round_trips_values,
    test_only_scheduled_rows_are_locked_for_publishing_and_marked_queued,
    test_outcome_of_a_stale_attempt_does_not_overwrite,
    test_outcome_of_the_current_attempt_is_recorded,
    test_writer_batches_concurrent_claims,
)
from tests.integration.store.test_pruning import (  # noqa: F401
    backdate,
    finished,
    test_prune_by_name_and_in_batches,
    test_prune_deletes_old_finished_tasks_with_their_attempts_and_nothing_else,
)

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=40)
RULE = PruneRule(cutoff=NOW - timedelta(days=30))


@pytest.fixture
def store_url(postgres_url: str) -> str:  # (replaces the two-dialect one of conftest.py)
    return postgres_url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    done = await upgrade_database(store_url, partitioned=7)
    assert "partitioned" in done
    opened = Store(store_url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def sql(store_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(store_url.replace("+asyncpg", ""))
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def test_upgrade_partitioned_makes_partitions_ahead_and_a_default(
    store: Store, store_url: str
) -> None:
    kind = await sql(store_url, "SELECT relkind::text FROM pg_class WHERE relname = 'taskq_tasks'")
    assert kind[0][0] == "p"
    bounds = await sql(
        store_url,
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'taskq_tasks'::regclass",
    )
    names = {row[0] for row in bounds}
    assert "taskq_tasks_default" in names
    assert parts.partition_name(parts.boundary(NOW, 7)) in names
    assert parts.partition_name(parts.boundary(NOW + timedelta(days=14), 7)) in names
    # And a second upgrade leaves it as it is.
    assert "already partitioned" in await upgrade_database(store_url, partitioned=7)


async def test_a_date_with_no_partition_goes_to_default(store: Store, store_url: str) -> None:
    past = new_task(created_at=datetime(2001, 1, 1, tzinfo=UTC))
    future = new_task(created_at=NOW + timedelta(days=400))
    for task in (past, future):
        assert await store.insert_task(task) == task.id
    rows = await sql(
        store_url,
        "SELECT tableoid::regclass::text FROM taskq_tasks WHERE id = ANY($1::uuid[])",
        [past.id, future.id],
    )
    assert [row[0] for row in rows] == ["taskq_tasks_default"] * 2


async def test_an_idempotency_key_is_unique_across_partitions(store: Store) -> None:
    first = new_task(idempotency_key="k1", created_at=OLD)
    second = new_task(idempotency_key="k1", created_at=NOW)
    assert await store.insert_task(first) == first.id
    assert await store.insert_task(second) == first.id
    assert await store.get_task(second.id) is None


async def test_conversion_keeps_a_plain_tables_rows(postgres_url: str) -> None:
    plain = Store(postgres_url)
    await plain.open()
    try:
        kept = new_task(idempotency_key="k2")
        await plain.insert_task(kept)
    finally:
        await plain.close()
    assert "taskq_tasks_legacy" in await upgrade_database(postgres_url, partitioned=7)
    store = Store(postgres_url)
    await store.open()
    try:
        record = await store.get_task(kept.id)
        assert record is not None and record.state is TaskStatus.QUEUED
        # Its key stays taken.
        assert await store.insert_task(new_task(idempotency_key="k2")) == kept.id
    finally:
        await store.close()


async def retire_all(store: Store, rules: list[PruneRule]) -> list[str]:
    kinds: list[str] = []
    for _ in range(100):
        step = await store.retire_partitions(rules, NOW)
        if not step.kind:
            return kinds
        kinds.append(step.kind)
    raise AssertionError(f"retention never finished: {kinds[-5:]}")


async def test_retention_drops_an_old_partition_and_keeps_what_rules_keep(
    store: Store, store_url: str
) -> None:
    # Given an old partition holding old finished tasks, a dead-lettered one, one of a name
    # kept for ever, a queued one, and one with an idempotency key, each with its attempt
    await store.retire_partitions([], NOW)  # (the leader's creation of partitions)
    await sql(store_url, "SELECT 1")
    conn_url = store_url
    await _ensure_old(conn_url)
    gone = [await finished(store) for _ in range(3)]
    keyed = new_task(idempotency_key="old-key")
    await store.insert_task(keyed)
    dead = await finished(store, state=TaskStatus.FAILED, dead_reason="failed")
    forever = await finished(store, name="tests.forever")
    queued = new_task()
    await store.insert_task(queued)
    kept = [dead, forever, queued.id]
    await backdate(store_url, [*gone, keyed.id, *kept], OLD)
    old = parts.partition_name(parts.boundary(OLD, 7))
    await _finish(store_url, keyed.id)
    rules = [PruneRule(cutoff=NOW - timedelta(days=30), except_names=["tests.forever"])]

    # When retention runs by partitions
    kinds = await retire_all(store, rules)

    # Then the partition is dropped, the kept rows live on in DEFAULT with their attempts,
    # no attempt outlived its task, and the dropped task's key is free again
    assert "detached" in kinds and kinds[-1] == "dropped"
    assert not await sql(store_url, "SELECT 1 FROM pg_class WHERE relname = $1", old)
    assert set(await store.get_states([*gone, keyed.id, *kept])) == set(kept)
    where = await sql(
        store_url,
        "SELECT DISTINCT tableoid::regclass::text FROM taskq_tasks WHERE id = ANY($1::uuid[])",
        kept,
    )
    assert [row[0] for row in where] == ["taskq_tasks_default"]
    assert len(await store.list_attempts(dead)) == 1
    orphans = await sql(
        store_url,
        "SELECT count(*) FROM taskq_attempts a WHERE NOT EXISTS "
        "(SELECT 1 FROM taskq_tasks t WHERE t.id = a.task_id)",
    )
    assert orphans[0][0] == 0
    assert not await sql(
        store_url, "SELECT 1 FROM taskq_task_keys WHERE idempotency_key = 'old-key'"
    )
    again = new_task(idempotency_key="old-key")
    assert await store.insert_task(again) == again.id


async def test_row_deletes_spare_the_partition_the_cutoff_falls_in(
    store: Store, store_url: str
) -> None:
    # (its rows go with the partition, up to one interval late; a cutoff in no dated
    # partition stays as it is)
    await _ensure_old(store_url)
    inside, outside = OLD + timedelta(hours=1), datetime(2001, 1, 1, tzinfo=UTC)
    floored = await store.row_rules([PruneRule(cutoff=inside), PruneRule(cutoff=outside)])
    assert [rule.cutoff for rule in floored] == [parts.boundary(inside, 7), outside]


async def test_taskq_prune_drops_partitions_then_deletes_rows(store: Store, store_url: str) -> None:
    await _ensure_old(store_url)
    gone = [await finished(store) for _ in range(2)]
    await backdate(store_url, gone, OLD)
    assert await _prune(Store(store_url), RULE, dry_run=False) == 2
    assert await store.get_states(gone) == {}


async def _ensure_old(store_url: str) -> None:
    """A partition for OLD, as a database that ran for 40 days has."""
    engine_store = Store(store_url)
    await engine_store.open()
    try:
        await engine_store._run(lambda conn: parts.ensure(conn, OLD, OLD + timedelta(days=1), 7))
    finally:
        await engine_store.close()


async def _finish(store_url: str, task_id: str) -> None:
    await sql(
        store_url,
        "UPDATE taskq_tasks SET state = 'succeeded', finished_at = created_at WHERE id = $1",
        uuid.UUID(task_id),
    )
