"""Every reader of the results database: tidy DataFrames (and a few arrays) for the report, compare, guards, the
CLI and ``bench evaluate``. Nothing outside :mod:`bench.results` opens the ORM; it asks here.

Readers take a database URL (or an open :class:`~bench.results.store.Store`), check the schema version, and
return plain data: DataFrames, dicts and numpy arrays, never ORM objects that outlive their session — except
:func:`done_runs`, whose detached ``Run`` rows ``bench evaluate`` reads attributes of.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bench.catalog import AttackConfig
from bench.cell import Status
from bench.errors import BenchError
from bench.results.schema import (
    AttackSpecRow,
    ClassMetric,
    EpochMetric,
    FeatureDump,
    GuardRow,
    Run,
    SampleFlags,
    TestLabels,
    TheoryResult,
    unpack_flags,
)
from bench.results.store import Store

_CHUNK = 500  # run ids per IN (...) clause: well under SQLite's 999-parameter limit of old builds


def _reader(url: str) -> Store:
    """The database at ``url``, opened to read: a missing file is never created, and nothing is written (the
    file stays byte for byte as it was)."""
    return Store(url, read_only=True)


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
    out: dict[int, dict[str, dict]] = {}
    for run in runs:
        config = json.loads(run.config_json)
        tables = {}
        for table in config.get("eval_attacks", []):
            try:
                tables[AttackConfig.from_table(table).label] = table
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


RESULT_COLUMNS = [
    "run_id", "cell_hash", "suite", "method", "dataset", "imbalance", "seed", "model", "adversarial",
    "attack", "attack_order", "class_index", "class_name", "n_train", "n_test", "correct", "accuracy",
]


def load_results(url: str, suite: str | None = None, cell_hash: str | None = None) -> pd.DataFrame:
    """Tidy results: one row per finished run × attack × class (``attack == "clean"`` is standard accuracy),
    optionally of one suite or one cell (its full hash).

    Columns: ``run_id, cell_hash, suite, method, dataset, imbalance, seed, model, adversarial, attack,
    attack_order, class_index, class_name, n_train, n_test, correct, accuracy``, plus ``config`` (the
    resolved cell config as JSON text).
    """
    store = _reader(url)
    store.check_schema()
    query = (
        select(
            Run.id.label("run_id"), Run.cell_hash, Run.suite, Run.method, Run.dataset, Run.imbalance, Run.seed,
            Run.model, Run.adversarial, ClassMetric.attack, ClassMetric.attack_order, ClassMetric.class_index,
            ClassMetric.class_name, ClassMetric.n_train, ClassMetric.n_test, ClassMetric.correct,
            ClassMetric.accuracy, Run.config_json.label("config"),
        )
        .join(ClassMetric, ClassMetric.run_id == Run.id)
        .where(Run.status == Status.DONE)
        .order_by(Run.id, ClassMetric.attack_order, ClassMetric.class_index)
    )
    if suite is not None:
        query = query.where(Run.suite == suite)
    if cell_hash is not None:
        query = query.where(Run.cell_hash == cell_hash)
    with store.engine.connect() as conn:
        frame = pd.read_sql(query, conn)
    return frame


def feature_dump_runs(url: str, run_ids: Sequence[int]) -> set[int]:
    """Which of ``run_ids`` kept feature dumps."""
    store = _reader(url)
    ids = list(run_ids)
    found: set[int] = set()
    with store.session(write=False) as session:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            found.update(session.execute(select(FeatureDump.run_id).where(FeatureDump.run_id.in_(chunk)).distinct()).scalars())
    return found


def load_features(url: str, run_id: int) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """A run's feature dumps: ``{(split, kind): (labels [n], features [n, dim] float32)}``."""
    store = _reader(url)
    store.check_schema()
    out = {}
    with store.session(write=False) as session:
        for row in session.execute(select(FeatureDump).where(FeatureDump.run_id == run_id)).scalars():
            labels = np.frombuffer(row.labels, dtype=np.int16).astype(np.int64)
            vectors = np.frombuffer(row.vectors, dtype=np.float16).reshape(row.n, row.dim).astype(np.float32)
            out[(row.split, row.kind)] = (labels, vectors)
    return out


