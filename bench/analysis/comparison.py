"""Comparing two methods cell by cell: ``bench compare A B``'s numbers (issue 5), rendered by
:mod:`bench.report.compare_render`.

What is compared. A comparison *cell* is a :class:`PairGroup` — one (suite, dataset, imbalance, model,
adversarial-training flag); runs of method A and method B in the same group are paired **by seed value** (seed 3
of A with seed 3 of B — a seed that one method lacks is reported as unpaired and never shifts the other pairs).
For every cell with pairs and every selected metric — ``standard|robust`` × ``overall|under|well``, group
accuracies from :func:`bench.analysis.metrics.group_accuracies` (the one place for the group formula), in
percent — the table holds the statistics of :func:`bench.analysis.paired.paired_difference`: the means of A and
of B over the paired seeds, the paired difference A − B (percentage points) with a 95 % t interval, the paired
t-test and Wilcoxon p-values, wins / ties / losses of A.

Multiple comparisons. Within each metric, the p-values of all cells compared form one family and are corrected
with Holm's step-down method (:func:`bench.analysis.paired.holm`). The t-test and the Wilcoxon p-values are
corrected separately. A cell is "better" / "worse" when its Holm-corrected paired t-test p-value is below
``alpha`` (0.05), by the sign of the mean difference; otherwise "indistinguishable" (including cells with a
single pair, which cannot be tested and are counted as such in the summary).

"Robust" is the first evaluation attack of each run (``attack_order == 1``); ``--attack LABEL`` picks another
by its label. Pairs whose robust attack labels differ are not paired (and are reported).

Nothing is dropped silently: cells where only one method has finished runs, seeds finished for one method only
(with the other method's status at that seed when it has a run), missing attacks and ambiguous cells (two
finished runs of one method at one seed, e.g. a hyperparameter sweep) are listed as notes in every format.

Why a module of its own: the statistics (:mod:`bench.analysis.paired`) are pure numbers checked against scipy;
this module is about *which* numbers are paired — the database's runs, their seeds, statuses and attacks — and
holds the :class:`Comparison` every renderer reads. :func:`build_comparison` is pure (results frame in,
:class:`Comparison` out); :func:`compare` loads from a database and validates the names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.analysis.metrics import class_groups, group_accuracies
from bench.analysis.paired import ALPHA, CONFIDENCE, PairedDifference, holm, paired_difference
from bench.cell import Status
from bench.compare import ACCURACY_KINDS, DEFAULT_METRICS, METRICS, PAIR_KEYS
from bench.errors import BenchError, unknown


@dataclass(frozen=True, order=True)
class PairGroup:
    """The runs that may be paired (a cell of the comparison): one suite, dataset, imbalance, model and training
    mode. Not :class:`bench.cell.Cell` (one configuration to run): a group holds every method and seed."""

    suite: str
    dataset: str
    imbalance: str
    model: str
    adversarial: bool

    def describe(self) -> str:
        training = "adversarial" if self.adversarial else "standard"
        return f"{self.dataset} {self.imbalance} (suite {self.suite}, {self.model}, {training} training)"


@dataclass(frozen=True)
class MetricRow:
    """One cell × metric of the comparison."""

    cell: PairGroup
    metric: str
    attack: str  # the attack label the metric was read from ("clean" for standard accuracy)
    seeds: tuple[int, ...]  # the paired seeds
    diff: PairedDifference
    t_p_holm: float
    wilcoxon_p_holm: float
    verdict: str  # better | worse | indistinguishable (A relative to B)


@dataclass(frozen=True)
class ClassRow:
    """One cell × attack kind × class: the paired difference of that class's accuracy."""

    cell: PairGroup
    kind: str  # standard | robust
    attack: str
    class_index: int
    class_name: str
    group: str  # well | under
    n_train: int
    seeds: tuple[int, ...]
    diff: PairedDifference


