"""The leaderboard's numbers (``bench leaderboard``): one ranked table per setting and an overall ranking.

A *setting* (:class:`~bench.analysis.leaderboard_data.Setting`) is dataset × imbalance × threat model: the training
attack (kind and ε, or natural training) and the first evaluation attack (label and ε). A row (:class:`Entry`) is
a method with its resolved variant: the hyperparameters set away from the method's registered defaults, and —
where one method's runs in one setting differ in recipe (model, epochs, learning rate …) — the recipe keys that
tell them apart. Its numbers are means over its finished runs, in percent:

* ``clean`` (attack order 0), ``robust`` (order 1, the first evaluation attack), ``aa`` (the first AutoAttack, when
  evaluated) and ``worst`` (per test sample: correct clean and under every stored attack), each ``_overall`` and
  ``_under`` (the under-represented classes), all through :func:`bench.analysis.metrics.group_accuracies`;
* ``seeds`` (distinct seeds), the published values (``paper_*``, for a method at its defaults), the
  robustness guards that fired on its runs, and the cost: device-hours (wall time summed over its runs) and
  images/s (mean over its runs).

Ranking (:func:`rank`): by ``metric`` — default ``worst_under`` — ties broken by its counterpart (``_overall``
for an ``_under`` column and back; ``worst_under`` for seeds and cost); rows equal in both share a rank (1, 2, 2, 4); a
row without a value for the metric is listed unranked. The overall ranking averages each row's ranks over the
settings it was ranked in, and says in how many.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bench.analysis.leaderboard_data import (
    KINDS,
    WORST_ORDER,
    LeaderboardData,
    Setting,
    load_leaderboard_data,
    method_card,
    same,
)
from bench.analysis.metrics import class_groups
from bench.errors import BenchError, valid_choices
from bench.values import fmt_setting

if TYPE_CHECKING:
    from bench.report.reference import Reference

GROUPS = ("overall", "under")
ACCURACIES = [f"{kind}_{group}" for kind in KINDS for group in GROUPS]
PAPER = {(0, "overall"): "paper_clean_overall", (0, "under"): "paper_clean_under",
         (1, "overall"): "paper_robust_overall", (1, "under"): "paper_robust_under"}


@dataclass(frozen=True)
class Metric:
    name: str
    title: str
    higher: bool  # a higher value ranks first
    tiebreak: str


def _metrics() -> dict[str, Metric]:
    out = {}
    for kind, what in KINDS.items():
        for group, other in (("under", "overall"), ("overall", "under")):
            title = f"{what}, {'under-represented classes' if group == 'under' else 'all classes'}"
            out[f"{kind}_{group}"] = Metric(f"{kind}_{group}", title, True, f"{kind}_{other}")
    out["seeds"] = Metric("seeds", "number of seeds", True, "worst_under")
    out["device_hours"] = Metric("device_hours", "device-hours (lower first)", False, "worst_under")
    out["images_per_second"] = Metric("images_per_second", "training images per second", True, "worst_under")
    for (order, group), name in PAPER.items():
        kind = "clean" if order == 0 else "robust"
        out[name] = Metric(name, f"the paper's published {kind} accuracy, {group}", True,
                           name.replace(group, "overall" if group == "under" else "under"))
    return out


METRICS = _metrics()
DEFAULT_METRIC = "worst_under"


def check_metric(metric: str) -> Metric:
    if metric not in METRICS:
        raise BenchError(f"--metric {metric!r} is not a leaderboard column{valid_choices(metric, METRICS)}")
    return METRICS[metric]


@dataclass
class Entry:
    """One row of a setting's table: a method with its resolved variant, over its finished runs."""

    setting: Setting
    method: str
    args: dict  # hyperparameters away from the method's defaults
    recipe_diff: dict  # recipe keys that tell this row from the method's other rows in the setting
    model: str
    recipe: dict  # the full recipe of its first run (flattened config keys)
    run_ids: list[int]
    seeds: list[int]
    values: dict[str, float | None]  # ACCURACIES, percent
    card: dict | None
    device_hours: float | None
    images_per_second: float | None
    hosts: Counter
    devices: Counter
    guards: Counter = field(default_factory=Counter)  # guard name -> runs it flagged
    paper: dict[str, float] = field(default_factory=dict)  # PAPER column -> percent
    paper_source: str | None = None
    rank: int | None = None
    classwise: dict = field(default_factory=dict)  # see build_classwise

    @property
    def variant(self) -> str:
        parts = {**self.args, **self.recipe_diff}
        return ", ".join(f"{k.removeprefix('method_args.')}={fmt_setting(v)}" for k, v in parts.items())

    @property
    def label(self) -> str:
        return f"{self.method} [{self.variant}]" if self.variant else self.method

    @property
    def recipe_text(self) -> str:
        r = self.recipe
        parts = [f"{r['epochs']} epochs" if "epochs" in r else "", f"batch {r['batch_size']}" if "batch_size" in r
                 else "", f"lr {fmt_setting(r['lr'])}" if "lr" in r else "", str(r.get("augment", "")) or ""]
        return " · ".join(p for p in parts if p and p != "none")

    @property
    def flagged(self) -> bool:
        return bool(self.guards)

    def value(self, metric: str) -> float | None:
        if metric in self.values:
            v = self.values[metric]
        elif metric == "seeds":
            v = float(len(self.seeds))
        elif metric in ("device_hours", "images_per_second"):
            v = getattr(self, metric)
        else:
            v = self.paper.get(metric)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


