"""Baseline: schema version 1, as every bench before alembic wrote it.

A database created by such a bench says ``bench_meta.schema_version = '1'`` and has no ``alembic_version``
table. Those benches only ever added tables (``test_labels``, ``attack_specs`` and ``guards`` came with the
robustness guards, ``feature_dumps`` and ``theory_results`` before them; no column ever changed), so this
revision creates the tables a database lacks and leaves the ones it has, with every row, as they are: applied to
a database of any of those benches — or to an empty one — it yields the schema below.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = (
    "bench_meta",
    "runs",
    "theory_results",
    "attack_specs",
    "class_metrics",
    "epoch_metrics",
    "feature_dumps",
    "guards",
    "sample_flags",
    "test_labels",
)


def upgrade() -> None:
    have = set(sa.inspect(op.get_bind()).get_table_names())
    if "bench_meta" not in have:
        op.create_table(
            "bench_meta",
            sa.Column("key", sa.String(length=64), nullable=False),
            sa.Column("value", sa.Text(), nullable=False),
            sa.PrimaryKeyConstraint("key"),
        )
    if "runs" not in have:
        op.create_table(
            "runs",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("cell_hash", sa.String(length=32), nullable=False),
            sa.Column("suite", sa.String(length=128), nullable=False),
            sa.Column("method", sa.String(length=64), nullable=False),
            sa.Column("dataset", sa.String(length=64), nullable=False),
            sa.Column("imbalance", sa.String(length=128), nullable=False),
            sa.Column("seed", sa.Integer(), nullable=False),
            sa.Column("model", sa.String(length=64), nullable=False),
            sa.Column("adversarial", sa.Boolean(), nullable=False),
            sa.Column("config_json", sa.Text(), nullable=False),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("error", sa.Text(), nullable=True),
            sa.Column("worker", sa.String(length=256), nullable=True),
            sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
            sa.Column("started_at", sa.DateTime(), nullable=True),
            sa.Column("finished_at", sa.DateTime(), nullable=True),
            sa.Column("epochs_done", sa.Integer(), nullable=False),
            sa.Column("wall_seconds", sa.Float(), nullable=True),
            sa.Column("train_seconds", sa.Float(), nullable=True),
            sa.Column("images_per_second", sa.Float(), nullable=True),
            sa.Column("peak_memory_mb", sa.Float(), nullable=True),
            sa.Column("device", sa.String(length=128), nullable=True),
            sa.Column("host", sa.String(length=128), nullable=True),
            sa.Column("git_commit", sa.String(length=64), nullable=True),
            sa.Column("versions_json", sa.Text(), nullable=True),
            sa.Column("subset_hash", sa.String(length=64), nullable=True),
            sa.Column("class_names_json", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_runs_cell_hash", "runs", ["cell_hash"], unique=True)
        op.create_index("ix_runs_method", "runs", ["method"], unique=False)
        op.create_index("ix_runs_status", "runs", ["status"], unique=False)
        op.create_index("ix_runs_suite", "runs", ["suite"], unique=False)
    if "theory_results" not in have:
        op.create_table(
            "theory_results",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("suite", sa.String(length=128), nullable=False),
            sa.Column("description", sa.Text(), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.Column("frame_json", sa.Text(), nullable=False),
            sa.Column("pairs_json", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("suite"),
        )
    if "attack_specs" not in have:
        op.create_table(
            "attack_specs",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("run_id", sa.Integer(), nullable=False),
            sa.Column("attack", sa.String(length=64), nullable=False),
            sa.Column("kind", sa.String(length=32), nullable=False),
            sa.Column("spec_json", sa.Text(), nullable=False),
            sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("run_id", "attack"),
        )
        op.create_index(
            "ix_attack_specs_run_id", "attack_specs", ["run_id"], unique=False
        )
    if "class_metrics" not in have:
        op.create_table(
            "class_metrics",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("run_id", sa.Integer(), nullable=False),
            sa.Column("attack", sa.String(length=64), nullable=False),
            sa.Column("attack_order", sa.Integer(), nullable=False),
            sa.Column("class_index", sa.Integer(), nullable=False),
            sa.Column("class_name", sa.String(length=64), nullable=False),
            sa.Column("n_train", sa.Integer(), nullable=False),
            sa.Column("n_test", sa.Integer(), nullable=False),
            sa.Column("correct", sa.Integer(), nullable=False),
            sa.Column("accuracy", sa.Float(), nullable=False),
            sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("run_id", "attack", "class_index"),
        )
        op.create_index(
            "ix_class_metrics_run_id", "class_metrics", ["run_id"], unique=False
        )
    if "epoch_metrics" not in have:
        op.create_table(
            "epoch_metrics",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("run_id", sa.Integer(), nullable=False),
            sa.Column("epoch", sa.Integer(), nullable=False),
            sa.Column("lr", sa.Float(), nullable=False),
            sa.Column("loss", sa.Float(), nullable=False),
            sa.Column("train_accuracy", sa.Float(), nullable=False),
            sa.Column("seconds", sa.Float(), nullable=False),
            sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("run_id", "epoch"),
        )
        op.create_index(
            "ix_epoch_metrics_run_id", "epoch_metrics", ["run_id"], unique=False
        )
    if "feature_dumps" not in have:
        op.create_table(
            "feature_dumps",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("run_id", sa.Integer(), nullable=False),
            sa.Column("split", sa.String(length=16), nullable=False),
            sa.Column("kind", sa.String(length=64), nullable=False),
            sa.Column("n", sa.Integer(), nullable=False),
            sa.Column("dim", sa.Integer(), nullable=False),
            sa.Column("labels", sa.LargeBinary(), nullable=False),
            sa.Column("vectors", sa.LargeBinary(), nullable=False),
            sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("run_id", "split", "kind"),
        )
        op.create_index(
            "ix_feature_dumps_run_id", "feature_dumps", ["run_id"], unique=False
        )
    if "guards" not in have:
        op.create_table(
            "guards",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("run_id", sa.Integer(), nullable=False),
            sa.Column("name", sa.String(length=64), nullable=False),
            sa.Column("value", sa.Float(), nullable=False),
            sa.Column("threshold", sa.Float(), nullable=False),
            sa.Column("flagged", sa.Boolean(), nullable=False),
            sa.Column("detail", sa.Text(), nullable=False),
            sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("run_id", "name"),
        )
        op.create_index("ix_guards_run_id", "guards", ["run_id"], unique=False)
    if "sample_flags" not in have:
        op.create_table(
            "sample_flags",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("run_id", sa.Integer(), nullable=False),
            sa.Column("attack", sa.String(length=64), nullable=False),
            sa.Column("n", sa.Integer(), nullable=False),
            sa.Column("bits", sa.LargeBinary(), nullable=False),
            sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("run_id", "attack"),
        )
        op.create_index(
            "ix_sample_flags_run_id", "sample_flags", ["run_id"], unique=False
        )
    if "test_labels" not in have:
        op.create_table(
            "test_labels",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("run_id", sa.Integer(), nullable=False),
            sa.Column("n", sa.Integer(), nullable=False),
            sa.Column("labels", sa.LargeBinary(), nullable=False),
            sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_test_labels_run_id", "test_labels", ["run_id"], unique=True)
    meta = sa.table("bench_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    found = op.get_bind().execute(sa.select(meta.c.value).where(meta.c.key == "schema_version"))
    if found.first() is None:
        op.bulk_insert(meta, [{"key": "schema_version", "value": "1"}])


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
