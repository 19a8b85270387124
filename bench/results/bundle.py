"""Results that travel between labs: ``bench export`` writes finished runs to a SQLite bundle, ``bench import``
merges a bundle into any results database (SQLite or PostgreSQL).

A bundle is a results database of this bench's schema (so the same version checks refuse an older or newer one)
holding the selected finished runs with every row they own — class metrics, training curves, per-sample flags,
test labels, attack tables, guards, feature dumps — and their provenance as stored (host, device, git commit,
library versions, data-subset hash, worker, timings). ``bench_meta`` says where and when it was exported.

Import is keyed by the cell hash (a cell's identity is its resolved configuration):

* a run the database does not have is added with all its rows, in one transaction per chunk of runs, keeping the
  bundle's run id where that id is free (so a round trip into an empty database reads back identically);
* a run it has, ``done``, with the same numbers (class counts of every attack and the per-sample flags) is
  skipped; with different numbers it is reported — the first attack that differs, both accuracies — and never
  overwritten;
* a run it has that is not ``done`` (running here, or failed) is reported and left alone.

Importing the same bundle twice changes nothing the second time.

A bundle is checked whole before anything is written (:func:`check_bundle`): every table of the schema present,
every row's columns of the type the schema says (JSON columns parse, numbers are numbers, statuses known, packed
flags as long as they say). A damaged bundle is refused with one line naming the table, row and column, and the
database is left as it was. ``bench export`` never overwrites the results database itself, nor a file that is not
a bundle.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import socket
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Table, func, insert, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from bench.cell import Status
from bench.errors import BenchError
from bench.results import migrate
from bench.results.schema import (
    AttackSpecRow,
    ClassMetric,
    EpochMetric,
    FeatureDump,
    GuardRow,
    Meta,
    Run,
    SampleFlags,
    TestLabels,
)
from bench.results.store import Store, hide_password

OWNED = (ClassMetric, EpochMetric, SampleFlags, TestLabels, AttackSpecRow, GuardRow, FeatureDump)  # rows a run owns
CHUNK = 200  # runs per transaction and per IN (...) clause
BUNDLE_KEY = "bundle"  # bench_meta key of the export's description


@dataclass
class ExportSummary:
    path: Path
    runs: int
    rows: dict[str, int]

    def line(self) -> str:
        return f"exported {self.runs} finished runs ({sum(self.rows.values())} rows they own) to {self.path}"


@dataclass
class Conflict:
    cell_hash: str
    label: str  # "srat-ldam · cifar10 step-10 · seed 0"
    reason: str


@dataclass
class ImportSummary:
    added: list[str] = field(default_factory=list)
    identical: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)  # same hash, different numbers: kept ours
    not_done_here: list[Conflict] = field(default_factory=list)  # same hash, running or failed here: left alone
    source: dict = field(default_factory=dict)

    def line(self) -> str:
        return (f"{len(self.added)} runs added, {len(self.identical)} identical skipped, "
                f"{len(self.conflicts)} with different numbers kept as they were, "
                f"{len(self.not_done_here)} not done here left alone")


# -- export -------------------------------------------------------------------------------------------------------
def export_bundle(url: str, path: str | os.PathLike, suite: str | None = None) -> ExportSummary:
    """Write the finished runs of ``url`` (of ``suite``) with every row they own to a new SQLite file ``path``,
    atomically: the file appears complete or not at all."""
    source = Store(url)
    source.check_schema()
    path = Path(path)
    if path.is_dir():
        raise BenchError(f"--out {path} is a folder; name the bundle file, e.g. {path / 'results.bench.db'}")
    beside = [Path(f"{source.path}{suffix}") for suffix in ("-wal", "-shm", "-journal")] if source.path else []
    if any(path.resolve() == b.resolve() or _same_file(path, b) for b in beside):
        raise BenchError(f"--out {path} is a file SQLite keeps beside the results database ({source.shown}); name "
                         "another file for the bundle, e.g. results.bench.db")
    if source.path is not None and _same_file(path, source.path):
        raise BenchError(f"--out {path} is the results database itself ({source.shown}); name another file for the "
                         "bundle, e.g. results.bench.db")
    if path.exists() and path.stat().st_size > 0 and not is_bundle(path):
        raise BenchError(f"--out {path} exists and is not a bench bundle; `bench export` replaces only a bundle it "
                         f"wrote: name a new file, or move {path} away first")
    if not path.parent.exists() or not os.access(path.parent, os.W_OK):
        raise BenchError(f"cannot write {path}: {path.parent} is not a writable folder")
    query = select(Run.__table__).where(Run.status == Status.DONE).order_by(Run.id)
    if suite is not None:
        query = query.where(Run.suite == suite)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        bundle = Store(f"sqlite:///{tmp}")
        bundle.create()
        counts: dict[str, int] = {}
        with source.engine.connect() as src, bundle.write_engine.begin() as dst:
            runs = [dict(r) for r in src.execute(query).mappings()]
            if not runs:
                where = f" of suite {suite!r}" if suite is not None else ""
                raise BenchError(f"database {source.shown} holds no finished runs{where} to export")
            dst.execute(insert(Run.__table__), runs)
            ids = [r["id"] for r in runs]
            for table in OWNED:
                if not inspect(src).has_table(table.__tablename__):
                    continue
                counts[table.__tablename__] = 0
                for chunk in _chunks(ids):
                    query = select(table.__table__).where(table.run_id.in_(chunk))
                    rows = [dict(r) for r in src.execute(query).mappings()]
                    if rows:
                        dst.execute(insert(table.__table__), rows)
                        counts[table.__tablename__] += len(rows)
            dst.execute(insert(Meta), [{"key": BUNDLE_KEY, "value": json.dumps({
                "source": hide_password(url), "suite": suite, "runs": len(runs), "host": socket.gethostname(),
                "exported_at": datetime.now(UTC).isoformat(timespec="seconds")})}])
        bundle.engine.dispose()
        with sqlite3.connect(tmp) as conn:  # one self-contained file: no WAL beside it
            conn.execute("PRAGMA journal_mode=DELETE")
        conn.close()
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
    return ExportSummary(path, len(runs), counts)


# -- import -------------------------------------------------------------------------------------------------------
def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (through a symbolic link, another spelling, a hard link)."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _is_sqlite(path: Path) -> bool:
    """Whether the file starts with SQLite's header (OSError if it cannot be read)."""
    with open(path, "rb") as handle:
        return handle.read(16) == b"SQLite format 3\x00"


