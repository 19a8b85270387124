"""The numbers of a report: paper-style tables, one per (suite, dataset, imbalance, adversarial flag).

Rows are methods in registry order (the paper's row order), then methods the registry does not know,
alphabetically. A method run with several settings of a config key inside one table (a sweep of
``method_args.lam``, say) gets one row per setting, labelled benchopt-style ``srat-ce [lam=0.5]``, so different
settings are never pooled as if they were seeds. Columns are Standard (attack order 0) and Robust (order 1, the
suite's first evaluation attack) × Overall / Under (Well with ``groups="all"``), plus a column group per further
attack. An entry (:class:`TableEntry`) is mean ± sample standard deviation (ddof = 1; the paper does not say
which) over the row's finished seeds, in percent; with one seed the deviation is "–".

Marks, both decided on the values as printed (two decimals), so a tie in print is a tie in marks:

* best — the highest mean of its column (all tied rows), when at least two rows have a value;
* SRAT wins — an SRAT variant (registered, λ > 0) whose mean is above that of every baseline (registered,
  λ = 0) with the same prediction loss in that table (and there is at least one such baseline). Capabilities come
  from the method classes (``prediction_loss``, ``lam`` or the run's ``method_args.lam``), never from names.

Runs that are not done never give numbers: a row lists them in its note ("2 running, 1 failed"), and a row with
no finished seed shows its status in place of numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

import methods
from bench.analysis.metrics import group_accuracies
from bench.cell import Status
from bench.report.load import ReportData
from bench.report.options import GROUP_SETS
from bench.report.reference import Reference
from bench.values import fmt_setting

GROUP_TITLES = {"overall": "Overall", "well": "Well", "under": "Under"}
NOT_DONE = (Status.RUNNING, Status.INTERRUPTED, Status.FAILED, Status.DIVERGED)  # the order notes list them in
STATUS_ORDER = (Status.DONE, *NOT_DONE)
TABLE_KEYS = ("suite", "dataset", "imbalance", "adversarial")
# Config keys that are the table's or row's identity (or the seed) and so never make a variant.
IDENTITY_KEYS = frozenset({"suite", "dataset", "imbalance", "adversarial", "method", "seed"})
DASH = "–"  # shown for a missing number (no std with one seed, an attack a row was not evaluated with)


# -- formatting shared by every renderer -------------------------------------------------------------------------
def fmt_pct(value: float | None) -> str:
    """A percentage as printed in every format: two decimals, "–" when missing."""
    return DASH if value is None else f"{value:.2f}"


def fmt_diff(value: float | None) -> str:
    return DASH if value is None else f"{value:+.2f}"


def printed(value: float) -> float:
    """The value as it is printed, for marks and differences."""
    return float(f"{value:.2f}")


# -- the model -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableKey:
    suite: str
    dataset: str
    imbalance: str
    adversarial: bool

    @property
    def training(self) -> str:
        return "adversarial training" if self.adversarial else "natural training"

    @property
    def title(self) -> str:
        return f"{self.dataset} · {self.imbalance} · {self.training}"


@dataclass(frozen=True)
class Column:
    attack_order: int
    group: str  # overall | well | under

    @property
    def key(self) -> tuple[int, str]:
        return (self.attack_order, self.group)

    @property
    def title(self) -> str:
        return GROUP_TITLES[self.group]


@dataclass(frozen=True)
class ColumnGroup:
    attack_order: int
    attack: str  # the attack label(s) stored for this order, "clean" for order 0
    columns: tuple[Column, ...]

    @property
    def title(self) -> str:
        if self.attack_order == 0:
            return "Standard accuracy"
        if self.attack_order == 1:
            return "Robust accuracy"
        return f"{self.attack} accuracy"

    @property
    def kind(self) -> str:
        """``standard``, ``robust`` or the attack label, for CSV and captions."""
        return {0: "standard", 1: "robust"}.get(self.attack_order, self.attack)


@dataclass
class TableEntry:
    """A row × column of a table: mean ± std over the row's finished seeds, its marks, the paper's value (not a
    :class:`bench.cell.Cell`, one configuration to run)."""

    mean: float | None = None  # percent
    std: float | None = None  # percent; None with fewer than two seeds
    n: int = 0
    best: bool = False
    srat_wins: bool = False
    status: str | None = None  # shown in place of numbers when the row has no finished seed
    paper_mean: float | None = None
    paper_std: float | None = None

    @property
    def text(self) -> str:
        """``63.26 ± 0.59``, ``63.26 ± –`` (one seed), the status, or "–"."""
        if self.mean is None:
            return self.status or DASH
        return f"{fmt_pct(self.mean)} ± {fmt_pct(self.std)}"

    @property
    def difference(self) -> float | None:
        """Ours minus the paper's, in points, from the printed values."""
        if self.mean is None or self.paper_mean is None:
            return None
        return printed(self.mean) - self.paper_mean

    @property
    def paper_text(self) -> str:
        if self.paper_mean is None:
            return ""
        std = DASH if self.paper_std is None else fmt_pct(self.paper_std)
        return f"{fmt_pct(self.paper_mean)} ± {std}"


