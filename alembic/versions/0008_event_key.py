"""taskq_secrets, holding the key that signs task events by default

Events carry results. A client took a result from an event only when TASKQ_SIGNING_KEY
signed it, and otherwise read the row, a round trip more per `result()`. The database
now holds a random key that every process with access to it signs and checks events
with: a credential that may only publish on the vhost cannot forge a result, and no
read is needed. TASKQ_SIGNING_KEY, when set, still signs and checks everything instead.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 11:00:00
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "taskq_secrets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_taskq_secrets")),
    )
    op.bulk_insert(table, [{"name": "event_key", "value": secrets.token_urlsafe(32)}])


def downgrade() -> None:
    op.drop_table("taskq_secrets")
