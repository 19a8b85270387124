"""Fused training: how many cells trained as one stacked model with a run (:mod:`bench.fusion`).

``runs`` gains ``fused_members`` (the group's size; null when the cell trained alone, as every run stored before
did): nullable, so adding it changes no row. The schema version stays 1.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("runs")}  # a database made at this head
    if "fused_members" not in have:
        op.add_column("runs", sa.Column("fused_members", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("fused_members")