@dataclass(frozen=True)
class Note:
    """Something not compared, and why (unpaired seeds, one-method cells, missing attacks)."""

    cell: PairGroup | None
    message: str


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`build_comparison`; every renderer reads only this."""

    a: str
    b: str
    metrics: tuple[str, ...]
    attack: str | None  # None: the first evaluation attack of each run
    rows: tuple[MetricRow, ...]
    notes: tuple[Note, ...]
    class_rows: tuple[ClassRow, ...] | None = None  # None unless per-class differences were asked for
    alpha: float = ALPHA
    confidence: float = CONFIDENCE

    def rows_for(self, metric: str) -> list[MetricRow]:
        return [r for r in self.rows if r.metric == metric]

    def summary(self) -> dict[str, dict[str, int]]:
        """Per metric: cells where A is significantly better / worse / indistinguishable, and untestable ones."""
        out = {}
        for metric in self.metrics:
            rows = self.rows_for(metric)
            out[metric] = {
                "cells": len(rows),
                "better": sum(r.verdict == "better" for r in rows),
                "worse": sum(r.verdict == "worse" for r in rows),
                "indistinguishable": sum(r.verdict == "indistinguishable" for r in rows),
                "untested": sum(math.isnan(r.t_p_holm) for r in rows),
            }
        return out

    def summary_lines(self) -> list[str]:
        lines = []
        for metric, s in self.summary().items():
            line = (
                f"{metric}: {self.a} is significantly better than {self.b} in {s['better']} of {s['cells']} cells, "
                f"worse in {s['worse']}, indistinguishable in {s['indistinguishable']}"
            )
            if s["untested"]:
                line += f" ({s['untested']} with too few pairs to test)"
            lines.append(line)
        return lines

    def method_line(self) -> str:
        return (
            f"A = {self.a}, B = {self.b}; runs paired by seed; accuracies in percent, differences A − B in "
            f"percentage points with {self.confidence:.0%} t intervals; p-values (paired t-test, Wilcoxon "
            f"signed-rank) Holm-corrected across the cells compared, per metric; significant at alpha "
            f"{self.alpha:g} by the corrected t-test."
        )

    def attack_line(self) -> str:
        labels = sorted({r.attack for r in self.rows if r.metric.startswith("robust")})
        shown = f" ({', '.join(labels)})" if labels else ""
        if self.attack is None:
            return f"robust = the first evaluation attack{shown}"
        return f"robust = attack {self.attack!r}"

def parse_metrics(values: Iterable[str] | None) -> tuple[str, ...]:
    """Metric names from repeated and/or comma-separated values; the default set when none is given."""
    names: list[str] = []
    for value in values or ():
        for part in str(value).split(","):
            name = part.strip().lower().replace("-", "_")
            if not name:
                continue
            if name not in METRICS:
                raise unknown("metric", part.strip(), METRICS)
            if name not in names:
                names.append(name)
    return tuple(names) or DEFAULT_METRICS


def _seeds(seeds: Iterable[int]) -> str:
    return ", ".join(str(s) for s in sorted(seeds))


def _group_of(values: Sequence) -> PairGroup:
    suite, dataset, imbalance, model, adversarial = values
    return PairGroup(str(suite), str(dataset), str(imbalance), str(model), bool(adversarial))


def _attack_rows(acc: pd.DataFrame, kind: str, attack: str | None) -> pd.DataFrame:
    """The run × attack rows that give ``kind`` accuracy: clean, the chosen attack, or the first evaluation one."""
    if kind == "standard":
        return acc[acc["attack"] == "clean"]
    if attack is not None:
        return acc[acc["attack"] == attack]
    return acc[(acc["attack_order"] == 1) & (acc["attack"] != "clean")]


def build_comparison(
    results: pd.DataFrame,
    a: str,
    b: str,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    attack: str | None = None,
    per_class: bool = False,
    runs: pd.DataFrame | None = None,
    alpha: float = ALPHA,
) -> Comparison:
    """Pair A's and B's finished runs by seed in every cell and compute the statistics of each metric.

    ``results`` is :func:`bench.results.read.load_results` output (finished runs only); ``runs`` (optional,
    :func:`bench.results.read.load_runs` output) lets notes say what became of a seed that one method lacks.
    Raises :class:`BenchError` when no cell holds a pair.
    """
    metrics = tuple(metrics)
    kinds = [k for k in ACCURACY_KINDS if any(m.startswith(k + "_") for m in metrics)]
    frame = results[results["method"].isin([a, b])].copy()
    frame["adversarial"] = frame["adversarial"].astype(bool)
    frame["group"] = class_groups(frame) if not frame.empty else pd.Series(dtype=object)
    acc = group_accuracies(frame.drop(columns=["group"]))
    notes: list[Note] = []
    pending: list[tuple[PairGroup, str, str, tuple[int, ...], PairedDifference]] = []
    class_rows: list[ClassRow] = []
    compared_any = False

    for key, cell_frame in frame.groupby(list(PAIR_KEYS), sort=True):
        cell = _group_of(key)
        run_seeds = cell_frame.drop_duplicates("run_id")[["run_id", "method", "seed"]]
        by_method = {m: run_seeds[run_seeds["method"] == m] for m in (a, b)}
        if by_method[a].empty or by_method[b].empty:
            present, absent = (a, b) if by_method[b].empty else (b, a)
            message = f"only {present} has finished runs (seeds {_seeds(by_method[present]['seed'])})"
            message += _other_statuses(runs, cell, absent)
            notes.append(Note(cell, message + "; not compared"))
            continue
        duplicated = [m for m in (a, b) if by_method[m]["seed"].duplicated().any()]
        if duplicated:
            m = duplicated[0]
            seeds = sorted(set(by_method[m]["seed"][by_method[m]["seed"].duplicated()]))
            notes.append(Note(cell, f"{m} has several finished runs at seed {_seeds(seeds)} (different configs?); "
                                    "cell not compared — narrow it with --suite"))
            continue
        seeds_a, seeds_b = set(by_method[a]["seed"]), set(by_method[b]["seed"])
        for m, only, other in ((a, seeds_a - seeds_b, b), (b, seeds_b - seeds_a, a)):
            if only:
                notes.append(Note(cell, f"seed {_seeds(only)} finished for {m} only{_other_statuses(runs, cell, other, only)}; "
                                        "not paired"))
        common = seeds_a & seeds_b
        if not common:
            notes.append(Note(cell, "no seed finished for both methods; not compared"))
            continue
        run_of = {m: dict(zip(by_method[m]["seed"], by_method[m]["run_id"])) for m in (a, b)}
        cell_acc = acc[acc["run_id"].isin(cell_frame["run_id"])]
        for kind in kinds:
            rows = _attack_rows(cell_acc, kind, attack).set_index("run_id")
            paired: list[int] = []
            missing = {a: [], b: []}
            differing = []
            for seed in sorted(common):
                ra, rb = run_of[a][seed], run_of[b][seed]
                for m, r in ((a, ra), (b, rb)):
                    if r not in rows.index:
                        missing[m].append(seed)
                if ra in rows.index and rb in rows.index:
                    la, lb = rows.at[ra, "attack"], rows.at[rb, "attack"]
                    if la != lb:
                        differing.append(f"seed {seed}: {a} {la!r}, {b} {lb!r}")
                    else:
                        paired.append(seed)
            wanted = "clean" if kind == "standard" else (repr(attack) if attack else "evaluation attack")
            for m, seeds in missing.items():
                if seeds:
                    notes.append(Note(cell, f"{kind}: {m} has no {wanted} results at seed {_seeds(seeds)}; not paired"))
            if differing:
                notes.append(Note(cell, f"{kind}: the attacks differ ({'; '.join(differing)}); not paired"))
            if not paired:
                continue
            labels = {rows.at[run_of[a][s], "attack"] for s in paired}
            label = ", ".join(sorted(labels))
            for metric in metrics:
                if not metric.startswith(kind + "_"):
                    continue
                group = metric.split("_", 1)[1]
                va = np.array([rows.at[run_of[a][s], group] for s in paired], dtype=float) * 100
                vb = np.array([rows.at[run_of[b][s], group] for s in paired], dtype=float) * 100
                ok = ~(np.isnan(va) | np.isnan(vb))
                if not ok.all():
                    gone = [s for s, keep in zip(paired, ok) if not keep]
                    notes.append(Note(cell, f"{metric}: no test samples in the group at seed {_seeds(gone)}; not paired"))
                if not ok.any():
                    continue
                seeds = tuple(s for s, keep in zip(paired, ok) if keep)
                pending.append((cell, metric, label, seeds, paired_difference(va[ok], vb[ok])))
                compared_any = True
            if per_class:
                attack_of = {r: rows.at[r, "attack"] for s in paired for r in (run_of[a][s], run_of[b][s])}
                class_rows.extend(_class_differences(cell_frame, cell, kind, label, paired, run_of, attack_of, a, b))

    if not compared_any:
        detail = "; ".join(f"{n.cell.describe() if n.cell else ''}: {n.message}" for n in notes[:3])
        more = f" (and {len(notes) - 3} more)" if len(notes) > 3 else ""
        raise BenchError(f"nothing to compare: {a} and {b} have no finished runs at a common seed in any cell"
                         + (f" — {detail}{more}" if detail else ""))

    rows: list[MetricRow] = []
    for metric in metrics:
        family = [p for p in pending if p[1] == metric]
        t_holm = holm([p[4].t_p for p in family])
        w_holm = holm([p[4].wilcoxon_p for p in family])
        for (cell, _m, label, seeds, diff), tp, wp in zip(family, t_holm, w_holm):
            verdict = "indistinguishable"
            if not math.isnan(tp) and tp < alpha and diff.mean != 0:
                verdict = "better" if diff.mean > 0 else "worse"
            rows.append(MetricRow(cell, metric, label, seeds, diff, float(tp), float(wp), verdict))
    return Comparison(a=a, b=b, metrics=metrics, attack=attack, rows=tuple(rows), notes=tuple(notes),
                      class_rows=tuple(class_rows) if per_class else None, alpha=alpha)


def _other_statuses(runs: pd.DataFrame | None, cell: PairGroup, method: str, seeds: Iterable[int] | None = None) -> str:
    """' (method: seed 3 failed)' from the runs table, for seeds the method has no finished run at."""
    if runs is None or runs.empty:
        return ""
    mask = (runs["method"] == method) & (runs["status"] != Status.DONE)
    for key in PAIR_KEYS:
        column = runs[key].astype(bool) if key == "adversarial" else runs[key].astype(str)
        mask &= column == getattr(cell, key)
    if seeds is not None:
        mask &= runs["seed"].isin(list(seeds))
    found = runs[mask].sort_values("seed")
    if found.empty:
        return ""
    parts = [f"seed {s} {st}" for s, st in zip(found["seed"], found["status"])]
    return f" ({method}: {', '.join(parts)})"


def _class_differences(cell_frame, cell, kind, label, paired, run_of, attack_of, a, b) -> list[ClassRow]:
    """Per-class paired differences of ``kind`` accuracy over the paired seeds of one cell.

    ``attack_of`` maps each paired run to the attack label its ``kind`` accuracy is read from.
    """
    wanted = cell_frame["run_id"].map(attack_of)
    rows = cell_frame[cell_frame["attack"] == wanted]
    by_run = {rid: part.set_index("class_index") for rid, part in rows.groupby("run_id")}
    first = by_run[run_of[a][paired[0]]]
    out = []
    for c in first.index:
        va, vb, seeds = [], [], []
        for s in paired:
            ra, rb = by_run.get(run_of[a][s]), by_run.get(run_of[b][s])
            if ra is None or rb is None or c not in ra.index or c not in rb.index:
                continue
            x, y = float(ra.at[c, "accuracy"]), float(rb.at[c, "accuracy"])
            if math.isnan(x) or math.isnan(y):
                continue
            va.append(x * 100)
            vb.append(y * 100)
            seeds.append(s)
        if not seeds:
            continue
        out.append(ClassRow(cell=cell, kind=kind, attack=label, class_index=int(c),
                            class_name=str(first.at[c, "class_name"]), group=str(first.at[c, "group"]),
                            n_train=int(first.at[c, "n_train"]), seeds=tuple(seeds),
                            diff=paired_difference(va, vb)))
    return out


def compare(
    url: str,
    a: str,
    b: str,
    *,
    suite: str | None = None,
    metrics: Iterable[str] | None = None,
    attack: str | None = None,
    per_class: bool = False,
) -> Comparison:
    """Load a database, validate the names and build the comparison (what the CLI and the report call)."""
    from bench.results.read import load_results, load_runs  # the store pulls in SQLAlchemy; keep import light

    metrics = parse_metrics(metrics)
    if a == b:
        raise BenchError(f"compare needs two different methods, got {a!r} twice")
    runs = load_runs(url)
    if runs.empty:
        raise BenchError(f"database {url} holds no runs yet; run `bench run SUITE.toml` first")
    import methods

    valid = list(dict.fromkeys([*methods.names(), *sorted(runs["method"].astype(str).unique())]))
    for name in (a, b):
        if name not in valid:
            raise unknown("method", name, valid)
    if suite is not None:
        suites = sorted(runs["suite"].astype(str).unique())
        if suite not in suites:
            raise unknown("suite", suite, suites)
        runs = runs[runs["suite"] == suite]
    results = load_results(url, suite=suite)
    where = f" in suite {suite!r}" if suite else ""
    for name in (a, b):
        if not (results["method"] == name).any():
            mine = runs[runs["method"] == name]
            if mine.empty:
                raise BenchError(f"method {name} has no runs{where} in {url}")
            counts = mine["status"].value_counts()
            detail = ", ".join(f"{n} {status}" for status, n in counts.items())
            raise BenchError(f"method {name} has no finished runs{where} ({detail}); nothing to compare")
    if attack is not None:
        labels = sorted(set(results["attack"]) - {"clean"})
        if attack not in labels:
            raise unknown("attack", attack, labels)
    return build_comparison(results, a, b, metrics=metrics, attack=attack, per_class=per_class, runs=runs)

