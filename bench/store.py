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

A finished cell's rows are written in one transaction, so a crash never leaves half a result. Cells are
claimed with a conditional UPDATE, so two ``bench run`` processes on one database never run the same cell.
"""

from __future__ import annotations

import io
import json
import os
import socket
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
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bench.errors import BenchError

SCHEMA_VERSION = 1
STATUSES = ("running", "done", "failed", "diverged", "interrupted")
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
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        database = parsed.database or ""
        if database.startswith("file:"):  # SQLite URI filename, e.g. sqlite:///file:x.db?mode=ro&uri=true
            database = database[len("file:"):].split("?")[0]
        self.path = Path(database) if self.is_sqlite and database not in ("", ":memory:") else None
        kwargs = {"connect_args": {"timeout": 60}} if self.is_sqlite else {"pool_pre_ping": True}
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
            raise BenchError(f"database {self.url} cannot be read: {_first_line(exc)}") from None

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
            raise BenchError(f"database {self.url} is unreachable or unreadable: {_first_line(exc)}") from None
        self.check_schema(allow_missing=True)
        if has_schema:  # a write that is rolled back: proves the file and connection accept writes
            try:
                with self.session() as session, session.begin():
                    session.execute(update(Meta).where(Meta.key == "schema_version").values(value=Meta.value))
                    session.rollback()
            except SQLAlchemyError as exc:
                raise BenchError(f"database {self.url} cannot be written: {_first_line(exc)}") from None

    def check_schema(self, allow_missing: bool = False) -> None:
        """Refuse a database written by another schema version (one line naming both versions)."""
        if not self.exists():
            if allow_missing:
                return
            raise BenchError(f"database {self.url} holds no results yet; run `bench run SUITE.toml` first")
        with self.session(write=False) as session:
            try:
                row = session.get(Meta, "schema_version")
            except SQLAlchemyError:
                row = None
        found = int(row.value) if row is not None else 0
        if found != SCHEMA_VERSION:
            raise BenchError(
                f"database {self.url} has schema version {found}, this bench reads version {SCHEMA_VERSION}; "
                "use a new database file or the bench version that wrote it"
            )

    def create(self) -> None:
        """Create the tables if missing and stamp the schema version."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            Base.metadata.create_all(self.engine)
            with self.session() as session, session.begin():
                if session.get(Meta, "schema_version") is None:
                    session.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
        except OperationalError as exc:
            raise BenchError(f"database {self.url} cannot be written: {_first_line(exc)}") from None
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
            run = session.execute(select(Run).where(Run.cell_hash == cell.cell_hash)).scalar_one_or_none()
            if run is None:
                session.add(
                    Run(
                        cell_hash=cell.cell_hash,
                        suite=cell.suite,
                        method=cell.method,
                        dataset=cell.dataset,
                        imbalance=cell.imbalance,
                        seed=cell.seed,
                        model=cell.model,
                        adversarial=cell.adversarial,
                        config_json=json.dumps(cell.config, sort_keys=True),
                        status="running",
                        worker=me,
                        heartbeat_at=now,
                        started_at=now,
                    )
                )
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
        """Write a cell's outcome and all its rows in one transaction."""
        with self.session() as session, session.begin():
            run = session.execute(select(Run).where(Run.cell_hash == cell_hash)).scalar_one()
            for table in (ClassMetric, EpochMetric, SampleFlags, FeatureDump):
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
                for (split, kind), (labels, vectors) in (result.features or {}).items():
                    vectors = np.asarray(vectors, dtype=np.float16)
                    session.add(FeatureDump(run_id=run.id, split=split, kind=kind, n=int(vectors.shape[0]),
                                            dim=int(vectors.shape[1]), labels=np.asarray(labels, np.int16).tobytes(),
                                            vectors=vectors.tobytes()))


def _class_rows(run_id: int, result: CellResult) -> list[ClassMetric]:
    labels = np.asarray(result.test_labels)
    rows = []
    for order, (attack, flags) in enumerate(result.correct.items()):
        flags = np.asarray(flags, dtype=bool)
        for c, name in enumerate(result.class_names):
            mask = labels == c
            n_test = int(mask.sum())
            correct = int(flags[mask].sum())
            rows.append(
                ClassMetric(
                    run_id=run_id, attack=attack, attack_order=order, class_index=c, class_name=str(name),
                    n_train=int(result.train_counts[c]), n_test=n_test, correct=correct,
                    accuracy=correct / n_test if n_test else float("nan"),
                )
            )
    return rows


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
