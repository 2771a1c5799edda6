"""The schema: SQLAlchemy Core tables, and alembic's `target_metadata`.

Designed for PostgreSQL (uuid, timestamptz, jsonb) so users can inspect tasks with plain
SQL; the same tables work on SQLite for the embedded default.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Uuid,
    text,
)
from sqlalchemy.dialects import postgresql

from taskq.status import TaskStatus

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# jsonb on PostgreSQL (indexable, shown as JSON by psql), JSON text on SQLite.
JsonValue = JSON().with_variant(postgresql.JSONB(), "postgresql")
# For result/error: Python None is SQL NULL, so `WHERE error IS NULL` means "no error".
JsonOrNull = JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
Timestamp = DateTime(timezone=True)

STATES = ", ".join(f"'{state.value}'" for state in TaskStatus)
_SLOT = "slot_key IS NOT NULL AND state IN ('running', 'scheduled')"
_QUOTA = "quota_key IS NOT NULL AND state IN ('queued', 'scheduled', 'running')"

tasks = Table(
    "taskq_tasks",
    metadata,
    Column("id", Uuid(as_uuid=False), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("queue", String(255), nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("args", JsonValue, nullable=False),
    Column("kwargs", JsonValue, nullable=False),
    Column("result", JsonOrNull, nullable=True),
    Column("error", JsonOrNull, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("timeout", Float, nullable=True),
    Column("worker_id", String(255), nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("started_at", Timestamp, nullable=True),
    Column("finished_at", Timestamp, nullable=True),
    # When a `scheduled` task is due (countdown, eta, periodic tick).
    Column("run_at", Timestamp, nullable=True),
    # Submitting twice with one key gives one task (unique; NULLs do not collide).
    Column("idempotency_key", String(255), nullable=True),
    # Retries used so far, of max_retries (a retry follows the task's policy; a crash is
    # not a retry).
    Column("retries", Integer, nullable=False, server_default="0"),
    Column("max_retries", Integer, nullable=False, server_default="0"),
    # Deliveries since the last retry or replay: a task that keeps killing its worker is
    # dead-lettered once this passes its max_deliveries.
    Column("deliveries", Integer, nullable=False, server_default="0"),
    Column("expires_at", Timestamp, nullable=True),
    Column("cancel_requested_at", Timestamp, nullable=True),
    # Why the task's message went to <queue>.dlq, if it did.
    Column("dead_reason", String(32), nullable=True),
    # Set once a long task's message was acked early: the worker keeps extending it, and
    # the leader requeues the task if it lapses (the worker died).
    Column("lease_until", Timestamp, nullable=True),
    # The latest `context().progress(...)` of the running attempt: fraction, message, data,
    # and `n`, its number within the attempt (coalesced: not every update is written).
    Column("progress", JsonOrNull, nullable=True),
    # Every task of one `submit_many` shares its batch id.
    Column("batch_id", Uuid(as_uuid=False), nullable=True),
    # What submit middleware added, str → str, the W3C trace context of the submit among
    # them (traceparent, tracestate): every publish of the task, retries and replays
    # included, carries them, so one trace shows every attempt and every attempt sees them.
    Column("headers", JsonOrNull, nullable=True),
    # A workflow's step (`taskq.chain`, `group`, `chord`): its workflow, its number there,
    # the steps it waits for and those waiting for it (JSON lists of step numbers), how many
    # of `parents` have not ended yet (it stays `scheduled` with no run_at until 0), and
    # what its first argument is made of (a step number, or a list of such shapes).
    Column("workflow_id", Uuid(as_uuid=False), nullable=True),
    Column("step", Integer, nullable=True),
    Column("parents", JsonOrNull, nullable=True),
    Column("children", JsonOrNull, nullable=True),
    Column("waiting_for", Integer, nullable=True),
    Column("receives", JsonOrNull, nullable=True),
    # A chord's body with tolerate_failures=True: a parent's failure does not cancel it.
    Column("tolerates_failures", Boolean, nullable=True),
    # Flow control (`taskq.store.limits`): the limits it is subject to, as submitted
    # ({"rate": [key, per second, burst], "slots": [key, n], "quota": [key, n]}), each key
    # again in a column of its own, and which limit holds it back while `scheduled`.
    Column("limits", JsonOrNull, nullable=True),
    Column("rate_key", String(255), nullable=True),
    Column("slot_key", String(255), nullable=True),
    Column("quota_key", String(255), nullable=True),
    Column("held_by", String(16), nullable=True),
    CheckConstraint(f"state IN ({STATES})", name="state"),
    Index(None, "state", "created_at"),
    Index(None, "name", "created_at"),
    Index(None, "queue", "created_at"),
    Index(None, "created_at"),
    # Partial: most rows have no key and no batch, and need no entry (nor its upkeep).
    Index(
        None,
        "idempotency_key",
        unique=True,
        postgresql_where=text("idempotency_key IS NOT NULL"),
        sqlite_where=text("idempotency_key IS NOT NULL"),
    ),
    Index(
        None,
        "batch_id",
        postgresql_where=text("batch_id IS NOT NULL"),
        sqlite_where=text("batch_id IS NOT NULL"),
    ),
    # A step by its number, for the release of its children and the reads of its value.
    Index(
        None,
        "workflow_id",
        "step",
        unique=True,
        postgresql_where=text("workflow_id IS NOT NULL"),
        sqlite_where=text("workflow_id IS NOT NULL"),
    ),
    # The leader's claim of due tasks reads only this small partial index.
    Index(
        "ix_taskq_tasks_due",
        "run_at",
        postgresql_where=text("state = 'scheduled'"),
        sqlite_where=text("state = 'scheduled'"),
    ),
    # The leader's sweeps: waiting tasks past their expiry, and long tasks whose lease lapsed.
    Index(
        "ix_taskq_tasks_expiring",
        "expires_at",
        postgresql_where=text("expires_at IS NOT NULL AND state IN ('scheduled', 'queued')"),
        sqlite_where=text("expires_at IS NOT NULL AND state IN ('scheduled', 'queued')"),
    ),
    # Slots in use (running) and tasks waiting for one, per concurrency key; unfinished
    # tasks per quota key.
    Index(
        "ix_taskq_tasks_slots",
        "slot_key",
        "state",
        postgresql_where=text(_SLOT),
        sqlite_where=text(_SLOT),
    ),
    Index(
        "ix_taskq_tasks_quota",
        "quota_key",
        postgresql_where=text(_QUOTA),
        sqlite_where=text(_QUOTA),
    ),
    Index(
        "ix_taskq_tasks_leased",
        "lease_until",
        postgresql_where=text("lease_until IS NOT NULL AND state = 'running'"),
        sqlite_where=text("lease_until IS NOT NULL AND state = 'running'"),
    ),
)

# Every attempt of every task: when it ran, where, and how it ended.
attempts = Table(
    "taskq_attempts",
    metadata,
    Column("task_id", Uuid(as_uuid=False), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("worker_id", String(255), nullable=True),
    Column("state", String(16), nullable=False),
    Column("started_at", Timestamp, nullable=True),
    Column("finished_at", Timestamp, nullable=False),
    Column("error", JsonOrNull, nullable=True),
)

# One row per workflow: when it was submitted, how many steps it has, and its value's
# shape (which steps' values make it up: a step number, or a list of shapes).
workflows = Table(
    "taskq_workflows",
    metadata,
    Column("id", Uuid(as_uuid=False), primary_key=True),
    Column("created_at", Timestamp, nullable=False),
    Column("steps", Integer, nullable=False),
    Column("output", JsonValue, nullable=False),
    Index(None, "created_at"),
)

# The last tick handled for each periodic schedule, so a new leader neither repeats nor
# (within the misfire grace) skips a tick.
schedules = Table(
    "taskq_schedules",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("last_tick", Timestamp, nullable=False),
    # What the leader last saw of it, for those who have not its app (0011): NULL till then.
    Column("task", String(255), nullable=True),
    Column("spec", String(255), nullable=True),  # "cron */5 * * * *", "every 0:00:30"
    Column("timezone", String(64), nullable=True),
    Column("next_tick", Timestamp, nullable=True),
    Column("ticked_at", Timestamp, nullable=True),  # the last tick submitted (NULL: never)
)

# Each rate-limit key's theoretical arrival time of its starts (GCRA, epoch seconds by the
# database's clock), and the end of the turns booked for tasks held back (`store.limits`).
rate_limits = Table(
    "taskq_rate_limits",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("tat", Float, nullable=False),
    Column("booked", Float, nullable=False),
    Column("per_second", Float, nullable=False),
    Column("burst", Integer, nullable=False),
)

# One row per worker or scheduler process: who runs, who leads, who stopped beating.
workers = Table(
    "taskq_workers",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("queues", JsonValue, nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("leader", Boolean, nullable=False),
    Column("started_at", Timestamp, nullable=False),
    Column("heartbeat_at", Timestamp, nullable=False),
    Column("stopped_at", Timestamp, nullable=True),
    # As of the last heartbeat: tasks running, and resident memory in bytes.
    Column("running", Integer, nullable=False, server_default="0"),
    Column("memory", BigInteger, nullable=False, server_default="0"),
    Column("tags", JsonOrNull, nullable=True),  # what it was started with (`--tags`)
    Column("version", String(32), nullable=True),  # taskq's version in that process (0011)
    CheckConstraint("state IN ('running', 'stopped', 'dead')", name="state"),
    CheckConstraint("role IN ('worker', 'scheduler')", name="role"),
    Index(None, "state", "heartbeat_at"),
)

# Values every process of an installation shares and only those with the database may read:
# `event_key` signs task events when no TASKQ_SIGNING_KEY is set (`taskq.signing`).
secrets = Table(
    "taskq_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
)
