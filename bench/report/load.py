"""Reading a results database for a report: every run with its status, the per-class counts of finished runs,
the attack labels and (for the few runs a figure shows) the training curves.

Why not :func:`bench.results.read.load_results`: it repeats each run's keys and JSON config on every class row, which
for 10,000 runs × 3 attacks × 10 classes is 300,000 rows and ~4 s of row objects. A report reads the run keys
once (:func:`bench.results.read.load_runs`) and the class rows as six integer columns straight off the DBAPI cursor
(:func:`bench.results.read.class_count_rows`, ~1 s for those 300,000 rows); the frame it builds for :func:`bench.analysis.metrics.group_accuracies` has the same columns
and meaning.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from bench.errors import BenchError, unknown
from bench.results import read
from bench.results.read import CLASS_COLUMNS, CURVE_COLUMNS  # noqa: F401 - the report's column names


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
    suites = read.suite_names(url)  # missing file / no tables / other schema version -> BenchError
    if not suites:
        raise BenchError(f"database {url} holds no runs yet; run `bench run SUITE.toml` first")
    if suite is not None and suite not in suites:
        raise unknown("suite", suite, suites, where=f"database {url}")

    runs = read.load_runs(url, suite)
    runs["adversarial"] = runs["adversarial"].astype(bool)
    runs["config"] = [_parse_json(text, {}) for text in runs["config_json"].tolist()]
    runs = runs.set_index("id", drop=False).rename_axis(None)
    class_rows = pd.DataFrame(read.class_count_rows(url, suite), columns=CLASS_COLUMNS)
    attacks = read.attack_labels(url, suite)
    guards = read.load_guards(url, suite)[["run_id", "name", "flagged"]]
    return ReportData(url=url, suites=suites, runs=runs, class_rows=class_rows, attacks=attacks, guards=guards)


def load_curves(url: str, run_ids: Sequence[int]) -> pd.DataFrame:
    """The per-epoch training curves (:data:`~bench.results.read.CURVE_COLUMNS`) of ``run_ids`` only."""
    return read.load_curves(url, run_ids)


def _parse_json(text: str | None, default):
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default