@dataclass
class Row:
    method: str
    variant: str  # "" or "lam=0.5, under_weight=10"
    settings: dict  # variant key -> value
    run_ids: list[int]
    done_ids: list[int]
    statuses: Counter
    role: str  # srat | baseline | other
    prediction_loss: str | None
    has_reference: bool
    config: dict = field(repr=False, default_factory=dict)  # flattened config of the row's first run
    entries: dict[tuple[int, str], TableEntry] = field(default_factory=dict)
    guard_flags: Counter = field(default_factory=Counter)  # guard name -> runs of this row it flagged

    @property
    def label(self) -> str:
        return f"{self.method} [{self.variant}]" if self.variant else self.method

    @property
    def n_seeds(self) -> int:
        return len(self.done_ids)

    @property
    def note(self) -> str:
        """"2 running, 1 failed" — the runs of this row that give no numbers — and robustness guards that fired
        ("flagged: pgd-aa-gap ×2"), so a robust number that may be inflated is marked where it is read."""
        flags = ", ".join(f"{name} ×{n}" for name, n in sorted(self.guard_flags.items()))
        return "; ".join(p for p in (_note(self.statuses), f"flagged: {flags}" if flags else "") if p)

    @property
    def has_paper(self) -> bool:
        """Whether any entry carries the paper's value."""
        return any(e.paper_mean is not None for e in self.entries.values())

    def entry(self, column: Column) -> TableEntry:
        return self.entries.get(column.key) or TableEntry()


def _note(statuses: Counter) -> str:
    others = sorted(s for s in statuses if s != Status.DONE and s not in NOT_DONE)
    return ", ".join(f"{statuses[s]} {s}" for s in [*NOT_DONE, *others] if statuses.get(s))


@dataclass
class Table:
    key: TableKey
    column_groups: list[ColumnGroup]
    rows: list[Row]
    reference_source: str | None = None

    @property
    def columns(self) -> list[Column]:
        return [c for g in self.column_groups for c in g.columns]

    @property
    def title(self) -> str:
        return self.key.title

    @property
    def has_reference(self) -> bool:
        return self.reference_source is not None


# -- building -----------------------------------------------------------------------------------------------------
def build_tables(data: ReportData, groups: str = "overall-under", reference: Reference | None = None) -> list[Table]:
    """The report's tables from :func:`bench.report.load.load_report_data` output; ``reference`` adds the paper."""
    if groups not in GROUP_SETS:
        raise ValueError(f"groups must be one of {', '.join(GROUP_SETS)}, got {groups!r}")
    runs = data.runs
    flat = [_resolved(method, _flatten(config))
            for method, config in zip(runs["method"].tolist(), runs["config"].tolist())]
    variants, settings = _variants(runs, flat)
    accuracies = run_accuracies(data.class_rows)
    flagged = data.guards[data.guards["flagged"]] if not data.guards.empty else data.guards
    flagged_by_run: dict[int, list[str]] = {}
    for run_id, name in zip(flagged["run_id"].tolist(), flagged["name"].tolist()):
        flagged_by_run.setdefault(int(run_id), []).append(str(name))

    order_labels: dict[tuple, dict[int, set]] = {}
    for rec in data.attacks.itertuples(index=False):
        key = (rec.suite, rec.dataset, rec.imbalance, bool(rec.adversarial))
        order_labels.setdefault(key, {}).setdefault(int(rec.attack_order), set()).add(rec.attack)

    # One integer per table row, so per-run accuracies aggregate in one vectorised groupby.
    row_keys = list(zip(runs["suite"].tolist(), runs["dataset"].tolist(), runs["imbalance"].tolist(),
                        runs["adversarial"].tolist(), runs["method"].tolist(), variants))
    row_index: dict[tuple, int] = {}
    row_of_run = [row_index.setdefault(k, len(row_index)) for k in row_keys]
    run_row = pd.Series(row_of_run, index=runs.index)
    stats = _row_stats(accuracies, run_row)

    members: dict[int, list[int]] = {}
    for run_id, row in zip(runs.index.tolist(), row_of_run):
        members.setdefault(row, []).append(run_id)
    status_of = runs["status"].to_dict()
    position = {name: i for i, name in enumerate(methods.names())}
    shown_groups = GROUP_SETS[groups]

    tables: dict[TableKey, Table] = {}
    for key, row in row_index.items():
        table_key = TableKey(*key[:4])
        table = tables.get(table_key)
        if table is None:
            labels = order_labels.get(key[:4]) or {0: {"clean"}, 1: set()}
            column_groups = [
                ColumnGroup(order, " / ".join(sorted(labels[order])),
                            tuple(Column(order, g) for g in shown_groups))
                for order in sorted(labels)
            ]
            table = tables[table_key] = Table(table_key, column_groups, [])
        ids = members[row]
        first = runs.index.get_loc(ids[0])
        method = key[4]
        table.rows.append(_make_row(method, key[5], settings[first], ids, status_of, flat[first]))
        table.rows[-1].guard_flags = Counter(name for i in ids for name in flagged_by_run.get(i, ()))
        _fill_entries(table.rows[-1], table, stats.get(row, {}))

    out = []
    for table_key in sorted(tables, key=lambda k: (k.suite, k.dataset, _imbalance_sort(k.imbalance),
                                                   not k.adversarial)):
        table = tables[table_key]
        table.rows.sort(key=lambda r: (position.get(r.method, len(position)), r.method, _variant_sort(r.settings)))
        _mark(table)
        if reference is not None and table_key.adversarial:
            _add_reference(table, reference)
        out.append(table)
    return out