def load_theory(url: str) -> list[dict]:
    """Every stored theory suite: ``{"suite", "description", "frame", "pairs"}`` (frames as DataFrames)."""
    store = _reader(url)
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
    store = _reader(url)
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
    store = _reader(url)
    store.check_schema()
    with store.engine.connect() as conn:
        if not inspect(conn).has_table("guards"):
            return pd.DataFrame(columns=GUARD_COLUMNS)
        query = (
            select(Run.id.label("run_id"), Run.cell_hash, Run.suite, Run.method, Run.dataset, Run.imbalance,
                   Run.seed, Run.model, GuardRow.name, GuardRow.value, GuardRow.threshold, GuardRow.flagged,
                   GuardRow.detail)
            .join(GuardRow, GuardRow.run_id == Run.id)
            .where(Run.status == Status.DONE)
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
    store = _reader(url)
    store.check_schema()
    with store.session(write=False) as session:
        query = select(Run).where(Run.status == Status.DONE).order_by(Run.id)
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


def run_record(url: str, cell_prefix: str) -> dict:
    """One run's full record (``bench show``): every column, its config and provenance decoded from JSON, and
    ``class_accuracy`` as ``{attack: {class name: accuracy}}``; with a validation set, ``validation`` as a list of
    ``{epoch, val_clean, val_robust}`` (the selected epoch is ``selected_epoch``). The cell is named by its hash or
    a unique prefix."""
    store = _reader(url)
    store.check_schema()
    if not cell_prefix.strip():
        raise BenchError("no cell given: name a run by its cell hash or its first characters, e.g. `bench show "
                         "8ed80c24` (`bench status` and reports list them)")
    with store.session(write=False) as session:  # a prefix, never a LIKE pattern: _ and % match only themselves
        runs = session.execute(select(Run).where(Run.cell_hash.startswith(cell_prefix, autoescape=True))
                               .limit(2)).scalars().all()
        if len(runs) != 1:
            raise BenchError(f"cell {cell_prefix!r} {'matches no run' if not runs else 'is ambiguous'} in "
                             f"{store.shown}")
        run = runs[0]
        record = {c.name: getattr(run, c.name) for c in Run.__table__.columns if c.name != "config_json"}
        record["config"] = json.loads(run.config_json)
        for key in ("versions_json", "class_names_json"):
            if record.get(key):
                record[key.removesuffix("_json")] = json.loads(record.pop(key))
        metrics = session.execute(select(ClassMetric).where(ClassMetric.run_id == run.id)
                                  .order_by(ClassMetric.attack_order, ClassMetric.class_index)).scalars().all()
        record["class_accuracy"] = {}
        for m in metrics:
            record["class_accuracy"].setdefault(m.attack, {})[m.class_name] = round(m.accuracy, 4)
        validated = session.execute(select(EpochMetric.epoch, EpochMetric.val_clean, EpochMetric.val_robust)
                                    .where(EpochMetric.run_id == run.id, EpochMetric.val_clean.is_not(None))
                                    .order_by(EpochMetric.epoch)).all()
        if validated:
            record["validation"] = [{"epoch": e, "val_clean": c, "val_robust": r} for e, c, r in validated]
    return record


# -- the report's fast path ------------------------------------------------------------------------------------
CLASS_COLUMNS = ["run_id", "attack_order", "class_index", "n_train", "n_test", "correct"]
CURVE_COLUMNS = ["run_id", "epoch", "lr", "loss", "train_accuracy", "seconds", "val_clean", "val_robust"]


def suite_names(url: str) -> list[str]:
    """The suites that have runs, sorted (one line if the database cannot be read)."""
    store = _reader(url)
    store.check_schema()  # missing file / no tables / other schema version -> BenchError
    try:
        with store.engine.connect() as conn:
            return sorted(s for (s,) in conn.execute(select(Run.suite).distinct()))
    except SQLAlchemyError as exc:
        raise BenchError(f"database {store.shown} cannot be read: {exc}") from None


def has_runs(url: str) -> bool:
    with _reader(url).session(write=False) as session:
        return bool(session.execute(select(func.count()).select_from(Run)).scalar())


def _done(suite: str | None):
    return (Run.status == Status.DONE) if suite is None else ((Run.status == Status.DONE) & (Run.suite == suite))


def class_count_rows(url: str, suite: str | None = None) -> np.ndarray:
    """:data:`CLASS_COLUMNS` of finished runs as one int64 array: plain tuples off the DBAPI cursor, since
    building SQLAlchemy Row objects costs 5x more at 300,000 rows."""
    query = (
        select(ClassMetric.run_id, ClassMetric.attack_order, ClassMetric.class_index, ClassMetric.n_train,
               ClassMetric.n_test, ClassMetric.correct)
        .join(Run, Run.id == ClassMetric.run_id)
        .where(_done(suite))
    )
    with _reader(url).engine.connect() as conn:
        result = conn.execute(query)
        rows = result.cursor.fetchall() if result.cursor is not None else [tuple(r) for r in result]
    return np.array(rows, dtype=np.int64).reshape(-1, len(CLASS_COLUMNS))


def attack_labels(url: str, suite: str | None = None) -> pd.DataFrame:
    """Distinct ``suite, dataset, imbalance, adversarial, attack_order, attack`` of finished runs."""
    query = (  # class 0 only: every evaluated run has it, and it is a tenth of the rows to scan
        select(Run.suite, Run.dataset, Run.imbalance, Run.adversarial, ClassMetric.attack_order, ClassMetric.attack)
        .join(Run, Run.id == ClassMetric.run_id)
        .where(_done(suite) & (ClassMetric.class_index == 0))
        .distinct()
    )
    with _reader(url).engine.connect() as conn:
        attacks = pd.DataFrame([tuple(r) for r in conn.execute(query)],
                               columns=["suite", "dataset", "imbalance", "adversarial", "attack_order", "attack"])
    attacks["adversarial"] = attacks["adversarial"].astype(bool)
    return attacks


def load_curves(url: str, run_ids: Sequence[int]) -> pd.DataFrame:
    """The per-epoch training curves (:data:`CURVE_COLUMNS`) of ``run_ids`` only."""
    ids = sorted({int(i) for i in run_ids})
    parts = []
    with _reader(url).engine.connect() as conn:
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            query = select(EpochMetric.run_id, EpochMetric.epoch, EpochMetric.lr, EpochMetric.loss,
                           EpochMetric.train_accuracy, EpochMetric.seconds, EpochMetric.val_clean,
                           EpochMetric.val_robust).where(EpochMetric.run_id.in_(chunk))
            result = conn.execute(query)
            parts.extend(result.cursor.fetchall() if result.cursor is not None else [tuple(r) for r in result])
    return pd.DataFrame(parts, columns=CURVE_COLUMNS)


def has_theory(url: str) -> bool:
    """Whether the database holds the table of theory suites (older databases may not)."""
    store = _reader(url)
    return store.exists() and inspect(store.engine).has_table("theory_results")


# -- one run (bench evaluate) ---------------------------------------------------------------------------------
# -- re-evaluation (bench evaluate) ---------------------------------------------------------------------
def done_runs(store: Store, suite: str | None = None) -> list[Run]:
    """Finished runs (status ``done``), oldest first, optionally of one suite."""
    query = select(Run).where(Run.status == Status.DONE).order_by(Run.id)
    if suite is not None:
        query = query.where(Run.suite == suite)
    with store.session(write=False) as session:
        return list(session.execute(query).scalars())

def run_flags(store: Store, run_id: int) -> dict[str, np.ndarray]:
    """A run's per-sample flags by attack label, in attack order (``clean`` first)."""
    with store.session(write=False) as session:
        return _flags_of(session, [run_id]).get(run_id, {})

def run_attack_tables(store: Store, run_id: int) -> dict[str, dict]:
    """Resolved tables of a run's evaluated attacks by label (stored rows, else the run's config)."""
    with store.session(write=False) as session:
        run = session.get(Run, run_id)
        return _attack_tables_of(session, [run]).get(run_id, {})

def stored_guards(store: Store, run_id: int) -> dict[str, GuardRow]:
    """A run's stored guards by name (what :func:`bench.guards.run_guards` computed and the store kept)."""
    with store.session(write=False) as session:
        rows = session.execute(select(GuardRow).where(GuardRow.run_id == run_id)).scalars()
        return {row.name: row for row in rows}

def has_test_labels(store: Store, run_id: int) -> bool:
    with store.session(write=False) as session:
        return session.execute(select(TestLabels.id).where(TestLabels.run_id == run_id)).first() is not None


# -- the leaderboard (bench leaderboard) ------------------------------------------------------------------------
def run_attacks(url: str, suite: str | None = None) -> pd.DataFrame:
    """``run_id, attack_order, attack, kind`` of every evaluated attack of finished runs, ``clean`` (order 0)
    included; ``kind`` from the stored ``attack_specs`` row (``None`` where there is none: ``clean``, or a run
    stored before attack tables were kept, whose config says)."""
    query = (  # class 0 only: every evaluated run has it
        select(ClassMetric.run_id, ClassMetric.attack_order, ClassMetric.attack)
        .join(Run, Run.id == ClassMetric.run_id)
        .where(_done(suite) & (ClassMetric.class_index == 0))
    )
    def rows(result) -> list:  # plain tuples off the DBAPI cursor (see class_count_rows)
        return result.cursor.fetchall() if result.cursor is not None else [tuple(r) for r in result]

    with _reader(url).engine.connect() as conn:
        frame = pd.DataFrame(rows(conn.execute(query)), columns=["run_id", "attack_order", "attack"])
        kinds = pd.DataFrame(columns=["run_id", "attack", "kind"])
        if inspect(conn).has_table("attack_specs"):
            specs = (select(AttackSpecRow.run_id, AttackSpecRow.attack, AttackSpecRow.kind)
                     .join(Run, Run.id == AttackSpecRow.run_id).where(_done(suite)))
            kinds = pd.DataFrame(rows(conn.execute(specs)), columns=["run_id", "attack", "kind"])
    frame = frame.merge(kinds, on=["run_id", "attack"], how="left")
    frame["kind"] = frame["kind"].astype(object).where(frame["kind"].notna(), None)
    return frame.astype({"run_id": "int64", "attack_order": "int64"}).sort_values(["run_id", "attack_order"],
                                                                                 ignore_index=True)


def iter_flag_bits(url: str, suite: str | None = None, chunk: int = _CHUNK) -> Iterator[dict[int, dict]]:
    """The packed per-sample flags and test labels of finished runs, ``chunk`` runs at a time (memory stays flat
    at any number of runs): ``{run_id: {"n": n, "labels": int16 [n], "bits": {attack: uint8 [ceil(n / 8)]}}}``,
    bits as :func:`~bench.results.schema.pack_flags` packs them. Runs without stored test labels are left out."""
    store = _reader(url)
    with store.engine.connect() as conn:
        if not (inspect(conn).has_table("test_labels") and inspect(conn).has_table("sample_flags")):
            return
        ids = [i for (i,) in conn.execute(select(Run.id).where(_done(suite)).order_by(Run.id))]
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            out: dict[int, dict] = {}
            result = conn.execute(select(TestLabels.run_id, TestLabels.n, TestLabels.labels)
                                  .where(TestLabels.run_id.in_(part)))
            for run_id, n, labels in (result.cursor.fetchall() if result.cursor is not None else result):
                out[int(run_id)] = {"n": int(n), "labels": np.frombuffer(labels, dtype=np.int16), "bits": {}}
            result = conn.execute(select(SampleFlags.run_id, SampleFlags.attack, SampleFlags.n, SampleFlags.bits)
                                  .where(SampleFlags.run_id.in_(part)))
            for run_id, attack, n, bits in (result.cursor.fetchall() if result.cursor is not None else result):
                entry = out.get(int(run_id))
                if entry is not None and int(n) == entry["n"]:
                    entry["bits"][str(attack)] = np.frombuffer(bits, dtype=np.uint8)
            yield out
