"""What the leaderboard is computed from: finished runs with their setting and variant, and per run × attack the
group accuracies — clean, every stored attack, and the per-sample worst case over all of them.

Reading goes through :mod:`bench.results.read` only, along the fast paths the report uses (run rows once, class
counts as plain integers, packed per-sample flags a chunk of runs at a time), so 10,000 runs load in about a
second. The worst case follows :func:`bench.guards.worst_case` — a test sample counts only if it is correct clean
and under every stored attack — computed on the packed bits (one AND per attack, one unpack per run) so that
torch is never imported; a test checks it against :func:`bench.guards.worst_case_frame`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

import methods
from bench.accel_keys import ACCEL_DEFAULTS
from bench.analysis.metrics import class_groups, group_accuracies
from bench.catalog import AttackConfig
from bench.cell import Status
from bench.errors import BenchError, unknown
from bench.results import read

WORST_ORDER = 1_000_000  # the attack order the worst case is filed under (after every stored attack)
WORST_CASE = "worst-case"  # its attack label, as bench.guards.worst_case_frame names it
# The accuracies of a run, each overall and on the under-represented classes: (prefix, what).
KINDS = {"clean": "clean (standard) accuracy", "robust": "robust accuracy under the first evaluation attack",
         "aa": "robust accuracy under AutoAttack", "worst": "per-sample worst case over every attack"}
# Config keys that are a row's setting, identity or seed, or only how a result was computed: never its recipe.
NOT_RECIPE = frozenset({"suite", "seed", "dataset", "imbalance", "method", "method_args", "method_params",
                        "train_attack", "eval_attacks", "features", "guards", "adversarial", "eval_batch_size",
                        *ACCEL_DEFAULTS})


@dataclass(frozen=True)
class Setting:
    """Dataset × imbalance × threat model (training attack, first evaluation attack)."""

    dataset: str
    imbalance: str
    train: str  # "pgd ε 8/255" or "natural"
    attack: str  # "pgd-20 ε 8/255", or "clean only"

    @property
    def title(self) -> str:
        return f"{self.dataset} · {self.imbalance} · train {self.train} · eval {self.attack}"

    @property
    def adversarial(self) -> bool:
        return self.train != "natural"

    @property
    def slug(self) -> str:
        return slug(self.dataset, self.imbalance, self.train, self.attack)


def slug(*parts: str) -> str:
    """A file-name-safe, collision-free name: readable letters and digits, then a short hash of the parts."""
    text = "-".join(parts)
    readable = "".join(c if c.isascii() and c.isalnum() else "-" for c in text.lower())
    readable = "-".join(p for p in readable.split("-") if p)[:60]
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


@dataclass
class LeaderboardData:
    """Finished runs and their accuracies.

    ``runs``: one row per finished run, indexed by run id: the ``runs`` table's columns plus ``config`` (dict),
    ``setting`` (:class:`Setting`), ``variant_args`` (hyperparameters away from the method's defaults),
    ``recipe`` (the other config keys, flattened) and the per-run accuracies in percent (``clean_overall``,
    ``clean_under``, ``robust_*``, ``aa_*``, ``worst_*``; NaN where not evaluated). ``class_rows``: per run ×
    attack order × class the counts (``run_id, attack_order, attack, class_index, n_train, n_test, correct``), the
    worst case included (``attack_order`` :data:`WORST_ORDER`). ``guards``: :func:`bench.results.read.load_guards`.
    """

    url: str
    suites: list[str]
    runs: pd.DataFrame
    class_rows: pd.DataFrame
    accuracies: pd.DataFrame  # group_accuracies: run_id, attack_order, overall, well, under
    guards: pd.DataFrame


def load_leaderboard_data(url: str, suite: str | None = None) -> LeaderboardData:
    """Everything the leaderboard needs; one-line errors for an empty, foreign or older database or unknown suite."""
    suites = read.suite_names(url)
    if not suites:
        raise BenchError(f"database {url} holds no runs yet; run `bench run SUITE.toml` first")
    if suite is not None and suite not in suites:
        raise unknown("suite", suite, suites, where=f"database {url}")
    runs = read.load_runs(url, suite)
    runs = runs[runs["status"] == Status.DONE]
    if runs.empty:
        raise BenchError(f"database {url} holds no finished runs{f' of suite {suite!r}' if suite else ''} yet")
    runs = runs.set_index("id", drop=False).rename_axis(None).sort_index()
    runs["adversarial"] = runs["adversarial"].astype(bool)
    runs["config"] = [_json(text, {}) for text in runs["config_json"].tolist()]

    counts = pd.DataFrame(read.class_count_rows(url, suite), columns=read.CLASS_COLUMNS)
    attacks = read.run_attacks(url, suite)
    counts = counts.merge(attacks[["run_id", "attack_order", "attack"]], on=["run_id", "attack_order"], how="left")
    worst = worst_case_rows(read.iter_flag_bits(url, suite), counts)
    class_rows = pd.concat([counts, worst], ignore_index=True) if len(worst) else counts
    class_rows = class_rows[class_rows["run_id"].isin(runs.index)]
    accuracies = run_accuracies(class_rows)

    runs["setting"] = [_setting(rec, attacks_of) for rec, attacks_of in
                       zip(runs[["dataset", "imbalance", "adversarial", "config"]].itertuples(index=False),
                           _first_attack_labels(attacks, runs.index))]
    runs["variant_args"] = [variant_args(m, c) for m, c in zip(runs["method"].tolist(), runs["config"].tolist())]
    runs["recipe"] = [recipe(c) for c in runs["config"].tolist()]
    aa_order = autoattack_orders(attacks, runs["config"])
    per_run = per_run_accuracies(accuracies, aa_order)
    runs = runs.join(per_run, how="left")
    runs["aa_order"] = aa_order.reindex(runs.index)
    guards = read.load_guards(url, suite)
    return LeaderboardData(url=url, suites=suites, runs=runs, class_rows=class_rows, accuracies=accuracies,
                           guards=guards)


# -- the worst case -------------------------------------------------------------------------------------------
def worst_case_rows(chunks: Iterable[dict[int, dict]], counts: pd.DataFrame) -> pd.DataFrame:
    """Per run × class the worst case over every stored attack (:data:`WORST_ORDER`), like ``counts``' rows.

    ``chunks`` is :func:`bench.results.read.iter_flag_bits`; ``counts`` the class counts (order 0 gives each
    class's training and test counts). A run with flags of fewer than two attacks (clean and one) is left out,
    as :func:`bench.guards.worst_case_frame` leaves it out.
    """
    clean = counts[counts["attack_order"] == 0].sort_values(["run_id", "class_index"], kind="stable")
    run_ids, starts, sizes = np.unique(clean["run_id"].to_numpy(), return_index=True, return_counts=True)
    where = {int(r): (int(a), int(n)) for r, a, n in zip(run_ids, starts, sizes)}
    cls, n_train, n_test = (clean[c].to_numpy() for c in ("class_index", "n_train", "n_test"))
    out_run, out_class, out_train, out_test, out_correct = [], [], [], [], []
    for chunk in chunks:
        # Runs that share a test set (the same labels in the same order) are counted together: their worst-case
        # bits unpacked into one [runs, n] matrix, times the labels' one-hot [n, classes].
        groups: list[tuple[np.ndarray, list[int], list[np.ndarray]]] = []
        candidates: dict[tuple, list[int]] = {}  # a cheap key (size, first and last labels) -> groups to compare
        for run_id, entry in chunk.items():
            if run_id not in where or len(entry["bits"]) < 2:
                continue
            bits = list(entry["bits"].values())
            worst = bits[0].copy()
            for more in bits[1:]:
                np.bitwise_and(worst, more, out=worst)
            labels = entry["labels"]
            key = (labels.size, labels[:16].tobytes(), labels[-16:].tobytes())
            found = next((g for g in candidates.get(key, ()) if np.array_equal(groups[g][0], labels)), None)
            if found is None:
                found = len(groups)
                groups.append((labels, [], []))
                candidates.setdefault(key, []).append(found)
            groups[found][1].append(run_id)
            groups[found][2].append(worst)
        for labels, members, vectors in groups:
            labels = labels.astype(np.int64)
            size = max(int(labels.max(initial=-1)) + 1, *(int(cls[slice(*_span(where[r]))].max()) + 1 for r in members))
            correct = _class_counts(np.stack(vectors), labels, size)
            for row, run_id in enumerate(members):
                span = slice(*_span(where[run_id]))
                out_run.append(np.full(span.stop - span.start, run_id, dtype=np.int64))
                out_class.append(cls[span])
                out_train.append(n_train[span])
                out_test.append(n_test[span])
                out_correct.append(correct[row, cls[span]])
    if not out_run:
        return pd.DataFrame(columns=[*counts.columns])
    cat = np.concatenate
    return pd.DataFrame({"run_id": cat(out_run), "attack_order": WORST_ORDER, "class_index": cat(out_class),
                         "n_train": cat(out_train), "n_test": cat(out_test), "correct": cat(out_correct),
                         "attack": WORST_CASE})


def _class_counts(bits: np.ndarray, labels: np.ndarray, size: int) -> np.ndarray:
    """Per row of packed flags ``bits`` [runs, ceil(n / 8)] (:func:`numpy.packbits` order) the number of set flags
    of each class of ``labels`` [n]: ``[runs, size]``. Counted on the packed bits — AND with each class's packed
    mask, then a population count over 64-bit words — so nothing is unpacked."""
    n = labels.size
    if not hasattr(np, "bitwise_count"):  # numpy < 2.0
        flags = np.unpackbits(bits, axis=1, count=n).astype(bool)
        return np.stack([np.bincount(labels[row], minlength=size)[:size] for row in flags])
    words = -(-bits.shape[1] // 8)
    padded = np.zeros((bits.shape[0], words * 8), dtype=np.uint8)
    padded[:, : bits.shape[1]] = bits
    masks = np.zeros((size, words * 8), dtype=np.uint8)
    masks[:, : bits.shape[1]] = np.packbits(labels[None, :] == np.arange(size)[:, None], axis=1)
    flags64, masks64 = padded.view(np.uint64), masks.view(np.uint64)
    out = np.empty((bits.shape[0], size), dtype=np.int64)
    for c in range(size):
        out[:, c] = np.bitwise_count(flags64 & masks64[c]).sum(axis=1, dtype=np.int64)
    return out


def _span(start_size: tuple[int, int]) -> tuple[int, int]:
    start, size = start_size
    return start, start + size


# -- accuracies -------------------------------------------------------------------------------------------------
def run_accuracies(class_rows: pd.DataFrame) -> pd.DataFrame:
    """Per run × attack order ``overall``, ``well``, ``under`` in [0, 1], by :func:`group_accuracies`."""
    columns = ["run_id", "attack_order", "overall", "well", "under"]
    if class_rows.empty:
        return pd.DataFrame(columns=columns)
    frame = class_rows[["run_id", "attack_order", "class_index", "n_train", "n_test", "correct"]].assign(attack="")
    return group_accuracies(frame)[columns].astype({"run_id": "int64", "attack_order": "int64"})


def autoattack_orders(attacks: pd.DataFrame, configs: pd.Series) -> pd.Series:
    """Per run the attack order of its first AutoAttack (kind from the stored attack table, else its config)."""
    kinds = attacks["kind"].tolist()
    config_of = configs.to_dict()
    orders = attacks["attack_order"].tolist()
    for i, (run_id, label, kind) in enumerate(zip(attacks["run_id"].tolist(), attacks["attack"].tolist(), kinds)):
        if kind is None and orders[i] > 0 and run_id in config_of:
            tables = config_of[run_id].get("eval_attacks", [])
            kinds[i] = _config_kinds(json.dumps(tables, sort_keys=True)).get(label)
    aa = attacks[[k == "autoattack" for k in kinds]]
    return aa.groupby("run_id")["attack_order"].min()


@functools.lru_cache(maxsize=256)
def _config_kinds(tables: str) -> dict[str, str]:
    out = {}
    for table in json.loads(tables):
        try:
            out[AttackConfig.from_table(table).label] = table["kind"]
        except (KeyError, TypeError, ValueError):
            continue
    return out


def per_run_accuracies(accuracies: pd.DataFrame, aa_order: pd.Series) -> pd.DataFrame:
    """One row per run: ``{clean,robust,aa,worst}_{overall,under}`` in percent (NaN where not evaluated)."""
    acc = accuracies.set_index(["run_id", "attack_order"])[["overall", "under"]].astype(float) * 100.0
    out = pd.DataFrame(index=pd.Index(accuracies["run_id"].unique(), dtype="int64"))
    orders = {"clean": 0, "robust": 1, "worst": WORST_ORDER}
    for kind, order in orders.items():
        part = acc.xs(order, level="attack_order") if order in acc.index.get_level_values(1) else None
        for group in ("overall", "under"):
            out[f"{kind}_{group}"] = np.nan if part is None else part[group].reindex(out.index)
    pairs = pd.MultiIndex.from_arrays([aa_order.index.astype("int64"), aa_order.to_numpy(dtype="int64")])
    aa = acc.reindex(pairs)
    aa.index = aa.index.get_level_values(0)
    for group in ("overall", "under"):
        out[f"aa_{group}"] = aa[group].reindex(out.index)
    return out


def under_classes(class_rows: pd.DataFrame, run_id: int) -> list[int]:
    """The under-represented class indices of one run (:func:`bench.analysis.metrics.class_groups`)."""
    rows = class_rows[(class_rows["run_id"] == run_id) & (class_rows["attack_order"] == 0)]
    groups = class_groups(rows)
    return sorted(int(c) for c, g in zip(rows["class_index"], groups) if g == "under")


# -- settings and variants --------------------------------------------------------------------------------------
def fmt_eps(eps) -> str:
    """``8/255`` for a multiple of 1/255 below 1, else the number (``0.1``)."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        return str(eps)
    steps = value * 255
    if 0 < value < 1 and abs(steps - round(steps)) < 1e-6:
        return f"{round(steps)}/255"
    return format(value, "g")


def _first_attack_labels(attacks: pd.DataFrame, run_ids: pd.Index) -> list[str | None]:
    first = attacks[attacks["attack_order"] == 1].set_index("run_id")["attack"]
    first = first[~first.index.duplicated()]
    return [first.get(r) for r in run_ids.tolist()]


def _setting(rec, stored_label: str | None) -> Setting:
    config = rec.config
    train = config.get("train_attack")
    if not rec.adversarial or not isinstance(train, dict):
        train_text = "natural"
    else:
        train_text = f"{train.get('kind', '?')} ε {fmt_eps(train.get('eps'))}"
    tables = config.get("eval_attacks") or []
    attack_text = "clean only"
    if tables:
        try:
            spec = AttackConfig.from_table(tables[0])
            attack_text = f"{spec.label} ε {fmt_eps(spec.eps)}"
        except (KeyError, TypeError, ValueError):
            attack_text = str(stored_label or "?")
    elif stored_label:
        attack_text = str(stored_label)
    return Setting(str(rec.dataset), str(rec.imbalance), train_text, attack_text)


@functools.cache
def method_defaults(method: str) -> dict:
    """A registered method's hyperparameter defaults (empty for a method this bench does not know)."""
    if method not in methods.METHODS:
        return {}
    return {f.name: f.default for f in dataclasses.fields(methods.METHODS.get(method))}


def method_card(method: str) -> dict | None:
    """The method's card (paper, venue, year, repository), or ``None`` for a method without one."""
    if method not in methods.METHODS:
        return None
    card = getattr(methods.METHODS.get(method), "card", None)
    return dict(card) if isinstance(card, dict) else None


def variant_args(method: str, config: dict) -> dict:
    """The method's hyperparameters set away from its registered defaults (all of them for an unknown method)."""
    defaults = method_defaults(method)
    args = config.get("method_args") or {}
    return {k: args[k] for k in sorted(args) if k not in defaults or not same(args[k], defaults[k])}


def recipe(config: dict) -> dict:
    """The config keys that make the training recipe (model, epochs, learning rate, …), flattened."""
    return _flatten({k: v for k, v in config.items() if k not in NOT_RECIPE})


def _flatten(config: dict, prefix: str = "") -> dict:
    out: dict = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, (list, tuple)):
            out[f"{prefix}{key}"] = json.dumps(value, sort_keys=True)
        else:
            out[f"{prefix}{key}"] = value
    return out


def same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return a == b


def _json(text, default):
    try:
        return json.loads(text) if isinstance(text, str) else default
    except ValueError:
        return default
