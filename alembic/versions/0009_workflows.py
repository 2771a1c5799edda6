"""Workflows: a step's place in its workflow on its row, and a row per workflow

Every step of a chain, group or chord is a task row that also says which workflow it
belongs to, its step number, its parents and children, how many parents have yet to end,
and what its first argument is made of. `taskq_workflows` keeps each workflow's size and
the shape of its value.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_WORKFLOW_STEP = "workflow_id IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("taskq_tasks") as batch:
        batch.add_column(sa.Column("workflow_id", sa.Uuid(as_uuid=False), nullable=True))
        batch.add_column(sa.Column("step", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("parents", _JSON, nullable=True))
        batch.add_column(sa.Column("children", _JSON, nullable=True))
        batch.add_column(sa.Column("waiting_for", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("receives", _JSON, nullable=True))
        batch.add_column(sa.Column("tolerates_failures", sa.Boolean(), nullable=True))
    op.create_index(
        op.f("ix_taskq_tasks_workflow_id_step"),
        "taskq_tasks",
        ["workflow_id", "step"],
        unique=True,
        postgresql_where=sa.text(_WORKFLOW_STEP),
        sqlite_where=sa.text(_WORKFLOW_STEP),
    )
    op.create_table(
        "taskq_workflows",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column(
            "output", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_taskq_workflows")),
    )
    op.create_index(
        op.f("ix_taskq_workflows_created_at"), "taskq_workflows", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_taskq_workflows_created_at"), table_name="taskq_workflows")
    op.drop_table("taskq_workflows")
    op.drop_index(op.f("ix_taskq_tasks_workflow_id_step"), table_name="taskq_tasks")
    with op.batch_alter_table("taskq_tasks") as batch:
        for column in (
            "tolerates_failures", "receives", "waiting_for", "children", "parents", "step",
            "workflow_id",
        ):  # fmt: skip
            batch.drop_column(column)
