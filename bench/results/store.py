"""The writer of the results database: SQLAlchemy 2.0 over SQLite by default, any SQLAlchemy URL (PostgreSQL) for
a team. The tables are in :mod:`bench.results.schema`; reading them into DataFrames is :mod:`bench.results.read`.

A finished cell's rows are written in one transaction, so a crash never leaves half a result. Cells are
claimed with a conditional UPDATE, so two ``bench run`` processes on one database never run the same cell (the
lease rules are :mod:`bench.results.claims`; the sequence of calls a cell goes through is
:mod:`bench.results.ledger`).

Dialects: SQLite writers take the write lock when their transaction starts (``BEGIN IMMEDIATE``), so a
read-then-write never fails half-way on a lock upgrade; on PostgreSQL the same read locks its row
(``SELECT … FOR UPDATE``, which SQLite does not render) and a unique-key race on a new row is retried. Cells run
elsewhere (Slurm, Ray) are ``queued`` until their worker reports; :meth:`Store.ingest` writes a finished cell from
its result file (:mod:`bench.results.files`) and is idempotent: the cell hash is the key, and a ``done`` run is
never written again.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
from sqlalchemy import create_engine, delete, event, func, insert, inspect, select, update
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.orm import Session

from bench.cell import ACTIVE, CellRecord, CellResult, Status
from bench.errors import BenchError
from bench.results import migrate, rows
from bench.results.claims import STALE_AFTER, claim_abandoned, worker_id
from bench.results.schema import (
    SCHEMA_VERSION,
    Base,
    ClassMetric,
    GuardRow,
    Meta,
    Run,
    SampleFlags,
    TestLabels,
    TheoryResult,
    pack_flags,
    utcnow,
)


def hide_password(url: str) -> str:
    """A database URL as it may be shown: the password replaced by ``***`` (also in a URL SQLAlchemy cannot parse)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL, or a port that is not a number
        return re.sub(r"(://[^/:@]*):[^/@]*@", r"\1:***@", url)


def password_of(url: str) -> str | None:
    """The password a database URL carries, if any."""
    password = make_url(url).password
    return None if password is None else str(password)


def without_password(url: str) -> str:
    """A database URL that carries no password: what may be written where others can read it (a job's pickle, a
    Ray task's arguments). The process that opens it gets the password from its environment (libpq's PGPASSWORD
    or ~/.pgpass, or ``$BENCH_DB``)."""
    parsed = make_url(url)
    bare = URL.create(parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database, parsed.query)
    return bare.render_as_string(hide_password=False)