def run_accuracies(class_rows: pd.DataFrame) -> pd.DataFrame:
    """Per run × attack order: ``overall``, ``well``, ``under`` in [0, 1], by :func:`bench.analysis.metrics.group_accuracies`."""
    columns = ["run_id", "attack_order", "overall", "well", "under"]
    if class_rows.empty:
        return pd.DataFrame(columns=columns)
    frame = class_rows[["run_id", "attack_order", "class_index", "n_train", "n_test", "correct"]].assign(attack="")
    result = group_accuracies(frame)
    return result[columns].astype({"run_id": "int64", "attack_order": "int64"}).reset_index(drop=True)


def _row_stats(accuracies: pd.DataFrame, run_row: pd.Series) -> dict[int, dict[tuple[int, str], tuple]]:
    """row -> (order, group) -> (mean %, std % or None, n)."""
    if accuracies.empty:
        return {}
    frame = accuracies.assign(row=run_row.reindex(accuracies["run_id"].to_numpy()).to_numpy())
    frame = frame.dropna(subset=["row"])
    long = frame.melt(id_vars=["row", "attack_order"], value_vars=["overall", "well", "under"],
                      var_name="group", value_name="value")
    long["value"] = long["value"].astype(float) * 100.0
    agg = long.groupby(["row", "attack_order", "group"])["value"].agg(["mean", "std", "count"])
    out: dict[int, dict] = {}
    for (row, order, group), mean, std, n in zip(agg.index, agg["mean"], agg["std"], agg["count"]):
        if n == 0:
            continue
        out.setdefault(int(row), {})[(int(order), group)] = (
            float(mean), float(std) if n >= 2 and not math.isnan(std) else None, int(n))
    return out


def _make_row(method: str, variant: str, settings: dict, ids: list[int], status_of: dict, flat: dict) -> Row:
    statuses = Counter(status_of[i] for i in ids)
    done = [i for i in ids if status_of[i] == Status.DONE]
    role, loss, defaults = "other", None, None
    if method in methods.METHODS:
        defaults = _method_defaults(method)
        loss = methods.METHODS.get(method).prediction_loss
        lam = flat.get("method_args.lam", defaults.get("lam", 0.0))
        try:
            role = "srat" if float(lam) > 0 else "baseline"
        except (TypeError, ValueError):
            role = "other"
    has_reference = not settings or (defaults is not None and all(
        k.startswith("method_args.") and _same(v, defaults.get(k.removeprefix("method_args."), object()))
        for k, v in settings.items()))
    return Row(method=method, variant=variant, settings=settings, run_ids=ids, done_ids=done, statuses=statuses,
               role=role, prediction_loss=loss, has_reference=has_reference, config=flat)


def _fill_entries(row: Row, table: Table, stats: dict) -> None:
    if row.n_seeds == 0:
        kinds = [s for s in row.statuses if s != Status.DONE]
        status = kinds[0] if len(kinds) == 1 else "no result"
        for column in table.columns:
            row.entries[column.key] = TableEntry(status=status)
        return
    for column in table.columns:
        mean, std, n = stats.get(column.key, (None, None, 0))
        row.entries[column.key] = TableEntry(mean=mean, std=std, n=n)


def _mark(table: Table) -> None:
    for column in table.columns:
        valued = [(row, printed(row.entry(column).mean)) for row in table.rows if row.entry(column).mean is not None]
        if len(valued) >= 2:
            top = max(v for _, v in valued)
            for row, v in valued:
                row.entry(column).best = v == top
        for row, v in valued:
            if row.role != "srat":
                continue
            rivals = [w for other, w in valued if other.role == "baseline"
                      and other.prediction_loss == row.prediction_loss]
            row.entry(column).srat_wins = bool(rivals) and all(v > w for w in rivals)


