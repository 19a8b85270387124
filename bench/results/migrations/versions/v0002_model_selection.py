"""Model selection on a validation set: the selected epoch and its validation accuracies.

``runs`` gains ``selected_epoch``, ``val_clean`` and ``val_robust`` (the epoch whose weights were evaluated and its
class-balanced validation accuracies, :mod:`bench.selection`), ``epoch_metrics`` gains ``val_clean`` and
``val_robust`` (each validated epoch's). All nullable, null for every run stored before (no validation set): adding
them changes no row. The schema version stays 1: a bench before alembic writes rows this schema still reads.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = {
    "runs": (("selected_epoch", sa.Integer()), ("val_clean", sa.Float()), ("val_robust", sa.Float())),
    "epoch_metrics": (("val_clean", sa.Float()), ("val_robust", sa.Float())),
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, columns in COLUMNS.items():
        have = {c["name"] for c in inspector.get_columns(table)}  # a database made at this head, stamped earlier
        for name, kind in columns:  # ALTER TABLE ... ADD COLUMN: in place on SQLite and PostgreSQL, rows untouched
            if name not in have:
                op.add_column(table, sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for name, _ in columns:
                batch.drop_column(name)
