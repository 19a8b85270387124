"""`bench compare A B`: a paired, per-cell comparison of two methods (issue 5).

What is compared. A *cell* is one (suite, dataset, imbalance, model, adversarial-training flag); runs of
method A and method B in the same cell are paired **by seed value** (seed 3 of A with seed 3 of B — a seed
that one method lacks is reported as unpaired and never shifts the other pairs). For every cell with pairs and
every selected metric — ``standard|robust`` × ``overall|under|well``, group accuracies from
:func:`bench.analysis.metrics.group_accuracies` (the one place for the group formula), in percent — the table holds:

* the means of A and of B over the paired seeds, and the paired difference A − B (percentage points) with a
  95 % t interval, ``mean ± t_{0.975, n-1} · sd / sqrt(n)`` (``scipy.stats.t``);
* the paired t-test p-value (``scipy.stats.ttest_rel``) and the Wilcoxon signed-rank p-value
  (``scipy.stats.wilcoxon``, zero differences dropped) when there are at least 6 non-zero differences —
  "n/a" otherwise, since with fewer the test cannot reach p < 0.05 at all;
* wins / ties / losses of A over the paired seeds.

Multiple comparisons. Within each metric, the p-values of all cells compared form one family and are corrected
with Holm's step-down method (:func:`holm`; a few lines rather than a statsmodels dependency). The t-test and
the Wilcoxon p-values are corrected separately. A cell is "better" / "worse" when its Holm-corrected paired
t-test p-value is below ``alpha`` (0.05), by the sign of the mean difference; otherwise "indistinguishable"
(including cells with a single pair, which cannot be tested and are counted as such in the summary).

"Robust" is the first evaluation attack of each run (``attack_order == 1``); ``--attack LABEL`` picks another
by its label. Pairs whose robust attack labels differ are not paired (and are reported).

Nothing is dropped silently: cells where only one method has finished runs, seeds finished for one method only
(with the other method's status at that seed when it has a run), missing attacks and ambiguous cells (two
finished runs of one method at one seed, e.g. a hyperparameter sweep) are listed as notes in every format.

Layout: :func:`build_comparison` is pure (results frame in, :class:`Comparison` out); :func:`compare` loads
from a database and validates the names; ``render_*`` turn a comparison into text, Markdown, CSV, JSON or a
self-contained HTML page (:func:`render_compare_html`, jinja2 with autoescape); :func:`write_compare` writes
atomically; :data:`compare_command` is the click command.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
from scipy import stats

from bench.errors import BenchError, unknown
from bench.analysis.metrics import class_groups, group_accuracies

KINDS = ("standard", "robust")
GROUP_ORDER = ("overall", "under", "well")
METRICS = tuple(f"{kind}_{group}" for kind in KINDS for group in GROUP_ORDER)
DEFAULT_METRICS = ("standard_overall", "standard_under", "robust_overall", "robust_under")
CELL_KEYS = ("suite", "dataset", "imbalance", "model", "adversarial")
FORMATS = ("table", "md", "csv", "json", "html")
SUFFIX_FORMATS = {".md": "md", ".markdown": "md", ".csv": "csv", ".json": "json", ".html": "html", ".htm": "html"}
ALPHA = 0.05
CONFIDENCE = 0.95
MIN_WILCOXON = 6  # non-zero differences; below this the exact two-sided p-value cannot go under 0.05
DECIMALS = 10  # differences are rounded here before ranking, so float noise does not break Wilcoxon ties


# -- data ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Cell:
    """The runs that may be paired: one suite, dataset, imbalance, model and training mode."""

    suite: str
    dataset: str
    imbalance: str
    model: str
    adversarial: bool

    def describe(self) -> str:
        training = "adversarial" if self.adversarial else "standard"
        return f"{self.dataset} {self.imbalance} (suite {self.suite}, {self.model}, {training} training)"


@dataclass(frozen=True)
class PairedDifference:
    """Statistics of paired values ``a`` and ``b`` (percent); differences are ``a - b`` (percentage points)."""

    n: int
    mean_a: float
    mean_b: float
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    t_p: float  # NaN: fewer than 2 pairs, or all differences zero
    wilcoxon_p: float  # NaN: fewer than MIN_WILCOXON non-zero differences
    wins: int
    ties: int
    losses: int


@dataclass(frozen=True)
class MetricRow:
    """One cell × metric of the comparison."""

    cell: Cell
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

    cell: Cell
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

    cell: Cell | None
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


# -- statistics ----------------------------------------------------------------------------------------------


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values, in the input order.

    Sort the m p-values ascending, p_(1) <= ... <= p_(m); the adjusted value of the i-th smallest is
    ``max_{j <= i} min(1, (m - j + 1) * p_(j))`` (the running maximum keeps the step-down monotone). Rejecting
    where the adjusted value is below alpha is Holm's procedure. NaN entries are not tests: they stay NaN and do
    not count in m.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = tested.size
    running = 0.0
    for rank, i in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> PairedDifference:
    """Mean of A, of B, of A − B with a t interval, paired t-test and Wilcoxon p-values, wins/ties/losses.

    ``a[i]`` and ``b[i]`` must belong to the same seed. With one pair the interval and tests are NaN.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_difference needs two equally long non-empty vectors, got {a.shape} and {b.shape}")
    d = np.round(a - b, DECIMALS)
    n = d.size
    mean = float(d.mean())
    sd = ci_low = ci_high = t_p = w_p = float("nan")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns on (nearly) identical samples
        if n >= 2:
            sd = float(d.std(ddof=1))
            half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
            ci_low, ci_high = mean - half, mean + half
            t_p = float(stats.ttest_rel(a, b).pvalue)
        if np.count_nonzero(d) >= MIN_WILCOXON:
            w_p = float(stats.wilcoxon(d).pvalue)
    return PairedDifference(
        n=n, mean_a=float(a.mean()), mean_b=float(b.mean()), mean=mean, sd=sd, ci_low=ci_low, ci_high=ci_high,
        t_p=t_p, wilcoxon_p=w_p, wins=int((d > 0).sum()), ties=int((d == 0).sum()), losses=int((d < 0).sum()),
    )


