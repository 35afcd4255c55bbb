"""Coordinators sharing the database, and the coordinator each lease came from.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 20:44:55.138603
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "coordinators",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.add_column("replicas", sa.Column("coordinator", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("replicas", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("coordinator")
    op.drop_table("coordinators")
