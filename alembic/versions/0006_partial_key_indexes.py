"""idempotency key and batch id indexes hold only the rows that have one

Most rows have neither: a full index keeps an entry for each NULL, and every update of a
task row (claim, outcome) adds another, which made them the costliest indexes of a worker's
writes. Partial indexes skip those rows; the unique key still never collides.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_HAS_KEY = sa.text("idempotency_key IS NOT NULL")
_HAS_BATCH = sa.text("batch_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_taskq_tasks_idempotency_key", table_name="taskq_tasks")
    op.create_index(
        "ix_taskq_tasks_idempotency_key",
        "taskq_tasks",
        ["idempotency_key"],
        unique=True,
        postgresql_where=_HAS_KEY,
        sqlite_where=_HAS_KEY,
    )
    op.drop_index("ix_taskq_tasks_batch_id", table_name="taskq_tasks")
    op.create_index(
        "ix_taskq_tasks_batch_id",
        "taskq_tasks",
        ["batch_id"],
        postgresql_where=_HAS_BATCH,
        sqlite_where=_HAS_BATCH,
    )


def downgrade() -> None:
    op.drop_index("ix_taskq_tasks_batch_id", table_name="taskq_tasks")
    op.create_index("ix_taskq_tasks_batch_id", "taskq_tasks", ["batch_id"])
    op.drop_index("ix_taskq_tasks_idempotency_key", table_name="taskq_tasks")
    op.create_index(
        "ix_taskq_tasks_idempotency_key", "taskq_tasks", ["idempotency_key"], unique=True
    )