@dataclass
class Board:
    """A setting's ranked table."""

    setting: Setting
    entries: list[Entry]

    def has(self, kind: str) -> bool:
        """Whether any row has ``kind`` (``aa``, ``worst``, ``paper``) numbers."""
        if kind == "paper":
            return any(e.paper for e in self.entries)
        return any(e.value(f"{kind}_overall") is not None for e in self.entries)

    @property
    def paper_source(self) -> str | None:
        return next((e.paper_source for e in self.entries if e.paper_source), None)


@dataclass
class OverallEntry:
    label: str
    method: str
    card: dict | None
    ranks: dict[Setting, int]
    rank: int | None = None

    @property
    def mean_rank(self) -> float:
        return sum(self.ranks.values()) / len(self.ranks)

    @property
    def n_settings(self) -> int:
        return len(self.ranks)


@dataclass
class Leaderboard:
    metric: Metric
    boards: list[Board]
    overall: list[OverallEntry]
    data: LeaderboardData

    def entries(self) -> list[Entry]:
        return [e for b in self.boards for e in b.entries]


def make_leaderboard(url: str, suite: str | None = None, metric: str = DEFAULT_METRIC,
                     reference: Reference | None = None) -> Leaderboard:
    """Load the database (:func:`~bench.analysis.leaderboard_data.load_leaderboard_data`) and rank it."""
    check_metric(metric)
    return build_leaderboard(load_leaderboard_data(url, suite), metric, reference)