# -- building the table ----------------------------------------------------------------------------------------


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


def _cell_of(values: Sequence) -> Cell:
    suite, dataset, imbalance, model, adversarial = values
    return Cell(str(suite), str(dataset), str(imbalance), str(model), bool(adversarial))


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
    kinds = [k for k in KINDS if any(m.startswith(k + "_") for m in metrics)]
    frame = results[results["method"].isin([a, b])].copy()
    frame["adversarial"] = frame["adversarial"].astype(bool)
    frame["group"] = class_groups(frame) if not frame.empty else pd.Series(dtype=object)
    acc = group_accuracies(frame.drop(columns=["group"]))
    notes: list[Note] = []
    pending: list[tuple[Cell, str, str, tuple[int, ...], PairedDifference]] = []
    class_rows: list[ClassRow] = []
    compared_any = False

    for key, cell_frame in frame.groupby(list(CELL_KEYS), sort=True):
        cell = _cell_of(key)
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


def _other_statuses(runs: pd.DataFrame | None, cell: Cell, method: str, seeds: Iterable[int] | None = None) -> str:
    """' (method: seed 3 failed)' from the runs table, for seeds the method has no finished run at."""
    if runs is None or runs.empty:
        return ""
    mask = (runs["method"] == method) & (runs["status"] != "done")
    for key in CELL_KEYS:
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


# -- formatting ------------------------------------------------------------------------------------------------


def fmt_pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}"


def fmt_diff(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:+.2f}"


def fmt_ci(lo: float, hi: float) -> str:
    return "n/a" if math.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]"


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


def fmt_wtl(d: PairedDifference) -> str:
    return f"{d.wins}/{d.ties}/{d.losses}"


def _varying(comparison: Comparison) -> list[str]:
    """Cell keys shown as columns: dataset and imbalance always, the others when they vary."""
    cells = {r.cell for r in comparison.rows} | {n.cell for n in comparison.notes if n.cell}
    shown = []
    for key in CELL_KEYS:
        if key in ("dataset", "imbalance") or len({getattr(c, key) for c in cells}) > 1:
            shown.append(key)
    return shown


def _constant_line(comparison: Comparison) -> str:
    cells = {r.cell for r in comparison.rows} | {n.cell for n in comparison.notes if n.cell}
    parts = []
    for key in ("suite", "model", "adversarial"):
        values = {getattr(c, key) for c in cells}
        if len(values) == 1:
            value = values.pop()
            parts.append(("adversarial training" if value else "standard training") if key == "adversarial"
                         else f"{key} {value}")
    return ", ".join(parts)


