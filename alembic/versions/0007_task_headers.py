"""task headers: the middleware's str → str values, carried by every publish of the task

Nullable and without a default, so adding it rewrites no row (PostgreSQL and SQLite alike).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    json_or_null = sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )
    op.add_column("taskq_tasks", sa.Column("headers", json_or_null, nullable=True))


def downgrade() -> None:
    op.drop_column("taskq_tasks", "headers")
