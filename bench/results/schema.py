"""The results database's schema: one ORM class per table, and the packed encodings of per-sample data.

Tables (tidy, one fact per row):

* ``runs`` — one row per cell: its hash (the cache key), the grid keys, the resolved config as JSON, status
  (``running`` / ``done`` / ``failed`` / ``diverged`` / ``interrupted``) with the error text, timings,
  images/s, peak memory, provenance (git commit, library versions, device, host) and the data-subset hash; for a
  cell with a validation set (``val_split``, :mod:`bench.selection`) the epoch whose weights were evaluated
  (``selected_epoch``) and its class-balanced validation accuracies (``val_clean``, ``val_robust``), else null.
* ``class_metrics`` — per run × attack × class: train count, test count, correct, accuracy. ``attack`` is
  ``clean`` for standard accuracy; ``attack_order`` keeps the suite's order (0 = clean, 1 = the first
  evaluation attack, which the tables call "Robust").
* ``epoch_metrics`` — the per-epoch training curve; ``val_clean`` / ``val_robust`` on the epochs a cell with a
  validation set was validated (null otherwise).
* ``sample_flags`` — per run × attack, the per-test-sample correctness bits (packed), so any later metric or
  paired test can be recomputed without re-running.
* ``test_labels`` — per run, the test labels in the order of the flags (per-class metrics from the flags,
  e.g. the worst case over attacks in :mod:`bench.guards`).
* ``attack_specs`` — per run × attack, the attack's resolved table (kind and parameters) as JSON, for the
  attacks of the suite and those added later by ``bench evaluate``.
* ``guards`` — per run × guard (:mod:`bench.guards`): value, threshold, whether it is flagged, and a JSON detail.


Only :mod:`bench.results` imports this module: everything else reads through :mod:`bench.results.read` and
writes through :class:`bench.results.store.Store`.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
from sqlalchemy import Boolean, Float, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "bench_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cell_hash: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    suite: Mapped[str] = mapped_column(String(128), index=True)
    method: Mapped[str] = mapped_column(String(64), index=True)
    dataset: Mapped[str] = mapped_column(String(64))
    imbalance: Mapped[str] = mapped_column(String(128))
    seed: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(64))
    adversarial: Mapped[bool] = mapped_column(Boolean, default=True)
    config_json: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(256), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    wall_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    train_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    images_per_second: Mapped[float | None] = mapped_column(Float, nullable=True)
    peak_memory_mb: Mapped[float | None] = mapped_column(Float, nullable=True)
    device: Mapped[str | None] = mapped_column(String(128), nullable=True)
    host: Mapped[str | None] = mapped_column(String(128), nullable=True)
    git_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    versions_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    subset_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    class_names_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    selected_epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)  # revision 0002 (model selection)
    val_clean: Mapped[float | None] = mapped_column(Float, nullable=True)
    val_robust: Mapped[float | None] = mapped_column(Float, nullable=True)
    fused_members: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 0003: cells trained as one model


class ClassMetric(Base):
    __tablename__ = "class_metrics"
    __table_args__ = (UniqueConstraint("run_id", "attack", "class_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    attack: Mapped[str] = mapped_column(String(64))
    attack_order: Mapped[int] = mapped_column(Integer)
    class_index: Mapped[int] = mapped_column(Integer)
    class_name: Mapped[str] = mapped_column(String(64))
    n_train: Mapped[int] = mapped_column(Integer)
    n_test: Mapped[int] = mapped_column(Integer)
    correct: Mapped[int] = mapped_column(Integer)
    accuracy: Mapped[float] = mapped_column(Float)


class EpochMetric(Base):
    __tablename__ = "epoch_metrics"
    __table_args__ = (UniqueConstraint("run_id", "epoch"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    lr: Mapped[float] = mapped_column(Float)
    loss: Mapped[float] = mapped_column(Float)
    train_accuracy: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    val_clean: Mapped[float | None] = mapped_column(Float, nullable=True)  # revision 0002 (model selection)
    val_robust: Mapped[float | None] = mapped_column(Float, nullable=True)


class SampleFlags(Base):
    __tablename__ = "sample_flags"
    __table_args__ = (UniqueConstraint("run_id", "attack"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    attack: Mapped[str] = mapped_column(String(64))
    n: Mapped[int] = mapped_column(Integer)
    bits: Mapped[bytes] = mapped_column(LargeBinary)


class TestLabels(Base):
    """A run's test labels in the order of its sample flags (int16, packed as bytes)."""

    __tablename__ = "test_labels"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), unique=True, index=True)
    n: Mapped[int] = mapped_column(Integer)
    labels: Mapped[bytes] = mapped_column(LargeBinary)


class AttackSpecRow(Base):
    """The resolved table of one evaluated attack of a run (``kind`` repeated for queries)."""

    __tablename__ = "attack_specs"
    __table_args__ = (UniqueConstraint("run_id", "attack"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    attack: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    spec_json: Mapped[str] = mapped_column(Text)


class GuardRow(Base):
    """One robustness guard of a run (``bench.guards``): value, threshold, flagged, JSON detail."""

    __tablename__ = "guards"
    __table_args__ = (UniqueConstraint("run_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    flagged: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str] = mapped_column(Text)


class FeatureDump(Base):
    """Penultimate features of a sample of points (``split`` train/test, ``kind`` clean/adversarial), float16."""

    __tablename__ = "feature_dumps"
    __table_args__ = (UniqueConstraint("run_id", "split", "kind"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    split: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(64))
    n: Mapped[int] = mapped_column(Integer)
    dim: Mapped[int] = mapped_column(Integer)
    labels: Mapped[bytes] = mapped_column(LargeBinary)  # int16 [n]
    vectors: Mapped[bytes] = mapped_column(LargeBinary)  # float16 [n, dim]


class TheoryResult(Base):
    """A ``kind = "theory"`` suite's evaluated grid (Section 3), one row per suite, the frame as JSON."""

    __tablename__ = "theory_results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    suite: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column()
    frame_json: Mapped[str] = mapped_column(Text)
    pairs_json: Mapped[str | None] = mapped_column(Text, nullable=True)


def pack_flags(flags) -> bytes:
    """Per-sample correctness flags (bool [n]) packed eight to a byte."""
    return np.packbits(np.asarray(flags, dtype=bool)).tobytes()


def unpack_flags(bits: bytes, n: int) -> np.ndarray:
    """Per-sample correctness flags from their packed form."""
    return np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=n).astype(bool)
