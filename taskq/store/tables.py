"""The schema: SQLAlchemy Core tables, and alembic's `target_metadata`.

Designed for PostgreSQL (uuid, timestamptz, jsonb) so users can inspect tasks with plain
SQL; the same tables work on SQLite for the embedded default.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
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
    CheckConstraint(f"state IN ({STATES})", name="state"),
    Index(None, "state", "created_at"),
    Index(None, "name", "created_at"),
    Index(None, "queue", "created_at"),
    Index(None, "created_at"),
)