def is_bundle(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a bundle ``bench export`` wrote (a SQLite file whose bench_meta describes the export)."""
    path = Path(path)
    try:
        if not _is_sqlite(path):
            return False
        store = Store(f"sqlite:///{path.resolve()}", read_only=True)
        try:
            with store.engine.connect() as conn:
                if not inspect(conn).has_table(Meta.__tablename__):
                    return False
                return conn.execute(select(Meta.value).where(Meta.key == BUNDLE_KEY)).first() is not None
        finally:
            store.engine.dispose()
    except (OSError, SQLAlchemyError, BenchError):
        return False


def open_bundle(path: str | os.PathLike) -> Store:
    """A bundle, read-only, its schema checked (an older or newer bundle, or one that lacks a table of the schema,
    is refused with one line naming the bundle's path)."""
    path = Path(path)
    if path.is_dir():
        raise BenchError(f"bundle {path} is a folder, not a file; name the bundle file `bench export --out FILE` "
                         "wrote")
    if not path.is_file():
        raise BenchError(f"bundle {path} does not exist (write one with `bench export --out FILE`)")
    if not _is_sqlite(path):
        raise BenchError(f"bundle {path} is not a SQLite file written by `bench export`")
    store = Store(f"sqlite:///{path.resolve()}", read_only=True)
    try:
        names = store.table_names()
        if not names & migrate.BENCH_TABLES:
            tables = f" (its tables: {', '.join(sorted(names)[:8])})" if names else ""
            raise BenchError(f"bundle {path} holds no bench results{tables}; write one with `bench export --out FILE`")
        with store.engine.connect() as conn:
            version = migrate.read_version(conn)
        if migrate.state(version) == "older":
            raise BenchError(f"bundle {path} was written by an older bench ({version.describe()}; this bench reads "
                             f"revision {migrate.HEAD}): upgrade it with `bench db upgrade --db "
                             f"sqlite:///{path.resolve()}`, then import it again")
        store.check_schema()
    except BenchError as exc:
        store.engine.dispose()
        raise BenchError(str(exc).replace(f"database {store.shown}", f"bundle {path}")) from None
    except SQLAlchemyError as exc:
        store.engine.dispose()
        raise BenchError(f"bundle {path} cannot be read: {_first_line(exc)}") from None
    return store


def import_bundle(url: str, path: str | os.PathLike) -> ImportSummary:
    """Merge the runs of the bundle ``path`` into the database ``url`` (created if missing); see the module.

    The bundle is checked whole first (:func:`check_bundle`): a damaged one is refused before anything is written.
    """
    bundle = open_bundle(path)
    try:
        target = Store(url)
        if target.path is not None and _same_file(Path(path), target.path):
            raise BenchError(f"bundle {path} is the results database itself ({target.shown}); import a bundle "
                             "written by `bench export` into another database")
        target.check_writable()
        with bundle.engine.connect() as src:
            source = check_bundle(src, path, target.engine.dialect.name)
        target.create()
        summary = ImportSummary(source=source)
        with bundle.engine.connect() as src:
            runs = [dict(r) for r in src.execute(select(Run.__table__).where(Run.status == Status.DONE)
                                                 .order_by(Run.id)).mappings()]
            owned = [t for t in OWNED if inspect(src).has_table(t.__tablename__)]
            for chunk in _chunks(runs):
                try:
                    _import_chunk(src, target, chunk, owned, summary)
                except SQLAlchemyError as exc:  # the chunk's transaction rolled back; earlier chunks are kept
                    raise BenchError(f"import of {path} into {target.shown} stopped: {_first_line(exc)}; "
                                     f"{len(summary.added)} runs were added before (importing again skips "
                                     "them)") from None
    finally:
        bundle.engine.dispose()
    return summary


# -- checking a bundle before anything is written -------------------------------------------------------------------
JSON_COLUMNS = {  # (table, column): the type the JSON text must decode to (None: any JSON value)
    ("runs", "config_json"): dict,
    ("runs", "versions_json"): dict,
    ("runs", "class_names_json"): list,
    ("attack_specs", "spec_json"): dict,
    ("guards", "detail"): None,
    ("bench_meta", "value"): None,
}
STATUSES = tuple(str(s) for s in Status)
INT_RANGE = {"postgresql": 2**31}  # INTEGER columns: 32 bits on PostgreSQL; 64 bits elsewhere (SQLite)


def check_bundle(conn: Connection, path: str | os.PathLike, dialect: str = "sqlite") -> dict:
    """Check every row of a bundle against the schema before anything is imported; returns the bundle's own
    description (bench_meta). Raises the one line that names the bundle, table, row and column of the first
    problem: a value of the wrong type (text in a number column, JSON that does not parse or is not the kind of
    value bench wrote), an unknown status, a duplicate key, packed flags or labels of the wrong length, or no
    finished run at all. ``dialect`` is the target's: PostgreSQL's INTEGER is 32 bits."""
    limit = INT_RANGE.get(dialect, 2**63)
    meta = {}
    for key, value in conn.exec_driver_sql("SELECT key, value FROM bench_meta"):
        where = f"bundle {path}: table bench_meta, key {key!r}"
        if key == BUNDLE_KEY:
            meta = _json_value(value, dict, where, "value")
    done = 0
    run_ids: set = set()
    present = set(inspect(conn).get_table_names())
    for model in (Run, *(t for t in OWNED if t.__tablename__ in present)):  # the others: migrate.OPTIONAL_TABLES
        table: Table = model.__table__
        columns = list(table.columns)
        uniques = [tuple(c.name for c in u.columns) for u in table.constraints
                   if type(u).__name__ == "UniqueConstraint"]
        uniques += [(c.name,) for c in columns if c.unique]
        seen: dict[tuple, set] = {u: set() for u in uniques}
        names = ", ".join(f'"{c.name}"' for c in columns)
        for values in conn.exec_driver_sql(f'SELECT {names} FROM "{table.name}"'):
            row = dict(zip((c.name for c in columns), values))
            where = _row_where(path, table.name, row)
            for column in columns:
                problem = migrate.column_problem(column, row[column.name], limit)
                if problem and problem.startswith("is out of the range") and dialect in INT_RANGE:
                    raise BenchError(f"{where}: column {column.name} = {_shown(row[column.name])} {problem}: a "
                                     f"{dialect} database cannot store it (INTEGER holds 32 bits); import this bundle "
                                     "into a SQLite database")
                if problem:
                    raise BenchError(f"{where}: column {column.name} = {_shown(row[column.name])} {problem}; the "
                                     "bundle is damaged: export it again")
                if (table.name, column.name) in JSON_COLUMNS and row[column.name] is not None:
                    _json_value(row[column.name], JSON_COLUMNS[(table.name, column.name)], where, column.name)
            problem = _row_problem(table.name, row)
            if problem is None and table.name != "runs" and row["run_id"] not in run_ids:
                problem = f"column run_id = {_shown(row['run_id'])} names no run of the bundle"
            if problem:
                raise BenchError(f"{where}: {problem}; the bundle is damaged: export it again")
            for key, values_seen in seen.items():
                value = tuple(row[k] for k in key)
                if value in values_seen:
                    raise BenchError(f"{where}: {', '.join(key)} = {_shown(value if len(value) > 1 else value[0])} "
                                     "appears twice; the bundle is damaged: export it again")
                values_seen.add(value)
            if table.name == "runs":
                run_ids.add(row["id"])
                done += row["status"] == Status.DONE
    if not done:
        raise BenchError(f"bundle {path} holds no finished runs (status done) to import; write one with "
                         "`bench export --out FILE`")
    return meta


def _row_where(path, table: str, row: dict) -> str:
    if table == "runs":
        cell = f" (cell {row['cell_hash']})" if isinstance(row.get("cell_hash"), str) else ""
        return f"bundle {path}: table runs, row id {_shown(row.get('id'))}{cell}"
    return f"bundle {path}: table {table}, row id {_shown(row.get('id'))} (run id {_shown(row.get('run_id'))})"


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_value(value, kind, where: str, column: str):
    what = {dict: "a JSON object", list: "a JSON list", None: "JSON"}[kind]
    try:
        decoded = json.loads(value)
    except (TypeError, ValueError):
        raise BenchError(f"{where}: column {column} = {_shown(value)} is not valid JSON; the bundle is damaged: "
                         "export it again") from None
    if kind is not None and not isinstance(decoded, kind):
        raise BenchError(f"{where}: column {column} = {_shown(value)} is not {what}; the bundle is damaged: "
                         "export it again")
    return decoded


def _row_problem(table: str, row: dict) -> str | None:
    """What no row bench writes can look like (beyond column types)."""
    if table == "runs":
        if row["status"] not in STATUSES:
            return f"column status = {_shown(row['status'])} is not a status bench writes; valid: {', '.join(STATUSES)}"
        if not re.fullmatch(r"[0-9A-Za-z_-]{1,32}", row["cell_hash"]):
            return (f"column cell_hash = {_shown(row['cell_hash'])} is not a cell hash (letters, digits, - and _; "
                    "bench writes 16 hex digits)")
    elif table == "class_metrics":
        if min(row["n_train"], row["n_test"], row["correct"], row["class_index"], row["attack_order"]) < 0:
            return "a count (n_train, n_test, correct, class_index or attack_order) is negative"
        if row["correct"] > row["n_test"]:
            return f"column correct = {row['correct']} exceeds n_test = {row['n_test']}"
        if not (math.isfinite(row["accuracy"]) and 0 <= row["accuracy"] <= 1):
            return f"column accuracy = {_shown(row['accuracy'])} is not in [0, 1]"
    elif table in ("sample_flags", "test_labels", "feature_dumps"):
        n = row["n"]
        sizes = {"sample_flags": {"bits": (n + 7) // 8}, "test_labels": {"labels": 2 * n},
                 "feature_dumps": {"labels": 2 * n, "vectors": 2 * n * row.get("dim", 0)}}[table]
        if n < 0 or row.get("dim", 0) < 0:
            return f"column n or dim is negative (n = {n})"
        for column, size in sizes.items():
            if len(row[column]) != size:
                return (f"column {column} holds {len(row[column])} bytes, not the {size} that n = {n} "
                        f"{'flags' if column == 'bits' else 'values'} take")
    return None


def _import_chunk(src: Connection, target: Store, runs: list[dict], owned: Sequence, summary: ImportSummary) -> None:
    hashes = [r["cell_hash"] for r in runs]
    with target.write_engine.begin() as dst:  # SQLite: BEGIN IMMEDIATE, so the check and the insert are one step
        here = {h: (i, s) for i, h, s in dst.execute(select(Run.id, Run.cell_hash, Run.status)
                                                      .where(Run.cell_hash.in_(hashes)))}
        same = [r for r in runs if r["cell_hash"] in here]
        if same:
            theirs = _fingerprints(src, [r["id"] for r in same])
            ours = _fingerprints(dst, [here[r["cell_hash"]][0] for r in same])
        for run in same:
            local_id, status = here[run["cell_hash"]]
            label = f"{run['method']} · {run['dataset']} {run['imbalance']} · seed {run['seed']}"
            if status != Status.DONE:
                summary.not_done_here.append(Conflict(run["cell_hash"], label, f"{status} here; left alone"))
            elif theirs.get(run["id"], (None,))[0] == ours.get(local_id, (None,))[0]:
                summary.identical.append(run["cell_hash"])
            else:
                summary.conflicts.append(Conflict(run["cell_hash"], label, _difference(
                    ours.get(local_id, (None, {}))[1], theirs.get(run["id"], (None, {}))[1])))
        new = [r for r in runs if r["cell_hash"] not in here]
        if not new:
            return
        taken = set(dst.execute(select(Run.id).where(Run.id.in_([r["id"] for r in new]))).scalars())
        ids: dict[int, int] = {}
        for run in new:
            row = dict(run)
            if row["id"] in taken:
                row.pop("id")
            ids[run["id"]] = dst.execute(insert(Run.__table__).values(**row)).inserted_primary_key[0]
        for table in owned:
            rows = []
            for rec in src.execute(select(table.__table__).where(table.run_id.in_(list(ids)))).mappings():
                row = {k: v for k, v in rec.items() if k != "id"}
                row["run_id"] = ids[row["run_id"]]
                rows.append(row)
            if rows:
                dst.execute(insert(table.__table__), rows)
        if dst.dialect.name == "postgresql":  # ids written explicitly: move the sequence past them
            dst.execute(text("SELECT setval(pg_get_serial_sequence('runs', 'id'), (SELECT max(id) FROM runs))"))
        summary.added.extend(r["cell_hash"] for r in new)


def _fingerprints(conn: Connection, run_ids: Sequence[int]) -> dict[int, tuple[str, dict]]:
    """Per run: a hash of its numbers (class counts of every attack, per-sample flags) and its accuracy per
    attack (for the report of a difference)."""
    counts: dict[int, list] = {}
    rows = conn.execute(select(ClassMetric.run_id, ClassMetric.attack, ClassMetric.class_index, ClassMetric.n_train,
                               ClassMetric.n_test, ClassMetric.correct).where(ClassMetric.run_id.in_(list(run_ids))))
    for run_id, *rest in rows:
        counts.setdefault(run_id, []).append(tuple(rest))
    flags: dict[int, list] = {}
    if inspect(conn).has_table(SampleFlags.__tablename__):
        query = select(SampleFlags.run_id, SampleFlags.attack, SampleFlags.n, SampleFlags.bits).where(
            SampleFlags.run_id.in_(list(run_ids)))
        for run_id, attack, n, bits in conn.execute(query):
            flags.setdefault(run_id, []).append((attack, n, hashlib.sha256(bytes(bits)).hexdigest()))
    out = {}
    for run_id in run_ids:
        mine = sorted(counts.get(run_id, []))
        digest = hashlib.sha256(json.dumps([mine, sorted(flags.get(run_id, []))]).encode()).hexdigest()
        accuracy: dict[str, list[int]] = {}
        for attack, _c, _t, n_test, correct in mine:
            total = accuracy.setdefault(attack, [0, 0])
            total[0] += correct
            total[1] += n_test
        out[run_id] = (digest, {a: c / n if n else float("nan") for a, (c, n) in accuracy.items()})
    return out


def _difference(ours: dict, theirs: dict) -> str:
    for attack in sorted(set(ours) | set(theirs)):
        a, b = ours.get(attack), theirs.get(attack)
        if a is None or b is None:
            return f"attack {attack} is {'only in the bundle' if a is None else 'only here'}; kept the local run"
        if a != b:
            return f"{attack} accuracy {100 * a:.2f}% here vs {100 * b:.2f}% in the bundle; kept the local run"
    return "same class counts, different per-sample flags; kept the local run"


def _chunks(items: Sequence, size: int = CHUNK) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def bundle_runs(path: str | os.PathLike) -> int:
    """How many finished runs a bundle holds (for messages)."""
    store = open_bundle(path)
    with store.engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(Run).where(Run.status == Status.DONE)).scalar_one()
    store.engine.dispose()
    return int(n)
