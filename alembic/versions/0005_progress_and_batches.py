"""progress, batches and trace context

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    json_or_null = sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )
    op.add_column("taskq_tasks", sa.Column("progress", json_or_null, nullable=True))
    op.add_column("taskq_tasks", sa.Column("batch_id", sa.Uuid(as_uuid=False), nullable=True))
    op.add_column("taskq_tasks", sa.Column("trace_context", json_or_null, nullable=True))
    op.create_index("ix_taskq_tasks_batch_id", "taskq_tasks", ["batch_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_taskq_tasks_batch_id", table_name="taskq_tasks")
    op.drop_column("taskq_tasks", "trace_context")
    op.drop_column("taskq_tasks", "batch_id")
    op.drop_column("taskq_tasks", "progress")