def build_leaderboard(data: LeaderboardData, metric: str = DEFAULT_METRIC,
                      reference: Reference | None = None) -> Leaderboard:
    chosen = check_metric(metric)
    runs = data.runs
    args_key = [json.dumps(a, sort_keys=True, default=str) for a in runs["variant_args"].tolist()]
    recipe_key = [json.dumps(r, sort_keys=True, default=str) for r in runs["recipe"].tolist()]
    keys = list(zip(runs["setting"].tolist(), runs["method"].tolist(), args_key, recipe_key))
    members: dict[tuple, list[int]] = {}
    for run_id, key in zip(runs.index.tolist(), keys):
        members.setdefault(key, []).append(run_id)
    at = {run_id: i for i, run_id in enumerate(runs.index.tolist())}  # positions: no pandas lookup per row
    seed, model = runs["seed"].to_numpy(), runs["model"].tolist()
    wall_a = pd.to_numeric(runs["wall_seconds"], errors="coerce").to_numpy(dtype=float)
    speed_a = pd.to_numeric(runs["images_per_second"], errors="coerce").to_numpy(dtype=float)
    host, device = runs["host"].tolist(), runs["device"].tolist()
    args_of, recipe_of = runs["variant_args"].tolist(), runs["recipe"].tolist()
    # Recipes that differ between rows of one method (with the same hyperparameters) in one setting.
    recipes: dict[tuple, list[dict]] = {}
    for key, ids in members.items():
        recipes.setdefault(key[:3], []).append(recipe_of[at[ids[0]]])
    flagged = data.guards[data.guards["flagged"]] if len(data.guards) else data.guards
    flags_by_run: dict[int, list[str]] = {}
    for run_id, name in zip(flagged["run_id"].tolist(), flagged["name"].tolist()):
        flags_by_run.setdefault(int(run_id), []).append(str(name))

    number = {key: i for i, key in enumerate(members)}
    means = runs[ACCURACIES].groupby(pd.Series([number[k] for k in keys], index=runs.index)).mean()
    rows = dict(zip(means.index.tolist(), means.to_dict("records")))
    boards: dict[Setting, list[Entry]] = {}
    for key, ids in members.items():
        setting, method = key[0], key[1]
        idx = [at[i] for i in ids]
        first = idx[0]
        others = recipes[key[:3]]
        varying = sorted({k for r in others for k in r if any(not same(r.get(k), o.get(k)) for o in others)})
        wall, speed = wall_a[idx], speed_a[idx]
        row = rows[number[key]]
        entry = Entry(
            setting=setting, method=method, args=dict(args_of[first]),
            recipe_diff={k: recipe_of[first].get(k) for k in varying}, model=str(model[first]),
            recipe=dict(recipe_of[first]), run_ids=list(ids), seeds=sorted({int(seed[i]) for i in idx}),
            values={c: (None if math.isnan(row[c]) else float(row[c])) for c in ACCURACIES},
            card=method_card(method),
            device_hours=float(np.nansum(wall)) / 3600.0 if not np.isnan(wall).all() else None,
            images_per_second=float(np.nanmean(speed)) if not np.isnan(speed).all() else None,
            hosts=Counter(host[i] for i in idx if isinstance(host[i], str)),
            devices=Counter(device[i] for i in idx if isinstance(device[i], str)),
            guards=Counter(name for i in ids for name in flags_by_run.get(i, ())),
        )
        if reference is not None and setting.adversarial and not entry.args and not entry.recipe_diff:
            published = reference.get(setting.dataset, setting.imbalance, method)
            if published is not None:
                entry.paper = {PAPER[k]: v[0] for k, v in published.values.items() if k in PAPER}
                entry.paper_source = published.source
        boards.setdefault(setting, []).append(entry)
    ordered = [Board(s, rank(boards[s], chosen.name)) for s in sorted(boards, key=_setting_sort)]
    board = Leaderboard(metric=chosen, boards=ordered, overall=overall_ranking(ordered), data=data)
    build_classwise(board)
    return board


def rank(entries: list[Entry], metric: str) -> list[Entry]:
    """``entries`` sorted by ``metric`` (ties: its tie-break column), with :attr:`Entry.rank` set; rows equal in
    both share the better rank; rows without a value come last, unranked, by label."""
    chosen = METRICS[metric]
    sign = -1.0 if chosen.higher else 1.0
    tie_sign = -1.0 if METRICS[chosen.tiebreak].higher else 1.0

    def key(e: Entry) -> tuple:
        tie = e.value(chosen.tiebreak)
        return (sign * round(e.value(metric), 6), math.inf if tie is None else tie_sign * round(tie, 6))

    valued = sorted((e for e in entries if e.value(metric) is not None), key=lambda e: (key(e), e.label))
    rest = sorted((e for e in entries if e.value(metric) is None), key=lambda e: e.label)
    previous = None
    for position, entry in enumerate(valued, start=1):
        k = key(entry)
        entry.rank = previous[1] if previous is not None and previous[0] == k else position
        previous = (k, entry.rank)
    for entry in rest:
        entry.rank = None
    return valued + rest