class Store:
    """A results database. Construct with a SQLAlchemy URL; :meth:`create` makes the schema.

    Reading never changes a SQLite file: WAL is switched on by the first write transaction (:func:`_sqlite_begin`).
    ``read_only`` stores never create the file and cannot write (``PRAGMA query_only``); a file in a folder this
    process cannot write (a read-only mount) is opened read-only, so it can still be read (:meth:`_file_url`).
    """

    def __init__(self, url: str, stale_after: timedelta = STALE_AFTER, read_only: bool = False) -> None:
        self.url = url
        self.read_only = read_only
        self.stale_after = stale_after  # a claim with no heartbeat for this long is abandoned (bench.results.claims)
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):  # not a URL, or a port that is not a number
            raise BenchError(f"database URL {hide_password(url)!r} is not a SQLAlchemy URL (e.g. "
                             "sqlite:///results/bench.db)") from None
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
        self.frozen = False  # opened read-only because its folder cannot be written (see _file_url)
        engine_url: str | URL = url
        if self.path is not None and not (parsed.database or "").startswith("file:"):
            engine_url = self._file_url(parsed) or url
        kwargs: dict = {"connect_args": {"timeout": 60}} if self.is_sqlite else {"pool_pre_ping": True}
        if parsed.get_backend_name() == "postgresql":  # an unreachable host answers within seconds, not minutes
            kwargs["connect_args"] = {"connect_timeout": 10}
        try:
            self.engine: Engine = create_engine(engine_url, **kwargs)
        except (ArgumentError, ImportError, SQLAlchemyError) as exc:
            raise BenchError(f"database URL {self.shown!r} cannot be used: {exc}") from None
        self.write_engine: Engine = self.engine
        if self.is_sqlite:
            query_only = read_only or self.frozen
            event.listen(self.engine, "connect", lambda dbapi, _record: _sqlite_connect(dbapi, query_only))
            event.listen(self.engine, "begin", _sqlite_begin)
            # Writers take SQLite's write lock when their transaction starts (BEGIN IMMEDIATE), so a
            # read-then-write claim never fails half-way on a lock upgrade; readers stay DEFERRED.
            self.write_engine = self.engine.execution_options(sqlite_begin="IMMEDIATE")

    def _file_url(self, parsed: URL) -> URL | None:
        """The SQLite URI to open :attr:`path` with (None: the plain URL, read-write, created if missing). In a folder
        this process cannot write, SQLite cannot make its ``-shm`` or journal: read-only (:func:`migrate.read_only_query`).
        A ``read_only`` store: ``mode=rw``, which never creates a missing file."""
        path = self.path or Path()
        folder = path.absolute().parent
        if path.is_file() and not os.access(folder, os.W_OK):
            self.frozen = True
            query = migrate.read_only_query(path)
        elif self.read_only:
            query = {"mode": "rw"}
        else:
            return None
        return URL.create(parsed.drivername, database="file:" + quote(str(path.absolute())),
                          query={**parsed.query, **query, "uri": "true"})

    # -- schema -------------------------------------------------------------------------------------------
    def table_names(self) -> set[str]:
        """The tables the database holds (empty for a missing file; never creates it)."""
        if self.path is not None and not self.path.exists():
            return set()
        try:
            with self.engine.connect() as connection:
                return set(inspect(connection).get_table_names())
        except SQLAlchemyError as exc:
            raise BenchError(f"database {self.shown} cannot be read: {self._why(exc)}") from None

    def exists(self) -> bool:
        """Whether the database holds bench's tables (never creates the file). A SQLite file with only other tables is
        refused (:func:`migrate.foreign`); a PostgreSQL database may be shared: bench's tables go beside theirs."""
        names = self.table_names()
        problem = migrate.foreign(names, self.shown) if self.is_sqlite else None
        if problem:
            raise BenchError(problem)
        return bool(names & migrate.BENCH_TABLES)

    def _why(self, exc: BaseException) -> str:  # the first line of an error, and why where SQLite's words mislead
        why = _first_line(exc)
        if self.frozen and "unable to open" in why and Path(f"{self.path}-wal").exists():
            why += (f" (its folder {self.path.absolute().parent} is read-only and a write-ahead log lies beside it; "
                    "copy the file with its -wal and -shm files to a writable folder)")
        return why

    def check_writable(self, schema: bool = True) -> None:
        """Fail with one line, before anything runs, when the database cannot be created or written (or, with
        ``schema``, is one this bench must not write as it is: :meth:`check_schema`).

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
        if self.frozen:
            raise BenchError(f"database {self.path} cannot be written: its folder {self.path.absolute().parent} is "
                             "not writable (SQLite writes its journal beside the file); check its permissions")
        try:
            with self.engine.connect() as connection:
                names = set(inspect(connection).get_table_names())
        except SQLAlchemyError as exc:
            raise BenchError(f"database {self.shown} is unreachable or unreadable: {self._why(exc)}") from None
        has_schema = self.exists()  # a foreign SQLite file: refused here, before anything is written
        if schema:
            self.check_schema(allow_missing=True)
        if has_schema and Meta.__tablename__ in names:
            # a write rolled back proves the file accepts writes (in its journal mode: the command may write nothing)
            try:
                probe = self.engine.execution_options(sqlite_begin="IMMEDIATE", sqlite_wal=False)
                with Session(probe) as session, session.begin():
                    session.execute(update(Meta).where(Meta.key == "schema_version").values(value=Meta.value))
                    session.rollback()
            except SQLAlchemyError as exc:
                raise BenchError(f"database {self.shown} cannot be written: {_first_line(exc)}") from None

    def check_schema(self, allow_missing: bool = False) -> None:
        """Refuse, with one line, a database this bench must not read or write as it is: older (naming ``bench db
        upgrade``), newer, damaged or foreign (:mod:`bench.results.migrate`)."""
        if not self.exists():
            if allow_missing:
                return
            raise BenchError(f"database {self.shown} holds no results yet; run `bench run SUITE.toml` first")
        try:
            with self.engine.connect() as connection:
                version = migrate.read_version(connection)
                problem = migrate.refusal(version, self.shown) or migrate.incomplete(connection, self.shown)
        except SQLAlchemyError as exc:
            raise BenchError(f"database {self.shown} cannot be read: {self._why(exc)}") from None
        if problem:
            raise BenchError(problem)

    def create(self) -> None:
        """Create the tables of a new database, stamped at the newest schema revision, in one transaction.

        An existing database is never changed here: it is checked (:meth:`check_schema`), so an older one is refused
        with the line that names ``bench db upgrade``.
        """
        if self.exists():
            self.check_schema()
            return
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(5):
            try:
                with self.write_engine.begin() as connection:  # under the write lock: concurrent creators serialise
                    Base.metadata.create_all(connection)
                    if connection.execute(select(Meta.value).where(Meta.key == "schema_version")).first() is None:
                        connection.execute(insert(Meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
                        migrate.stamp_head(connection)
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

    def upgrade(self) -> migrate.Upgrade:
        """``bench db upgrade``: bring an older database to this bench's schema in one transaction (alembic)."""
        if not self.exists():
            raise BenchError(f"database {self.shown} holds no results yet; there is nothing to upgrade")
        try:  # without switching the journal mode: an up-to-date database is left byte for byte as it was
            with self.engine.execution_options(sqlite_begin="IMMEDIATE", sqlite_wal=False).begin() as connection:
                return migrate.upgrade(connection, self.shown)
        except SQLAlchemyError as exc:
            raise BenchError(f"database {self.shown} cannot be upgraded: {_first_line(exc)}; it is unchanged") from None

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
                session.add(rows.new_run(cell, status=Status.RUNNING, worker=me, now=now))
                try:
                    session.flush()
                except SQLAlchemyError:  # another process inserted it first
                    session.rollback()
                    return False
                return True
            if run.status == Status.DONE:
                return False
            if run.status in ACTIVE and not claim_abandoned(run.worker, run.heartbeat_at, now, self.stale_after):
                return False  # held by a live process, or queued in a job whose driver keeps it alive
            # Conditional update: only one claimant wins when two see the same abandoned row.
            result = session.execute(
                update(Run)
                .where(Run.id == run.id, Run.status == run.status, Run.worker.is_not_distinct_from(run.worker))
                .values(status=Status.RUNNING, worker=me, heartbeat_at=now, error=None)
            )
            return result.rowcount == 1

    def heartbeat(self, cell_hash: str, epochs_done: int | None = None, worker: str | None = None) -> None:
        """Refresh the heartbeat of a cell this process (or the job ``worker``) holds; ``epochs_done`` if given."""
        values: dict = {"heartbeat_at": utcnow()}
        if epochs_done is not None:
            values["epochs_done"] = epochs_done
        with self.session() as session, session.begin():
            session.execute(update(Run).where(Run.cell_hash == cell_hash, Run.status.in_(ACTIVE),
                                              Run.worker == (worker or worker_id())).values(**values))

    def finish(self, cell_hash: str, result: CellResult) -> None:
        """Write the outcome of a cell this process claimed, and all its rows, in one transaction."""
        with self.session() as session, session.begin():
            run = session.execute(_locked_run(cell_hash)).scalar_one()
            rows.write_outcome(session, run, result)

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
                        run = rows.new_run(cell, status=result.status, worker=worker, now=utcnow())
                        session.add(run)
                        session.flush()  # a concurrent insert of the same cell fails here, on the unique hash
                    elif run.status == Status.DONE:
                        return False
                    if worker is not None:
                        run.worker = worker
                    rows.write_outcome(session, run, result)
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
                    session.add(rows.new_run(cell, status=Status.QUEUED, worker=tag, now=now))
                elif run.status == Status.DONE:
                    continue
                else:
                    run.status, run.worker, run.heartbeat_at, run.error = Status.QUEUED, tag, now, None
                    run.started_at, run.finished_at = now, None
                marked.append(cell.cell_hash)
        return marked

    def mark_running(self, cell_hash: str, worker: str, epochs_done: int) -> bool:
        """A queued cell's worker reported: ``running`` at ``epochs_done`` (only while nothing else was written)."""
        with self.session() as session, session.begin():
            result = session.execute(
                update(Run)
                .where(Run.cell_hash == cell_hash, Run.status.in_(ACTIVE), Run.worker == worker)
                .values(status=Status.RUNNING, heartbeat_at=utcnow(), epochs_done=epochs_done)
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
            session.add_all(rows.class_rows_of(run_id, new, test_labels, class_names, train_counts, order))
            for attack, flags in new.items():
                flags = np.asarray(flags, dtype=bool)
                session.add(SampleFlags(run_id=run_id, attack=attack, n=int(flags.size),
                                        bits=pack_flags(flags)))
            session.add_all(rows.spec_rows(run_id, {k: attack_specs[k] for k in new if k in attack_specs}))
            if session.execute(select(TestLabels.id).where(TestLabels.run_id == run_id)).first() is None:
                session.add(rows.test_labels_row(run_id, test_labels))
            names = [g["name"] for g in guards]
            if names:
                session.execute(delete(GuardRow).where(GuardRow.run_id == run_id, GuardRow.name.in_(names)))
            session.add_all(rows.guard_rows(run_id, guards))
            return list(new)


def _locked_run(cell_hash: str):
    """The run of a cell, locked for this transaction on PostgreSQL (SQLite: BEGIN IMMEDIATE locked it all)."""
    return select(Run).where(Run.cell_hash == cell_hash).with_for_update()


def _sqlite_connect(dbapi_connection, query_only: bool = False) -> None:
    """Let SQLAlchemy's ``begin`` event issue BEGIN; opening changes nothing in the file (see :func:`_sqlite_begin`)."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    if query_only:
        cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def _sqlite_begin(conn) -> None:
    """BEGIN, as the transaction asks (writers: IMMEDIATE). A writer's connection first switches the file to WAL,
    once: WAL lets readers (``bench status``, a report) proceed while a cell's rows are written, and it stays on in
    the file. Readers never switch it, so reading leaves the file byte for byte as it was."""
    options = conn.get_execution_options()
    mode = options.get("sqlite_begin", "DEFERRED")
    if mode == "IMMEDIATE" and options.get("sqlite_wal", True):
        record = conn.connection
        if not record.info.get("bench_wal"):
            cursor = record.dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                row = cursor.fetchone()
                record.info["bench_wal"] = bool(row) and str(row[0]).lower() == "wal"
            except Exception:  # noqa: BLE001, S110 - a read-only or locked file keeps its mode; the write decides
                pass
            finally:
                cursor.close()
    conn.exec_driver_sql(f"BEGIN {mode}")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def save_theory(store: Store, suite: str, description: str, frame: pd.DataFrame,
                pairs: pd.DataFrame | None = None) -> None:
    """Store (or replace) a theory suite's evaluated grid."""
    store.create()
    with store.session() as session, session.begin():
        session.execute(delete(TheoryResult).where(TheoryResult.suite == suite))
        session.add(TheoryResult(suite=suite, description=description, created_at=utcnow(),
                                 frame_json=frame.to_json(orient="split"),
                                 pairs_json=None if pairs is None else pairs.to_json(orient="split")))
