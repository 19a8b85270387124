"""Reading a results database for a report: every run with its status, the per-class counts of finished runs,
the attack labels and (for the few runs a figure shows) the training curves.

Why not :func:`bench.store.load_results`: it repeats each run's keys and JSON config on every class row, which
for 10,000 runs × 3 attacks × 10 classes is 300,000 rows and ~4 s of row objects. A report reads the run keys
once (:func:`bench.store.load_runs`) and the class rows as six integer columns straight off the DBAPI cursor
(~1 s for those 300,000 rows); the frame it builds for :func:`bench.metrics.group_accuracies` has the same columns
and meaning.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from bench.errors import BenchError, unknown
from bench.store import ClassMetric, EpochMetric, Run, Store, load_runs

CLASS_COLUMNS = ["run_id", "attack_order", "class_index", "n_train", "n_test", "correct"]
CURVE_COLUMNS = ["run_id", "epoch", "lr", "loss", "train_accuracy", "seconds"]
_CHUNK = 500  # run ids per IN (...) clause: well under SQLite's 999-parameter limit of old builds


@dataclass
class ReportData:
    """What a report is made from.

    ``runs``: one row per run of the selected suite(s), any status, indexed by run id, with ``config`` (the
    parsed JSON dict); :meth:`class_names` parses a run's class names on demand. ``class_rows``:
    :data:`CLASS_COLUMNS` of finished runs, integers.
    ``attacks``: distinct ``suite, dataset, imbalance, adversarial, attack_order, attack`` of finished runs.
    """

    url: str
    suites: list[str]
    runs: pd.DataFrame
    class_rows: pd.DataFrame
    attacks: pd.DataFrame
    guards: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["run_id", "name", "flagged"]))

    def class_names(self, run_id: int) -> list[str] | None:
        names = _parse_json(self.runs.at[run_id, "class_names_json"], None)
        return [str(n) for n in names] if isinstance(names, list) else None


def load_report_data(url: str, suite: str | None = None) -> ReportData:
    """Everything a report needs, with one-line errors for an empty, foreign or older database or unknown suite."""
    store = Store(url)
    store.check_schema()  # missing file / no tables / other schema version -> BenchError
    try:
        with store.engine.connect() as conn:
            suites = sorted(s for (s,) in conn.execute(select(Run.suite).distinct()))
    except SQLAlchemyError as exc:
        raise BenchError(f"database {url} cannot be read: {exc}") from None
    if not suites:
        raise BenchError(f"database {url} holds no runs yet; run `bench run SUITE.toml` first")
    if suite is not None and suite not in suites:
        raise unknown("suite", suite, suites, where=f"database {url}")

    runs = load_runs(url, suite)
    runs["adversarial"] = runs["adversarial"].astype(bool)
    runs["config"] = [_parse_json(text, {}) for text in runs["config_json"].tolist()]
    runs = runs.set_index("id", drop=False).rename_axis(None)

    done = (Run.status == "done") if suite is None else ((Run.status == "done") & (Run.suite == suite))
    class_query = (
        select(ClassMetric.run_id, ClassMetric.attack_order, ClassMetric.class_index, ClassMetric.n_train,
               ClassMetric.n_test, ClassMetric.correct)
        .join(Run, Run.id == ClassMetric.run_id)
        .where(done)
    )
    attack_query = (  # class 0 only: every evaluated run has it, and it is a tenth of the rows to scan
        select(Run.suite, Run.dataset, Run.imbalance, Run.adversarial, ClassMetric.attack_order, ClassMetric.attack)
        .join(Run, Run.id == ClassMetric.run_id)
        .where(done & (ClassMetric.class_index == 0))
        .distinct()
    )
    with store.engine.connect() as conn:
        result = conn.execute(class_query)
        # Plain tuples off the DBAPI cursor: building SQLAlchemy Row objects costs 5x more at this size.
        rows = result.cursor.fetchall() if result.cursor is not None else [tuple(r) for r in result]
        attacks = pd.DataFrame([tuple(r) for r in conn.execute(attack_query)],
                               columns=["suite", "dataset", "imbalance", "adversarial", "attack_order", "attack"])
    values = np.array(rows, dtype=np.int64).reshape(-1, len(CLASS_COLUMNS))
    class_rows = pd.DataFrame(values, columns=CLASS_COLUMNS)
    attacks["adversarial"] = attacks["adversarial"].astype(bool)
    from bench.store import load_guards

    guards = load_guards(url, suite)[["run_id", "name", "flagged"]]
    return ReportData(url=url, suites=suites, runs=runs, class_rows=class_rows, attacks=attacks, guards=guards)


def load_curves(url: str, run_ids: Sequence[int]) -> pd.DataFrame:
    """The per-epoch training curves (:data:`CURVE_COLUMNS`) of ``run_ids`` only."""
    ids = sorted({int(i) for i in run_ids})
    store = Store(url)
    parts = []
    with store.engine.connect() as conn:
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            query = select(EpochMetric.run_id, EpochMetric.epoch, EpochMetric.lr, EpochMetric.loss,
                           EpochMetric.train_accuracy, EpochMetric.seconds).where(EpochMetric.run_id.in_(chunk))
            result = conn.execute(query)
            parts.extend(result.cursor.fetchall() if result.cursor is not None else [tuple(r) for r in result])
    return pd.DataFrame(parts, columns=CURVE_COLUMNS)


def _parse_json(text: str | None, default):
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default