def _cell_values(cell: Cell, keys: Sequence[str]) -> list[str]:
    return [("adv" if cell.adversarial else "std") if k == "adversarial" else str(getattr(cell, k)) for k in keys]


_HEAD = {"suite": "Suite", "dataset": "Dataset", "imbalance": "Imbalance", "model": "Model", "adversarial": "Training"}


def metric_table(comparison: Comparison, metric: str) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of one metric's table (the same strings in every human-readable format)."""
    keys = _varying(comparison)
    head = [_HEAD[k] for k in keys] + [
        "n", comparison.a, comparison.b, "Δ A−B", f"{comparison.confidence:.0%} CI", "p t-test (Holm)",
        "p Wilcoxon (Holm)", "W/T/L", "A vs B",
    ]
    body = []
    for r in comparison.rows_for(metric):
        d = r.diff
        body.append(_cell_values(r.cell, keys) + [
            str(d.n), fmt_pct(d.mean_a), fmt_pct(d.mean_b), fmt_diff(d.mean), fmt_ci(d.ci_low, d.ci_high),
            fmt_p(r.t_p_holm), fmt_p(r.wilcoxon_p_holm), fmt_wtl(d), r.verdict,
        ])
    return head, body


def class_tables(comparison: Comparison) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) per cell × attack kind of the per-class differences."""
    if not comparison.class_rows:
        return []
    out = []
    groups: dict[tuple[Cell, str], list[ClassRow]] = {}
    for r in comparison.class_rows:
        groups.setdefault((r.cell, r.kind), []).append(r)
    head = ["Class", "Group", "Train", "n", comparison.a, comparison.b, "Δ A−B", f"{comparison.confidence:.0%} CI",
            "W/T/L"]
    for (cell, kind), rows in groups.items():
        title = f"Per class, {kind} accuracy ({rows[0].attack}): {cell.describe()}"
        body = [[f"{r.class_index} {r.class_name}" if r.class_name != str(r.class_index) else r.class_name,
                 r.group, str(r.n_train), str(r.diff.n), fmt_pct(r.diff.mean_a), fmt_pct(r.diff.mean_b),
                 fmt_diff(r.diff.mean), fmt_ci(r.diff.ci_low, r.diff.ci_high), fmt_wtl(r.diff)] for r in rows]
        out.append((title, head, body))
    return out


def _metric_title(comparison: Comparison, metric: str) -> str:
    labels = sorted({r.attack for r in comparison.rows_for(metric)})
    return f"{metric} (attack: {', '.join(labels)})" if metric.startswith("robust") and labels else metric


def _note_lines(comparison: Comparison) -> list[str]:
    return [f"{n.cell.describe()}: {n.message}" if n.cell else n.message for n in comparison.notes]


def _title(comparison: Comparison) -> str:
    return f"bench compare: {comparison.a} (A) vs {comparison.b} (B)"


# -- renderers -------------------------------------------------------------------------------------------------


def table_renderables(comparison: Comparison) -> list:
    """rich renderables of the comparison (for a terminal)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    out: list = [Text(_title(comparison), style="bold"), Text(comparison.method_line()),
                 Text(comparison.attack_line() + (f"; {_constant_line(comparison)}" if _constant_line(comparison) else ""))]
    for metric in comparison.metrics:
        head, body = metric_table(comparison, metric)
        table = Table(title=_metric_title(comparison, metric), box=box.SIMPLE_HEAD, title_justify="left")
        n_keys = len(head) - 9
        for i, h in enumerate(head):
            table.add_column(h, justify="left" if i < n_keys else "right", no_wrap=True)
        for row in body:
            style = {"better": "green", "worse": "red"}.get(row[-1])
            table.add_row(*row, style=style)
        if not body:
            table.add_row(*(["—"] * len(head)))
        out.append(table)
    for title, head, body in class_tables(comparison):
        table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
        for i, h in enumerate(head):
            table.add_column(h, justify="left" if i < 2 else "right", no_wrap=True)
        for row in body:
            table.add_row(*row)
        out.append(table)
    out.append(Text(f"Summary (alpha {comparison.alpha:g}, Holm-corrected paired t-test)", style="bold"))
    out.extend(Text(line) for line in comparison.summary_lines())
    if comparison.notes:
        out.append(Text("Not compared (unpaired or missing)", style="bold yellow"))
        out.extend(Text(f"- {line}") for line in _note_lines(comparison))
    return out