def _add_reference(table: Table, reference: Reference) -> None:
    for row in table.rows:
        if not row.has_reference:
            continue
        entry = reference.get(table.key.dataset, table.key.imbalance, row.method)
        if entry is None:
            continue
        table.reference_source = table.reference_source or entry.source
        for column in table.columns:
            value = entry.values.get(column.key)
            if value is not None:
                shown = row.entries.setdefault(column.key, TableEntry())
                shown.paper_mean, shown.paper_std = value


# -- variants ---------------------------------------------------------------------------------------------------
def _flatten(config: dict, prefix: str = "") -> dict:
    """``{"method_args": {"lam": 1}}`` -> ``{"method_args.lam": 1}``; lists become JSON text (hashable).

    ``method_params`` (the method's resolved hyperparameters, derived from ``method_args``) is left out: it would
    repeat every swept ``method_args`` value under a second name.
    """
    out: dict = {}
    for key, value in (config or {}).items():
        if not prefix and key == "method_params":
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value, sort_keys=True)
        else:
            out[name] = value
    return out


def _resolved(method: str, flat: dict) -> dict:
    """Fill unset ``method_args.*`` with the registered method's defaults: unset and explicit default are one
    setting, and a sweep's default point gets its value."""
    for key, default in _method_defaults(method).items():
        flat.setdefault(f"method_args.{key}", default)
    return flat


@functools.cache
def _method_defaults(method: str) -> dict:
    """A registered method's hyperparameter defaults (empty for a method the registry does not know)."""
    if method not in methods.METHODS:
        return {}
    return {f.name: f.default for f in dataclasses.fields(methods.METHODS.get(method))}


def _variants(runs: pd.DataFrame, flat: list[dict]) -> tuple[list[str], list[dict]]:
    """Each run's variant label and settings: the config keys that vary within its (table, method) group.

    A key varies when two runs with the same seed differ in it — so a value derived from the seed (a data seed)
    is never mistaken for a sweep.
    """
    n = len(runs)
    if n == 0:
        return [], []
    config = pd.DataFrame(flat, index=range(n))
    config = config[[c for c in config.columns if c not in IDENTITY_KEYS]]
    group_cols = ["_suite", "_dataset", "_imbalance", "_adversarial", "_method"]
    keys = pd.DataFrame({
        "_suite": runs["suite"].to_numpy(), "_dataset": runs["dataset"].to_numpy(),
        "_imbalance": runs["imbalance"].to_numpy(), "_adversarial": runs["adversarial"].to_numpy(),
        "_method": runs["method"].to_numpy(), "_seed": runs["seed"].to_numpy(),
    })
    labels = [""] * n
    settings: list[dict] = [{} for _ in range(n)]
    if not len(config.columns):
        return labels, settings
    # Cheap filter first: only keys with more than one value anywhere can vary within a group.
    candidates = [c for c in config.columns if config[c].nunique(dropna=False) > 1]
    if not candidates:
        return labels, settings
    frame = pd.concat([keys, config[candidates].astype(object).where(config[candidates].notna(), None)], axis=1)
    per_seed = frame.groupby([*group_cols, "_seed"], dropna=False)[candidates].nunique(dropna=False)
    varying = per_seed.groupby(level=list(range(len(group_cols)))).max() > 1
    group_of = frame.groupby(group_cols, dropna=False, sort=False).indices
    for group, positions in group_of.items():
        if group not in varying.index:
            continue
        flags = varying.loc[group]
        vary = sorted(k for k in candidates if bool(flags[k]))
        if not vary:
            continue
        for p in positions:
            chosen = {k: flat[p].get(k) for k in vary}
            settings[p] = chosen
            labels[p] = ", ".join(f"{_short(k)}={fmt_setting(v)}" for k, v in chosen.items())
    return labels, settings


def _short(key: str) -> str:
    return key.removeprefix("method_args.")


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return a == b


def _variant_sort(settings: dict) -> tuple:
    def one(value):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return (2, 0.0, "")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (0, float(value), "")
        return (1, 0.0, str(value))

    return tuple(one(settings[k]) for k in sorted(settings))


def _imbalance_sort(imbalance: str) -> tuple:
    kind, ratio = imbalance_ratio(imbalance)
    return (kind, ratio if ratio is not None else math.inf, imbalance)


def imbalance_ratio(imbalance: str) -> tuple[str, float | None]:
    """``"step-100"`` -> ``("step", 100.0)``; ``(imbalance, None)`` when it has no trailing ratio."""
    kind, _, ratio = imbalance.rpartition("-")
    try:
        value = float(ratio)
    except ValueError:
        return imbalance, None
    return (kind, value) if kind and math.isfinite(value) else (imbalance, None)
