"""The results store: SQLAlchemy 2.0 over SQLite by default, any SQLAlchemy URL (PostgreSQL) for a team.

Tables (tidy, one fact per row):

* ``runs`` — one row per cell: its hash (the cache key), the grid keys, the resolved config as JSON, status
  (``running`` / ``done`` / ``failed`` / ``diverged`` / ``interrupted``) with the error text, timings,
  images/s, peak memory, provenance (git commit, library versions, device, host) and the data-subset hash.
* ``class_metrics`` — per run × attack × class: train count, test count, correct, accuracy. ``attack`` is
  ``clean`` for standard accuracy; ``attack_order`` keeps the suite's order (0 = clean, 1 = the first
  evaluation attack, which the tables call "Robust").
* ``epoch_metrics`` — the per-epoch training curve.
* ``sample_flags`` — per run × attack, the per-test-sample correctness bits (packed), so any later metric or
  paired test can be recomputed without re-running.
* ``test_labels`` — per run, the test labels in the order of the flags (per-class metrics from the flags,
  e.g. the worst case over attacks in :mod:`bench.guards`).
* ``attack_specs`` — per run × attack, the attack's resolved table (kind and parameters) as JSON, for the
  attacks of the suite and those added later by ``bench evaluate``.
* ``guards`` — per run × guard (:mod:`bench.guards`): value, threshold, whether it is flagged, and a JSON detail.

A finished cell's rows are written in one transaction, so a crash never leaves half a result. Cells are
claimed with a conditional UPDATE, so two ``bench run`` processes on one database never run the same cell.

Dialects: SQLite writers take the write lock when their transaction starts (``BEGIN IMMEDIATE``), so a
read-then-write never fails half-way on a lock upgrade; on PostgreSQL the same read locks its row
(``SELECT … FOR UPDATE``, which SQLite does not render) and a unique-key race on a new row is retried. Cells run
elsewhere (Slurm, Ray) are ``queued`` until their worker reports; :meth:`Store.ingest` writes a finished cell from
its result file (:mod:`bench.resultfile`) and is idempotent: the cell hash is the key, and a ``done`` run is never
written again.
"""

from __future__ import annotations

import io
import json
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bench.errors import BenchError

SCHEMA_VERSION = 1
STATUSES = ("queued", "running", "done", "failed", "diverged", "interrupted")
ACTIVE = ("queued", "running")  # a cell handed to a worker that has not reported an outcome yet
STALE_AFTER = timedelta(minutes=10)  # a claim from another host with no heartbeat for this long is abandoned


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


@dataclass(frozen=True)
class CellRecord:
    """What the runner knows of a cell before it runs: its identity and grid keys."""

    cell_hash: str
    suite: str
    method: str
    dataset: str
    imbalance: str
    seed: int
    model: str
    adversarial: bool
    config: dict


@dataclass
class CellResult:
    """A finished cell: everything written in the final transaction."""

    status: str  # done | failed | diverged | interrupted
    error: str | None = None
    class_names: Sequence[str] = ()
    train_counts: Sequence[int] = ()
    test_labels: np.ndarray | None = None  # [n_test] int
    correct: dict[str, np.ndarray] | None = None  # attack label -> [n_test] bool, in suite order (clean first)
    curves: Sequence[dict] = ()
    provenance: dict | None = None  # device, host, git_commit, versions, subset_hash
    wall_seconds: float | None = None
    train_seconds: float | None = None
    images_per_second: float | None = None
    peak_memory_mb: float | None = None
    epochs_done: int = 0
    features: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] | None = None  # (split, kind) -> (labels, h)
    attack_specs: dict[str, dict] | None = None  # attack label -> resolved eval_attacks table
    guards: Sequence[dict] = ()  # {"name", "value", "threshold", "flagged", "detail": dict} (bench.guards)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_abandoned(worker: str | None, heartbeat: datetime | None, now: datetime) -> bool:
    """Whether a ``running`` claim belongs to a process that is gone (same host: pid dead; else stale)."""
    if not worker:
        return True
    host, _, pid = worker.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return int(pid) != os.getpid() and not _pid_alive(int(pid))
    return heartbeat is None or now - heartbeat > STALE_AFTER


