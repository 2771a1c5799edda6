"""task headers: `trace_context` becomes `headers`, what submit middleware added

The W3C trace context was the only header taskq sent; middleware now adds its own (str →
str), and every publish of the task carries them all. A rename rewrites no row, on
PostgreSQL and on SQLite (3.25 and later) alike.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 09:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE taskq_tasks RENAME COLUMN trace_context TO headers")


def downgrade() -> None:
    op.execute("ALTER TABLE taskq_tasks RENAME COLUMN headers TO trace_context")