def overall_ranking(boards: list[Board]) -> list[OverallEntry]:
    """Each row label's ranks over the settings it was ranked in; sorted by mean rank, then by more settings."""
    by_label: dict[str, OverallEntry] = {}
    for board in boards:
        for entry in board.entries:
            if entry.rank is None:
                continue
            item = by_label.setdefault(entry.label, OverallEntry(entry.label, entry.method, entry.card, {}))
            item.ranks[board.setting] = entry.rank
    items = sorted(by_label.values(), key=lambda o: (round(o.mean_rank, 9), -o.n_settings, o.label))
    previous = None
    for position, item in enumerate(items, start=1):
        k = (round(item.mean_rank, 9), item.n_settings)
        item.rank = previous[1] if previous is not None and previous[0] == k else position
        previous = (k, item.rank)
    return items


def build_classwise(board: Leaderboard) -> None:
    """Per row, mean accuracy (%) per class over its runs — clean, first attack, AutoAttack, worst case — with the
    class names and the under-represented classes (:func:`bench.analysis.metrics.class_groups` of its first run):
    ``entry.classwise = {"classes": [...], "under": [...], "series": [{"label", "values"}]}``."""
    data = board.data
    entries = board.entries()
    if not entries or data.class_rows.empty:
        return
    index_of = {run_id: i for i, e in enumerate(entries) for run_id in e.run_ids}
    rows = data.class_rows
    run_ids = rows["run_id"].to_numpy(dtype=np.int64)
    orders = rows["attack_order"].to_numpy(dtype=np.int64)
    entry_of = pd.Series(index_of).reindex(run_ids).to_numpy()
    aa = data.runs["aa_order"].reindex(run_ids).fillna(-1).to_numpy(dtype=np.int64)
    series = np.select([orders == 0, orders == 1, orders == aa, orders == WORST_ORDER], [0, 1, 2, 3], -1)
    frame = pd.DataFrame({"entry": entry_of, "series": series, "class_index": rows["class_index"].to_numpy(),
                          "acc": rows["correct"].to_numpy() / np.maximum(rows["n_test"].to_numpy(), 1) * 100.0})
    frame = frame[(frame["series"] >= 0) & frame["entry"].notna()]
    means = frame.groupby(["entry", "series", "class_index"])["acc"].mean()

    firsts = {e.run_ids[0] for e in entries}
    clean = rows[(rows["attack_order"] == 0) & rows["run_id"].isin(firsts)]
    groups = clean.assign(group=class_groups(clean))
    under: dict[int, list[int]] = {}
    for run_id, klass, group in zip(groups["run_id"].tolist(), groups["class_index"].tolist(), groups["group"]):
        if group == "under":
            under.setdefault(int(run_id), []).append(int(klass))
    present = set(zip(means.index.get_level_values(0).tolist(), means.index.get_level_values(1).tolist()))
    for i, entry in enumerate(entries):
        labels = ["clean", entry.setting.attack.split(" ε ")[0], "AutoAttack", "worst case"]
        names = _class_names(data.runs.at[entry.run_ids[0], "class_names_json"])
        shown = []
        n = 0
        for s, label in enumerate(labels):
            if (float(i), s) not in present:
                continue
            values = means.loc[(float(i), s)]
            n = max(n, int(values.index.max()) + 1)
            shown.append({"label": label, "values": values.reindex(range(n)).tolist()})
        for item in shown:
            item["values"] = (item["values"] + [math.nan] * n)[:n]
        classes = names if names and len(names) >= n else [str(c) for c in range(n)]
        entry.classwise = {"classes": classes[:n], "under": sorted(under.get(entry.run_ids[0], [])),
                           "series": shown}


def _class_names(text) -> list[str] | None:
    try:
        names = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def _setting_sort(setting: Setting) -> tuple:
    kind, _, ratio = setting.imbalance.rpartition("-")
    try:
        value = float(ratio)
    except ValueError:
        kind, value = setting.imbalance, math.inf
    return (setting.dataset, kind, value, setting.imbalance, not setting.adversarial, setting.train, setting.attack)