def render_text(comparison: Comparison, width: int = 160) -> str:
    """The terminal tables as plain text (no colour codes), e.g. for ``--out compare.txt``."""
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, highlight=False)
    for item in table_renderables(comparison):
        console.print(item)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


def _md_cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(head: Sequence[str], body: Sequence[Sequence[str]], numeric_from: int) -> list[str]:
    align = ["---" if i < numeric_from else "---:" for i in range(len(head))]
    lines = ["| " + " | ".join(_md_cell(h) for h in head) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
    return lines


def render_markdown(comparison: Comparison) -> str:
    lines = [f"# {_md_cell(_title(comparison))}", "", _md_cell(comparison.method_line()), "",
             _md_cell(comparison.attack_line() + (f"; {_constant_line(comparison)}" if _constant_line(comparison) else "")), ""]
    for metric in comparison.metrics:
        head, body = metric_table(comparison, metric)
        lines += [f"## {_md_cell(_metric_title(comparison, metric))}", ""]
        lines += _md_table(head, body, len(head) - 9) if body else ["No cell compared."]
        lines.append("")
    for title, head, body in class_tables(comparison):
        lines += [f"### {_md_cell(title)}", ""] + _md_table(head, body, 2) + [""]
    lines += [f"## Summary (alpha {comparison.alpha:g}, Holm-corrected paired t-test)", ""] + [f"- {_md_cell(s)}" for s in comparison.summary_lines()] + [""]
    if comparison.notes:
        lines += ["## Not compared (unpaired or missing)", ""] + [f"- {_md_cell(s)}" for s in _note_lines(comparison)]
        lines.append("")
    return "\n".join(lines)


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _cell_dict(cell: Cell | None) -> dict:
    return asdict(cell) if cell else {k: None for k in CELL_KEYS}


def _diff_dict(d: PairedDifference, tests: bool = True) -> dict:
    out = {k: _num(v) for k, v in asdict(d).items()}
    if not tests:
        out.pop("t_p")
        out.pop("wilcoxon_p")
    return out


def to_records(comparison: Comparison) -> dict:
    """The comparison as plain data (what the JSON output holds); accuracies in percent, NaN as None."""
    return {
        "a": comparison.a,
        "b": comparison.b,
        "metrics": list(comparison.metrics),
        "attack": comparison.attack,
        "alpha": comparison.alpha,
        "confidence": comparison.confidence,
        "units": "percent; differences are A - B in percentage points",
        "correction": "Holm, across the cells compared, per metric (t-test and Wilcoxon separately)",
        "verdict_rule": "better/worse when the Holm-corrected paired t-test p-value < alpha",
        "rows": [
            {**_cell_dict(r.cell), "metric": r.metric, "attack": r.attack, "seeds": list(r.seeds),
             **_diff_dict(r.diff), "t_p_holm": _num(r.t_p_holm), "wilcoxon_p_holm": _num(r.wilcoxon_p_holm),
             "verdict": r.verdict}
            for r in comparison.rows
        ],
        "per_class": None if comparison.class_rows is None else [
            {**_cell_dict(r.cell), "kind": r.kind, "attack": r.attack, "class_index": r.class_index,
             "class_name": r.class_name, "group": r.group, "n_train": r.n_train, "seeds": list(r.seeds),
             **_diff_dict(r.diff, tests=False)}
            for r in comparison.class_rows
        ],
        "summary": comparison.summary(),
        "notes": [{**_cell_dict(n.cell), "message": n.message} for n in comparison.notes],
    }


def render_json(comparison: Comparison) -> str:
    return json.dumps(to_records(comparison), indent=2, allow_nan=False) + "\n"


CSV_COLUMNS = [
    "row", *CELL_KEYS, "metric", "attack", "class_index", "class_name", "group", "n_train", "seeds", "n",
    "mean_a", "mean_b", "mean", "sd", "ci_low", "ci_high", "t_p", "t_p_holm", "wilcoxon_p", "wilcoxon_p_holm",
    "wins", "ties", "losses", "verdict", "message",
]


def render_csv(comparison: Comparison) -> str:
    """One tidy table: ``row`` is ``metric`` (a cell × metric), ``class`` (per-class) or ``note``.

    Accuracies in percent, differences A − B; ``t_p_holm``/``wilcoxon_p_holm`` are Holm-corrected across cells
    per metric. Numbers are written unrounded.
    """
    records = to_records(comparison)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()

    def clean(rec: dict) -> dict:
        rec = {k: ("" if v is None else v) for k, v in rec.items()}
        if "seeds" in rec:
            rec["seeds"] = " ".join(str(s) for s in rec["seeds"])
        return rec

    for rec in records["rows"]:
        writer.writerow(clean({"row": "metric", **rec}))
    for rec in records["per_class"] or ():
        writer.writerow(clean({"row": "class", "metric": f"{rec['kind']}_class", **rec}))
    for rec in records["notes"]:
        writer.writerow(clean({"row": "note", **rec}))
    return buffer.getvalue()


_HTML = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #222; max-width: 90rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; }
td.key, th.key { text-align: left; }
tr.better td { background: #e8f5e9; }
tr.worse td { background: #fdecea; }
p.method { color: #555; max-width: 60rem; }
ul.notes li { color: #8a5300; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="method">{{ method_line }}</p>
<p class="method">{{ attack_line }}</p>
{% for t in metric_tables %}
<h2 id="{{ t.metric }}">{{ t.title }}</h2>
{% if t.body %}
<table>
<thead><tr>{% for h in t.head %}<th{% if loop.index0 < t.n_keys %} class="key"{% endif %}>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in t.body %}<tr class="{{ row[-1] }}">{% for c in row %}<td{% if loop.index0 < t.n_keys %} class="key"{% endif %}>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>
{% else %}<p>No cell compared.</p>{% endif %}
{% endfor %}
{% if class_tables %}<h2>Per class</h2>{% endif %}
{% for title_, head, body in class_tables %}
<h3>{{ title_ }}</h3>
<table>
<thead><tr>{% for h in head %}<th{% if loop.index0 < 2 %} class="key"{% endif %}>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in body %}<tr>{% for c in row %}<td{% if loop.index0 < 2 %} class="key"{% endif %}>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>
{% endfor %}
<h2>Summary (alpha {{ alpha }}, Holm-corrected paired t-test)</h2>
<ul>{% for s in summary %}<li>{{ s }}</li>{% endfor %}</ul>
{% if notes %}<h2>Not compared (unpaired or missing)</h2>
<ul class="notes">{% for n in notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
</body>
</html>
""")


def render_compare_html(comparison: Comparison, title: str | None = None) -> str:
    """A self-contained HTML page (inline CSS, no external resources); every string is escaped.

    The report can write it next to its own pages (see :func:`write_compare`) and link to it.
    """
    tables = []
    for metric in comparison.metrics:
        head, body = metric_table(comparison, metric)
        tables.append({"metric": metric, "title": _metric_title(comparison, metric), "head": head, "body": body,
                       "n_keys": len(head) - 9})
    constant = _constant_line(comparison)
    return _HTML.render(
        title=title or _title(comparison),
        method_line=comparison.method_line(),
        attack_line=comparison.attack_line() + (f"; {constant}" if constant else ""),
        metric_tables=tables,
        class_tables=class_tables(comparison),
        summary=comparison.summary_lines(),
        notes=_note_lines(comparison),
        alpha=f"{comparison.alpha:g}",
    )


RENDERERS = {"table": render_text, "md": render_markdown, "csv": render_csv, "json": render_json,
             "html": render_compare_html}


def render(comparison: Comparison, fmt: str = "table") -> str:
    """The comparison in one of :data:`FORMATS`."""
    if fmt not in RENDERERS:
        raise unknown("format", fmt, FORMATS)
    return RENDERERS[fmt](comparison)


def format_for(path: Path | None, fmt: str | None) -> str:
    """The explicit format, else the one ``path``'s suffix names, else the terminal table."""
    if fmt:
        return fmt
    if path is not None:
        return SUFFIX_FORMATS.get(path.suffix.lower(), "table")
    return "table"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise BenchError(f"cannot write {path}: {exc.strerror or exc}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_compare(comparison: Comparison, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Render and write atomically; the format follows ``fmt`` or the file suffix. Returns the path."""
    path = Path(path)
    write_atomic(path, render(comparison, format_for(path, fmt)))
    return path
