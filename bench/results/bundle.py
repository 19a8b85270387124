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
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, insert, inspect, select, text
from sqlalchemy.engine import Connection

from bench.cell import Status
from bench.errors import BenchError
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
def open_bundle(path: str | os.PathLike) -> Store:
    """A bundle, read-only, its schema checked (an older or newer bundle is refused with one line)."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"bundle {path} does not exist (write one with `bench export --out FILE`)")
    with open(path, "rb") as handle:
        if handle.read(16) != b"SQLite format 3\x00":
            raise BenchError(f"bundle {path} is not a SQLite file written by `bench export`")
    store = Store(f"sqlite:///file:{path.resolve()}?mode=ro&uri=true")
    if not store.exists():
        raise BenchError(f"bundle {path} holds no bench results")
    store.check_schema()
    return store


def import_bundle(url: str, path: str | os.PathLike) -> ImportSummary:
    """Merge the runs of the bundle ``path`` into the database ``url`` (created if missing); see the module."""
    bundle = open_bundle(path)
    target = Store(url)
    target.check_writable()
    target.create()
    summary = ImportSummary()
    with bundle.engine.connect() as src:
        meta = src.execute(select(Meta.value).where(Meta.key == BUNDLE_KEY)).scalar_one_or_none()
        summary.source = json.loads(meta) if meta else {}
        runs = [dict(r) for r in src.execute(select(Run.__table__).where(Run.status == Status.DONE)
                                             .order_by(Run.id)).mappings()]
        owned = [t for t in OWNED if inspect(src).has_table(t.__tablename__)]
        for chunk in _chunks(runs):
            _import_chunk(src, target, chunk, owned, summary)
    bundle.engine.dispose()
    return summary


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


def bundle_runs(path: str | os.PathLike) -> int:
    """How many finished runs a bundle holds (for messages)."""
    store = open_bundle(path)
    with store.engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(Run).where(Run.status == Status.DONE)).scalar_one()
    store.engine.dispose()
    return int(n)