class Store:
    """A results database. Construct with a SQLAlchemy URL; :meth:`create` makes the schema."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise BenchError(f"database URL {url!r} is not a SQLAlchemy URL (e.g. sqlite:///results/bench.db)") from None
        if parsed.drivername == "postgresql":  # SQLAlchemy's default driver is psycopg2; bench ships psycopg 3
            parsed = parsed.set(drivername="postgresql+psycopg")
            url = parsed.render_as_string(hide_password=False)
        self.shown = parsed.render_as_string(hide_password=True)  # for messages: never print a password
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.shared = not self.is_sqlite  # a server that remote workers may write to directly (PostgreSQL)
        database = parsed.database or ""
        if database.startswith("file:"):  # SQLite URI filename, e.g. sqlite:///file:x.db?mode=ro&uri=true
            database = database[len("file:"):].split("?")[0]
        self.path = Path(database) if self.is_sqlite and database not in ("", ":memory:") else None
        kwargs: dict = {"connect_args": {"timeout": 60}} if self.is_sqlite else {"pool_pre_ping": True}
        if parsed.get_backend_name() == "postgresql":  # an unreachable host answers within seconds, not minutes
            kwargs["connect_args"] = {"connect_timeout": 10}
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except (ArgumentError, ImportError, SQLAlchemyError) as exc:
            raise BenchError(f"database URL {url!r} cannot be used: {exc}") from None
        self.write_engine: Engine = self.engine
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
            # Writers take SQLite's write lock when their transaction starts (BEGIN IMMEDIATE), so a
            # read-then-write claim never fails half-way on a lock upgrade; readers stay DEFERRED.
            self.write_engine = self.engine.execution_options(sqlite_begin="IMMEDIATE")

    # -- schema -------------------------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether the database holds a bench schema (never creates the file)."""
        if self.path is not None and not self.path.exists():
            return False
        try:
            return inspect(self.engine).has_table("runs")
        except SQLAlchemyError as exc:
            raise BenchError(f"database {self.shown} cannot be read: {_first_line(exc)}") from None

    def check_writable(self) -> None:
        """Fail with one line, before anything runs, when the database cannot be created or written.

        Changes nothing: a SQLite file that does not exist yet is not created here (see :meth:`create`).
        """
        if self.path is not None and not self.path.exists():
            folder = self.path.parent
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
            if not folder.is_dir() or not os.access(folder, os.W_OK):
                raise BenchError(f"database {self.path} cannot be created: {folder} is not a writable folder")
            return
        if self.path is not None and not os.access(self.path, os.R_OK | os.W_OK):
            raise BenchError(f"database {self.path} is not readable and writable; check its permissions")
        try:
            has_schema = inspect(self.engine).has_table("runs")
        except SQLAlchemyError as exc:
            raise BenchError(f"database {self.shown} is unreachable or unreadable: {_first_line(exc)}") from None
        self.check_schema(allow_missing=True)
        if has_schema:  # a write that is rolled back: proves the file and connection accept writes
            try:
                with self.session() as session, session.begin():
                    session.execute(update(Meta).where(Meta.key == "schema_version").values(value=Meta.value))
                    session.rollback()
            except SQLAlchemyError as exc:
                raise BenchError(f"database {self.shown} cannot be written: {_first_line(exc)}") from None

    def check_schema(self, allow_missing: bool = False) -> None:
        """Refuse a database written by another schema version (one line naming both versions)."""
        if not self.exists():
            if allow_missing:
                return
            raise BenchError(f"database {self.shown} holds no results yet; run `bench run SUITE.toml` first")
        with self.session(write=False) as session:
            try:
                row = session.get(Meta, "schema_version")
            except SQLAlchemyError:
                row = None
        found = int(row.value) if row is not None else 0
        if found != SCHEMA_VERSION:
            raise BenchError(
                f"database {self.shown} has schema version {found}, this bench reads version {SCHEMA_VERSION}; "
                "use a new database file or the bench version that wrote it"
            )

    def create(self) -> None:
        """Create the tables if missing and stamp the schema version."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(5):
            try:
                Base.metadata.create_all(self.write_engine)  # under the write lock: concurrent creators serialise
                with self.session() as session, session.begin():
                    if session.get(Meta, "schema_version") is None:
                        session.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
                break
            except (OperationalError, IntegrityError, ProgrammingError) as exc:
                # Two processes creating one new SQLite file can meet SQLite's immediate "locked" answer
                # (journal-mode switch); two creating one PostgreSQL schema race on the catalogue ("already
                # exists", a duplicate key). Try again shortly: the second pass finds the tables. Anything else
                # is a database that cannot be written.
                racing = "locked" in str(exc) or isinstance(exc, (IntegrityError, ProgrammingError))
                if not racing or attempt == 4:
                    raise BenchError(f"database {self.shown} cannot be written: {_first_line(exc)}") from None
                time.sleep(0.2 * (attempt + 1))
        self.check_schema()

    @contextmanager
    def session(self, write: bool = True) -> Iterator[Session]:
        with Session(self.write_engine if write else self.engine, expire_on_commit=False) as session:
            yield session

    # -- cells ----------------------------------------------------------------------------------------------
    def statuses(self, cell_hashes: Sequence[str]) -> dict[str, str]:
        """Status of each known cell among ``cell_hashes``."""
        if not self.exists():
            return {}
        out: dict[str, str] = {}
        hashes = list(cell_hashes)
        with self.session(write=False) as session:
            for start in range(0, len(hashes), 500):
                chunk = hashes[start : start + 500]
                for h, status in session.execute(select(Run.cell_hash, Run.status).where(Run.cell_hash.in_(chunk))):
                    out[h] = status
        return out

    def claim(self, cell: CellRecord) -> bool:
        """Atomically mark ``cell`` as running by this process; False when it is done or running elsewhere."""
        now = utcnow()
        me = worker_id()
        with self.session() as session, session.begin():
            run = session.execute(_locked_run(cell.cell_hash)).scalar_one_or_none()
            if run is None:
                session.add(_new_run(cell, status="running", worker=me, now=now))
                try:
                    session.flush()
                except SQLAlchemyError:  # another process inserted it first
                    session.rollback()
                    return False
                return True
            if run.status == "done":
                return False
            if run.status == "running" and not claim_abandoned(run.worker, run.heartbeat_at, now):
                return False
            # Conditional update: only one claimant wins when two see the same abandoned row.
            result = session.execute(
                update(Run)
                .where(Run.id == run.id, Run.status == run.status, Run.worker.is_not_distinct_from(run.worker))
                .values(status="running", worker=me, heartbeat_at=now, error=None)
            )
            return result.rowcount == 1

    def heartbeat(self, cell_hash: str, epochs_done: int) -> None:
        with self.session() as session, session.begin():
            session.execute(
                update(Run)
                .where(Run.cell_hash == cell_hash, Run.worker == worker_id())
                .values(heartbeat_at=utcnow(), epochs_done=epochs_done)
            )

    def finish(self, cell_hash: str, result: CellResult) -> None:
        """Write the outcome of a cell this process claimed, and all its rows, in one transaction."""
        with self.session() as session, session.begin():
            run = session.execute(_locked_run(cell_hash)).scalar_one()
            _write_outcome(session, run, result)

    def ingest(self, cell: CellRecord, result: CellResult, worker: str | None = None) -> bool:
        """Write a cell's outcome that a worker delivered (result file, Ray, a remote process); True if written.

        Idempotent, keyed by the cell hash: a ``done`` run is never written again, so ingesting the same result
        twice — the driver and ``bench collect`` at once, or a requeued job that finished twice — leaves one run
        with one set of rows. A cell the database has not seen yet (a worker started by hand) gets its row here.
        """
        for attempt in range(3):
            try:
                with self.session() as session, session.begin():
                    run = session.execute(_locked_run(cell.cell_hash)).scalar_one_or_none()
                    if run is None:
                        run = _new_run(cell, status=result.status, worker=worker, now=utcnow())
                        session.add(run)
                        session.flush()  # a concurrent insert of the same cell fails here, on the unique hash
                    elif run.status == "done":
                        return False
                    if worker is not None:
                        run.worker = worker
                    _write_outcome(session, run, result)
                    return True
            except IntegrityError:  # another writer inserted this cell first: its row is there now
                if attempt == 2:
                    raise
        return False

    def enqueue(self, cells: Sequence[CellRecord], workers: Sequence[str]) -> list[str]:
        """Mark cells handed to remote workers as ``queued`` (worker = the job's tag); returns the hashes marked.

        A cell already ``done`` (a fast worker that wrote its result directly) is left alone.
        """
        marked = []
        now = utcnow()
        with self.session() as session, session.begin():
            for cell, tag in zip(cells, workers):
                run = session.execute(_locked_run(cell.cell_hash)).scalar_one_or_none()
                if run is None:
                    session.add(_new_run(cell, status="queued", worker=tag, now=now))
                elif run.status == "done":
                    continue
                else:
                    run.status, run.worker, run.heartbeat_at, run.error = "queued", tag, now, None
                    run.started_at, run.finished_at = now, None
                marked.append(cell.cell_hash)
        return marked

    def mark_running(self, cell_hash: str, worker: str, epochs_done: int) -> bool:
        """A queued cell's worker reported: ``running`` at ``epochs_done`` (only while nothing else was written)."""
        with self.session() as session, session.begin():
            result = session.execute(
                update(Run)
                .where(Run.cell_hash == cell_hash, Run.status.in_(ACTIVE), Run.worker == worker)
                .values(status="running", heartbeat_at=utcnow(), epochs_done=epochs_done)
            )
            return result.rowcount == 1

    def touch(self, workers: dict[str, str]) -> None:
        """Refresh the heartbeat of cells still queued or running under the given worker tags (``hash: tag``).

        The driver calls this while it waits, so a ``bench run`` elsewhere does not take over a cell that sits in
        a Slurm queue for hours (a claim with no heartbeat for :data:`STALE_AFTER` is abandoned).
        """
        now = utcnow()
        with self.session() as session, session.begin():
            for cell_hash, tag in workers.items():
                session.execute(update(Run).where(Run.cell_hash == cell_hash, Run.status.in_(ACTIVE),
                                                  Run.worker == tag).values(heartbeat_at=now))

    def mark_ended(self, cell_hash: str, worker: str, status: str, error: str) -> bool:
        """A worker ended without delivering a result: ``failed`` (killed, out of memory) or ``interrupted``
        (the driver stopped it). Only while the cell is still this worker's and has no outcome."""
        with self.session() as session, session.begin():
            result = session.execute(
                update(Run)
                .where(Run.cell_hash == cell_hash, Run.status.in_(ACTIVE), Run.worker == worker)
                .values(status=status, error=error, finished_at=utcnow())
            )
            return result.rowcount == 1

    def claims(self, cell_hashes: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """``{hash: (status, worker)}`` of each known cell among ``cell_hashes``."""
        if not self.exists():
            return {}
        out: dict[str, tuple[str, str | None]] = {}
        hashes = list(cell_hashes)
        with self.session(write=False) as session:
            for start in range(0, len(hashes), 500):
                chunk = hashes[start : start + 500]
                query = select(Run.cell_hash, Run.status, Run.worker).where(Run.cell_hash.in_(chunk))
                for h, status, worker in session.execute(query):
                    out[h] = (status, worker)
        return out

    # -- re-evaluation (bench evaluate) ---------------------------------------------------------------------
    def done_runs(self, suite: str | None = None) -> list[Run]:
        """Finished runs (status ``done``), oldest first, optionally of one suite."""
        query = select(Run).where(Run.status == "done").order_by(Run.id)
        if suite is not None:
            query = query.where(Run.suite == suite)
        with self.session(write=False) as session:
            return list(session.execute(query).scalars())

    def run_flags(self, run_id: int) -> dict[str, np.ndarray]:
        """A run's per-sample flags by attack label, in attack order (``clean`` first)."""
        with self.session(write=False) as session:
            return _flags_of(session, [run_id]).get(run_id, {})

    def run_attack_tables(self, run_id: int) -> dict[str, dict]:
        """Resolved tables of a run's evaluated attacks by label (stored rows, else the run's config)."""
        with self.session(write=False) as session:
            run = session.get(Run, run_id)
            return _attack_tables_of(session, [run]).get(run_id, {})

    def run_guards(self, run_id: int) -> dict[str, GuardRow]:
        """A run's stored guards by name."""
        with self.session(write=False) as session:
            rows = session.execute(select(GuardRow).where(GuardRow.run_id == run_id)).scalars()
            return {row.name: row for row in rows}

    def has_test_labels(self, run_id: int) -> bool:
        with self.session(write=False) as session:
            return session.execute(select(TestLabels.id).where(TestLabels.run_id == run_id)).first() is not None

    def add_evaluation(
        self,
        run_id: int,
        *,
        correct: dict[str, np.ndarray],
        attack_specs: dict[str, dict],
        class_names: Sequence[str],
        train_counts: Sequence[int],
        test_labels: np.ndarray,
        guards: Sequence[dict] = (),
    ) -> list[str]:
        """Add attacks and (re)place guards of a finished run, in one transaction; returns the labels added.

        ``correct`` maps new attack labels to per-sample flags; labels the run already has are left alone (a
        second process may have added them meanwhile). New ``class_metrics`` rows continue the run's
        ``attack_order``. Guards replace stored ones of the same name; the test labels are stored if missing.
        """
        with self.session() as session, session.begin():
            have = dict(session.execute(select(ClassMetric.attack, func.max(ClassMetric.attack_order))
                                        .where(ClassMetric.run_id == run_id).group_by(ClassMetric.attack)).all())
            new = {k: v for k, v in correct.items() if k not in have}
            order = max(have.values(), default=-1) + 1
            session.add_all(_class_rows_of(run_id, new, test_labels, class_names, train_counts, order))
            for attack, flags in new.items():
                flags = np.asarray(flags, dtype=bool)
                session.add(SampleFlags(run_id=run_id, attack=attack, n=int(flags.size),
                                        bits=np.packbits(flags).tobytes()))
            session.add_all(_spec_rows(run_id, {k: attack_specs[k] for k in new if k in attack_specs}))
            if session.execute(select(TestLabels.id).where(TestLabels.run_id == run_id)).first() is None:
                session.add(_test_labels_row(run_id, test_labels))
            names = [g["name"] for g in guards]
            if names:
                session.execute(delete(GuardRow).where(GuardRow.run_id == run_id, GuardRow.name.in_(names)))
            session.add_all(_guard_rows(run_id, guards))
            return list(new)


def _locked_run(cell_hash: str):
    """The run of a cell, locked for this transaction on PostgreSQL (SQLite: BEGIN IMMEDIATE locked it all)."""
    return select(Run).where(Run.cell_hash == cell_hash).with_for_update()


def _new_run(cell: CellRecord, *, status: str, worker: str | None, now: datetime) -> Run:
    return Run(
        cell_hash=cell.cell_hash, suite=cell.suite, method=cell.method, dataset=cell.dataset,
        imbalance=cell.imbalance, seed=cell.seed, model=cell.model, adversarial=cell.adversarial,
        config_json=json.dumps(cell.config, sort_keys=True), status=status, worker=worker, heartbeat_at=now,
        started_at=now,
    )


def _write_outcome(session: Session, run: Run, result: CellResult) -> None:
    """Replace a run's outcome and child rows (the caller holds the transaction and the row)."""
    session.flush()
    for table in (ClassMetric, EpochMetric, SampleFlags, FeatureDump, TestLabels, AttackSpecRow, GuardRow):
        session.execute(delete(table).where(table.run_id == run.id))
    run.status = result.status
    run.error = result.error
    run.finished_at = utcnow()
    run.heartbeat_at = run.finished_at
    run.epochs_done = result.epochs_done
    run.wall_seconds = result.wall_seconds
    run.train_seconds = result.train_seconds
    run.images_per_second = result.images_per_second
    run.peak_memory_mb = result.peak_memory_mb
    prov = result.provenance or {}
    run.device = prov.get("device")
    run.host = prov.get("host")
    run.git_commit = prov.get("git_commit")
    run.versions_json = json.dumps(prov.get("versions", {}), sort_keys=True) if prov else None
    run.subset_hash = prov.get("subset_hash")
    if result.class_names:
        run.class_names_json = json.dumps(list(result.class_names))
    for row in result.curves:
        session.add(EpochMetric(run_id=run.id, **row))
    if result.status == "done" and result.correct is not None and result.test_labels is not None:
        session.add_all(_class_rows(run.id, result))
        for attack, flags in result.correct.items():
            flags = np.asarray(flags, dtype=bool)
            session.add(SampleFlags(run_id=run.id, attack=attack, n=int(flags.size),
                                    bits=np.packbits(flags).tobytes()))
        session.add(_test_labels_row(run.id, result.test_labels))
        session.add_all(_spec_rows(run.id, result.attack_specs or {}))
        session.add_all(_guard_rows(run.id, result.guards))
        for (split, kind), (labels, vectors) in (result.features or {}).items():
            vectors = np.asarray(vectors, dtype=np.float16)
            session.add(FeatureDump(run_id=run.id, split=split, kind=kind, n=int(vectors.shape[0]),
                                    dim=int(vectors.shape[1]), labels=np.asarray(labels, np.int16).tobytes(),
                                    vectors=vectors.tobytes()))


def _class_rows(run_id: int, result: CellResult) -> list[ClassMetric]:
    return _class_rows_of(run_id, result.correct, result.test_labels, result.class_names, result.train_counts, 0)


def _class_rows_of(run_id: int, correct: dict[str, np.ndarray], test_labels, class_names, train_counts,
                   first_order: int) -> list[ClassMetric]:
    labels = np.asarray(test_labels)
    rows = []
    for order, (attack, flags) in enumerate(correct.items(), start=first_order):
        flags = np.asarray(flags, dtype=bool)
        for c, name in enumerate(class_names):
            mask = labels == c
            n_test = int(mask.sum())
            correct_c = int(flags[mask].sum())
            rows.append(
                ClassMetric(
                    run_id=run_id, attack=attack, attack_order=order, class_index=c, class_name=str(name),
                    n_train=int(train_counts[c]), n_test=n_test, correct=correct_c,
                    accuracy=correct_c / n_test if n_test else float("nan"),
                )
            )
    return rows


def _test_labels_row(run_id: int, labels) -> TestLabels:
    labels = np.asarray(labels)
    return TestLabels(run_id=run_id, n=int(labels.size), labels=labels.astype(np.int16).tobytes())


def _spec_rows(run_id: int, specs: dict[str, dict]) -> list[AttackSpecRow]:
    return [AttackSpecRow(run_id=run_id, attack=label, kind=str(table["kind"]), spec_json=json.dumps(table, sort_keys=True))
            for label, table in specs.items()]


def _guard_rows(run_id: int, guards: Sequence[dict]) -> list[GuardRow]:
    return [GuardRow(run_id=run_id, name=g["name"], value=float(g["value"]), threshold=float(g["threshold"]),
                     flagged=bool(g["flagged"]), detail=json.dumps(g.get("detail", {}), sort_keys=True))
            for g in guards]


def _flags_of(session: Session, run_ids: Sequence[int]) -> dict[int, dict[str, np.ndarray]]:
    """Per-sample flags of runs, ``{run_id: {label: flags}}`` in attack order."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for start in range(0, len(run_ids), 500):
        chunk = list(run_ids[start : start + 500])
        orders = {(r, a): o for r, a, o in session.execute(
            select(ClassMetric.run_id, ClassMetric.attack, func.min(ClassMetric.attack_order))
            .where(ClassMetric.run_id.in_(chunk)).group_by(ClassMetric.run_id, ClassMetric.attack))}
        rows = session.execute(select(SampleFlags).where(SampleFlags.run_id.in_(chunk))).scalars().all()
        rows = sorted(rows, key=lambda r: (r.run_id, orders.get((r.run_id, r.attack), 1 << 30), r.id))
        for row in rows:
            out.setdefault(row.run_id, {})[row.attack] = unpack_flags(row.bits, row.n)
    return out


def _attack_tables_of(session: Session, runs: Sequence[Run]) -> dict[int, dict[str, dict]]:
    """Resolved attack tables by run and label: stored ``attack_specs`` rows over the config's eval_attacks."""
    from bench.attacks import AttackSpec  # the label of a table; imported here to keep the store torch-free

    out: dict[int, dict[str, dict]] = {}
    for run in runs:
        config = json.loads(run.config_json)
        tables = {}
        for table in config.get("eval_attacks", []):
            try:
                tables[AttackSpec.from_table(table).label] = table
            except (KeyError, TypeError, ValueError):  # a config from another version: its stored rows decide
                continue
        out[run.id] = tables
    ids = [run.id for run in runs]
    if ids and _has_table(session, "attack_specs"):
        for start in range(0, len(ids), 500):
            for row in session.execute(select(AttackSpecRow).where(AttackSpecRow.run_id.in_(ids[start : start + 500]))).scalars():
                out.setdefault(row.run_id, {})[row.attack] = json.loads(row.spec_json)
    return out


def _has_table(session: Session, name: str) -> bool:
    return inspect(session.get_bind()).has_table(name)


def _sqlite_connect(dbapi_connection, _record) -> None:
    """Let SQLAlchemy's ``begin`` event issue BEGIN; WAL lets readers proceed while a cell's rows are written."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    except Exception:  # noqa: BLE001 - read-only files cannot switch mode; reading still works
        pass
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn) -> None:
    conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', 'DEFERRED')}")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def unpack_flags(bits: bytes, n: int) -> np.ndarray:
    """Per-sample correctness flags from their packed form."""
    return np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=n).astype(bool)


RESULT_COLUMNS = [
    "run_id", "cell_hash", "suite", "method", "dataset", "imbalance", "seed", "model", "adversarial",
    "attack", "attack_order", "class_index", "class_name", "n_train", "n_test", "correct", "accuracy",
]


def load_results(url: str, suite: str | None = None) -> pd.DataFrame:
    """Tidy results: one row per finished run × attack × class (``attack == "clean"`` is standard accuracy).

    Columns: ``run_id, cell_hash, suite, method, dataset, imbalance, seed, model, adversarial, attack,
    attack_order, class_index, class_name, n_train, n_test, correct, accuracy``, plus ``config`` (the
    resolved cell config as JSON text).
    """
    store = Store(url)
    store.check_schema()
    query = (
        select(
            Run.id.label("run_id"), Run.cell_hash, Run.suite, Run.method, Run.dataset, Run.imbalance, Run.seed,
            Run.model, Run.adversarial, ClassMetric.attack, ClassMetric.attack_order, ClassMetric.class_index,
            ClassMetric.class_name, ClassMetric.n_train, ClassMetric.n_test, ClassMetric.correct,
            ClassMetric.accuracy, Run.config_json.label("config"),
        )
        .join(ClassMetric, ClassMetric.run_id == Run.id)
        .where(Run.status == "done")
        .order_by(Run.id, ClassMetric.attack_order, ClassMetric.class_index)
    )
    if suite is not None:
        query = query.where(Run.suite == suite)
    with store.engine.connect() as conn:
        frame = pd.read_sql(query, conn)
    return frame


def feature_dump_runs(url: str, run_ids: Sequence[int]) -> set[int]:
    """Which of ``run_ids`` kept feature dumps."""
    store = Store(url)
    ids = list(run_ids)
    found: set[int] = set()
    with store.session(write=False) as session:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            found.update(session.execute(select(FeatureDump.run_id).where(FeatureDump.run_id.in_(chunk)).distinct()).scalars())
    return found


def load_features(url: str, run_id: int) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """A run's feature dumps: ``{(split, kind): (labels [n], features [n, dim] float32)}``."""
    store = Store(url)
    store.check_schema()
    out = {}
    with store.session(write=False) as session:
        for row in session.execute(select(FeatureDump).where(FeatureDump.run_id == run_id)).scalars():
            labels = np.frombuffer(row.labels, dtype=np.int16).astype(np.int64)
            vectors = np.frombuffer(row.vectors, dtype=np.float16).reshape(row.n, row.dim).astype(np.float32)
            out[(row.split, row.kind)] = (labels, vectors)
    return out


def save_theory(store: Store, suite: str, description: str, frame: pd.DataFrame,
                pairs: pd.DataFrame | None = None) -> None:
    """Store (or replace) a theory suite's evaluated grid."""
    store.create()
    with store.session() as session, session.begin():
        session.execute(delete(TheoryResult).where(TheoryResult.suite == suite))
        session.add(TheoryResult(suite=suite, description=description, created_at=utcnow(),
                                 frame_json=frame.to_json(orient="split"),
                                 pairs_json=None if pairs is None else pairs.to_json(orient="split")))


def load_theory(url: str) -> list[dict]:
    """Every stored theory suite: ``{"suite", "description", "frame", "pairs"}`` (frames as DataFrames)."""
    store = Store(url)
    store.check_schema()
    out = []
    with store.session(write=False) as session:
        for row in session.execute(select(TheoryResult).order_by(TheoryResult.suite)).scalars():
            out.append({
                "suite": row.suite, "description": row.description,
                "frame": pd.read_json(io.StringIO(row.frame_json), orient="split"),
                "pairs": None if row.pairs_json is None else pd.read_json(io.StringIO(row.pairs_json), orient="split"),
            })
    return out


def load_runs(url: str, suite: str | None = None) -> pd.DataFrame:
    """One row per run of any status (for progress, failures and cost columns)."""
    store = Store(url)
    store.check_schema()
    query = select(Run.__table__)
    if suite is not None:
        query = query.where(Run.suite == suite)
    with store.engine.connect() as conn:
        return pd.read_sql(query, conn)


GUARD_COLUMNS = [
    "run_id", "cell_hash", "suite", "method", "dataset", "imbalance", "seed", "model", "name", "value",
    "threshold", "flagged", "detail",
]


def load_guards(url: str, suite: str | None = None) -> pd.DataFrame:
    """Robustness guards of finished runs (:mod:`bench.guards`), one row per run × guard.

    Columns: ``run_id, cell_hash, suite, method, dataset, imbalance, seed, model, name, value, threshold,
    flagged, detail`` (``detail`` is JSON text). Empty (with these columns) for a database without guards.
    """
    store = Store(url)
    store.check_schema()
    with store.engine.connect() as conn:
        if not inspect(conn).has_table("guards"):
            return pd.DataFrame(columns=GUARD_COLUMNS)
        query = (
            select(Run.id.label("run_id"), Run.cell_hash, Run.suite, Run.method, Run.dataset, Run.imbalance,
                   Run.seed, Run.model, GuardRow.name, GuardRow.value, GuardRow.threshold, GuardRow.flagged,
                   GuardRow.detail)
            .join(GuardRow, GuardRow.run_id == Run.id)
            .where(Run.status == "done")
            .order_by(Run.id, GuardRow.name)
        )
        if suite is not None:
            query = query.where(Run.suite == suite)
        frame = pd.read_sql(query, conn)
    frame["flagged"] = frame["flagged"].astype(bool)
    return frame[GUARD_COLUMNS]


def load_sample_flags(url: str, suite: str | None = None) -> dict[int, dict]:
    """Stored per-sample data of finished runs: ``{run_id: {"flags": {label: bool[n]}, "labels": int[n] | None,
    "attacks": {label: resolved table}}}``; flags in attack order (``clean`` first), ``labels`` ``None`` for a run
    stored before test labels were kept (``bench evaluate`` adds them)."""
    store = Store(url)
    store.check_schema()
    with store.session(write=False) as session:
        query = select(Run).where(Run.status == "done").order_by(Run.id)
        if suite is not None:
            query = query.where(Run.suite == suite)
        runs = list(session.execute(query).scalars())
        ids = [run.id for run in runs]
        flags = _flags_of(session, ids)
        tables = _attack_tables_of(session, runs)
        labels: dict[int, np.ndarray] = {}
        if ids and _has_table(session, "test_labels"):
            for start in range(0, len(ids), 500):
                for row in session.execute(select(TestLabels).where(TestLabels.run_id.in_(ids[start : start + 500]))).scalars():
                    labels[row.run_id] = np.frombuffer(row.labels, dtype=np.int16).astype(np.int64)
    return {i: {"flags": flags.get(i, {}), "labels": labels.get(i), "attacks": tables.get(i, {})} for i in ids}
