"""Flow control: the limits a task is subject to, why it waits, rate-limit rows, worker tags

A task's row says what limits it is subject to (`limits`: the rate, concurrency and quota
specs with their keys) and keeps each key in a column of its own, indexed where it is counted:
running tasks per concurrency key, unfinished tasks per quota key. `held_by` says which limit
holds a `scheduled` task back ("rate" or "slots"). `taskq_rate_limits` keeps each rate key's
theoretical arrival time (GCRA) and how far ahead starts are booked for tasks held back. Workers list the tags they were started with.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 21:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_SLOT = "slot_key IS NOT NULL AND state IN ('running', 'scheduled')"
_QUOTA = "quota_key IS NOT NULL AND state IN ('queued', 'scheduled', 'running')"


def upgrade() -> None:
    with op.batch_alter_table("taskq_tasks") as batch:
        batch.add_column(sa.Column("limits", _JSON, nullable=True))
        batch.add_column(sa.Column("rate_key", sa.String(255), nullable=True))
        batch.add_column(sa.Column("slot_key", sa.String(255), nullable=True))
        batch.add_column(sa.Column("quota_key", sa.String(255), nullable=True))
        batch.add_column(sa.Column("held_by", sa.String(16), nullable=True))
    op.create_index(
        "ix_taskq_tasks_slots",
        "taskq_tasks",
        ["slot_key", "state"],
        postgresql_where=sa.text(_SLOT),
        sqlite_where=sa.text(_SLOT),
    )
    op.create_index(
        "ix_taskq_tasks_quota",
        "taskq_tasks",
        ["quota_key"],
        postgresql_where=sa.text(_QUOTA),
        sqlite_where=sa.text(_QUOTA),
    )
    op.create_table(
        "taskq_rate_limits",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("tat", sa.Float(), nullable=False),
        sa.Column("booked", sa.Float(), nullable=False),
        sa.Column("per_second", sa.Float(), nullable=False),
        sa.Column("burst", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_taskq_rate_limits")),
    )
    with op.batch_alter_table("taskq_workers") as batch:
        batch.add_column(sa.Column("tags", _JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("taskq_workers") as batch:
        batch.drop_column("tags")
    op.drop_table("taskq_rate_limits")
    op.drop_index("ix_taskq_tasks_quota", table_name="taskq_tasks")
    op.drop_index("ix_taskq_tasks_slots", table_name="taskq_tasks")
    with op.batch_alter_table("taskq_tasks") as batch:
        for column in ("held_by", "quota_key", "slot_key", "rate_key", "limits"):
            batch.drop_column(column)
