"""The DDL of the time-partitioned tasks table (PostgreSQL only; `taskq.store.partitions`).

The partitioned `taskq_tasks` has the plain table's columns, checks and index names (so a
later migration that names an index works on both shapes), with two changes that
PostgreSQL imposes: every unique index must hold the partition key, so the primary key is
(id, created_at), and the idempotency key's uniqueness moves to `taskq_task_keys`, kept by
two triggers (a unique index on the key alone cannot exist on a partitioned table).
"""

from __future__ import annotations

PARENT = "taskq_tasks"
DEFAULT = "taskq_tasks_default"
LEGACY = "taskq_tasks_legacy"  # a converted database's rows, attached as one partition
PREFIX = "taskq_tasks_p"  # + the partition's first day, YYYYMMDD (UTC)
KEYS = "taskq_task_keys"

# Which idempotency key each task holds: the unique index the partitioned table cannot have.
CREATE_KEYS = f"""
CREATE TABLE {KEYS} (
    idempotency_key varchar(255) NOT NULL,
    task_id uuid NOT NULL,
    CONSTRAINT pk_{KEYS} PRIMARY KEY (idempotency_key)
)"""

# Before a keyed row goes in: take its key, or skip the row (as the plain table's ON CONFLICT
# DO NOTHING does) if another task holds it. The key's insert waits for a concurrent insert
# of the same key to commit, as the plain table's unique index does. A row moved back in by
# retention keeps its own key.
CREATE_TAKE_KEY = f"""
CREATE FUNCTION taskq_take_key() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO {KEYS} (idempotency_key, task_id) VALUES (NEW.idempotency_key, NEW.id)
    ON CONFLICT (idempotency_key) DO NOTHING;
    IF FOUND OR EXISTS (
        SELECT 1 FROM {KEYS} WHERE idempotency_key = NEW.idempotency_key AND task_id = NEW.id
    ) THEN
        RETURN NEW;
    END IF;
    RETURN NULL;
END $$"""

# After a keyed row is deleted (retention, by hand): free its key unless the task is still
# there (moved to another partition in the same statement).
CREATE_FREE_KEY = f"""
CREATE FUNCTION taskq_free_key() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM {KEYS} AS k
    WHERE k.idempotency_key = OLD.idempotency_key AND k.task_id = OLD.id
        AND NOT EXISTS (SELECT 1 FROM {PARENT} AS t WHERE t.id = OLD.id);
    RETURN NULL;
END $$"""

TRIGGERS = (
    f"CREATE TRIGGER taskq_take_key BEFORE INSERT ON {PARENT} FOR EACH ROW "
    "WHEN (NEW.idempotency_key IS NOT NULL) EXECUTE FUNCTION taskq_take_key()",
    f"CREATE TRIGGER taskq_free_key AFTER DELETE ON {PARENT} FOR EACH ROW "
    "WHEN (OLD.idempotency_key IS NOT NULL) EXECUTE FUNCTION taskq_free_key()",
)

IS_PARTITIONED = f"SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass('{PARENT}')"

# The partitions, their bounds as text (read with TimeZone UTC: `partitions.bounds_of`).
LIST_PARTITIONS = f"""
SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = to_regclass('{PARENT}')"""

# Tables of ours that retention detached and has not dropped yet (in this schema).
LIST_DETACHED = f"""
SELECT c.relname AS name FROM pg_class AS c
WHERE c.relkind = 'r' AND c.relnamespace = (SELECT relnamespace FROM pg_class
                                           WHERE oid = to_regclass('{PARENT}'))
    AND (c.relname LIKE '{PREFIX}%' OR c.relname = '{LEGACY}')
    AND NOT EXISTS (SELECT 1 FROM pg_inherits AS i WHERE i.inhrelid = c.oid)
ORDER BY c.relname"""

# A detached table's tasks, a batch at a time by id: their attempts go (→ the batch's last id).
DELETE_ATTEMPTS = """
WITH batch AS (SELECT id FROM "{table}" WHERE id > CAST(:after AS uuid) ORDER BY id LIMIT :n),
gone AS (DELETE FROM taskq_attempts AS a USING batch WHERE a.task_id = batch.id)
SELECT id::text FROM batch ORDER BY id DESC LIMIT 1"""

# …then their keys, then the table.
DELETE_KEYS = f"""
DELETE FROM {KEYS} AS k USING "{{table}}" AS t
WHERE t.idempotency_key IS NOT NULL AND k.idempotency_key = t.idempotency_key
    AND k.task_id = t.id"""
