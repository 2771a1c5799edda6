"""taskq_schedules describes each schedule (its task, how it ticks, its next and last tick);
taskq_workers says which taskq version each process runs

The leader keeps these up to date as it ticks, so the dashboard and `taskq schedules` can show
a schedule without importing the app that declares it. `ticked_at` is the last tick actually
submitted (NULL: never), apart from `last_tick`, which starts at the moment the leader first saw
the schedule. A worker's `version` shows a fleet in the middle of an upgrade.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 23:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("taskq_workers") as batch:
        batch.add_column(sa.Column("version", sa.String(32), nullable=True))
    with op.batch_alter_table("taskq_schedules") as batch:
        batch.add_column(sa.Column("task", sa.String(255), nullable=True))
        batch.add_column(sa.Column("spec", sa.String(255), nullable=True))
        batch.add_column(sa.Column("timezone", sa.String(64), nullable=True))
        batch.add_column(sa.Column("next_tick", _TIME, nullable=True))
        batch.add_column(sa.Column("ticked_at", _TIME, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("taskq_schedules") as batch:
        for column in ("ticked_at", "next_tick", "timezone", "spec", "task"):
            batch.drop_column(column)
    with op.batch_alter_table("taskq_workers") as batch:
        batch.drop_column("version")
