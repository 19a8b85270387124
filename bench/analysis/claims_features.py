"""The feature claims C3 (§3, Fig. 3) and C6 (§5, Fig. 4): separability of stored penultimate features.

**Separability** is the class-balanced Fisher ratio of a run's dump of train points, clean
(:data:`FEATURE_DUMP`; ``features = N`` in a suite keeps N points):

    J = B / W,   B = (1/C') Σ_c ‖μ_c − μ̄‖²,   W = (1/C') Σ_c (1/n_c) Σ_{i ∈ c} ‖x_i − μ_c‖²,

with μ_c the mean feature of class c, μ̄ = (1/C') Σ_c μ_c the mean of the class means, over the C' classes with at
least :data:`MIN_CLASS_POINTS` points in the dump. B is the spread of the class centres, W the mean squared
distance of a point to its own centre; both are traces of scatter matrices, so J is invariant to rotating,
translating and rescaling the feature space (natural and adversarial features differ in scale) and every class
weighs the same however few points it has. Larger is more separable; the claims compare ``ln J``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from bench.analysis.claims_core import (
    SPECS,
    SRAT_VARIANTS,
    ClaimResult,
    at_defaults,
    claim_from_pairs,
    group_label,
    pair_runs,
    recipe_key,
    _missing,
    _pairs_frame,
)

FEATURE_DUMP = ("train", "clean")  # (split, kind) of the dump the claims read: the paper's Fig. 3 shows train points
MIN_CLASS_POINTS = 2  # a class needs two points for a within-class spread


def fisher_ratio(labels: Sequence[int], vectors: np.ndarray) -> float:
    """The class-balanced Fisher ratio J = B / W of the module docstring.

    ``labels``: [n] class indices; ``vectors``: [n, dim]. NaN when fewer than two classes have
    :data:`MIN_CLASS_POINTS` points; ``inf`` when every class collapses to its centre (W = 0 < B).
    """
    labels = np.asarray(labels)
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise ValueError(f"fisher_ratio needs labels [n] and vectors [n, dim], got {labels.shape} and {x.shape}")
    classes = [c for c in np.unique(labels) if (labels == c).sum() >= MIN_CLASS_POINTS]
    if len(classes) < 2:
        return math.nan
    centres = np.stack([x[labels == c].mean(axis=0) for c in classes])
    between = float(((centres - centres.mean(axis=0)) ** 2).sum(axis=1).mean())
    within = float(np.mean([((x[labels == c] - centres[i]) ** 2).sum(axis=1).mean() for i, c in enumerate(classes)]))
    if within == 0:
        return math.inf if between > 0 else math.nan
    return between / within


def _log_separability(pool: pd.DataFrame, dumps: Mapping[int, tuple[np.ndarray, np.ndarray]]) -> dict[int, float]:
    return {int(i): math.log(j) if j > 0 else -math.inf
            for i in pool["run_id"] if int(i) in dumps
            for j in [fisher_ratio(*dumps[int(i)])] if not math.isnan(j)}


def _finite_pairs(merged: pd.DataFrame, ln_j: Mapping[int, float], what: str, notes: list[str]) -> pd.DataFrame:
    """Pairs whose two runs both have a finite ln J (the others are named in ``notes``)."""
    a = merged["run_id_a"].map(lambda i: ln_j.get(int(i), math.nan))
    b = merged["run_id_b"].map(lambda i: ln_j.get(int(i), math.nan))
    ok = np.isfinite(a.to_numpy(float)) & np.isfinite(b.to_numpy(float))
    if (~ok).any():
        notes.append(f"{what}: {int((~ok).sum())} pair(s) without a usable separability (fewer than two classes "
                     f"with {MIN_CLASS_POINTS} dumped points, or a degenerate dump) were not used")
    return merged.assign(ln_a=a, ln_b=b)[ok]


def separability_claim(runs: pd.DataFrame, loader: Callable) -> ClaimResult:
    """C3: ln J of naturally minus adversarially trained features, paired by recipe and seed."""
    spec, notes = SPECS["C3"], []
    merged = pd.DataFrame()
    if not runs.empty:
        dumps = loader(list(runs["run_id"]))
        pool = runs[runs["run_id"].isin(list(dumps))].copy()
        if not pool.empty:
            pool["key"] = [recipe_key(c, ("train_attack",)) for c in pool["config"]]
            merged = pair_runs(pool[~pool["adversarial"]], pool[pool["adversarial"]], "C3", "natural",
                               "adversarial", notes)
            merged = _finite_pairs(merged, _log_separability(pool, dumps), "C3", notes) if not merged.empty else merged
    if merged.empty:
        return claim_from_pairs(spec, pd.DataFrame(), notes, _missing(
            spec, "no naturally and adversarially trained runs of one recipe and seed kept feature dumps "
                  "(features > 0)"))
    groups = [group_label(r) for _, r in merged.iterrows()]
    return claim_from_pairs(spec, _pairs_frame(merged, merged["ln_a"], merged["ln_b"], groups), notes)


def srat_separability_claim(runs: pd.DataFrame, loader: Callable) -> ClaimResult:
    """C6: ln J of SRAT minus its DRCB counterpart's features (adversarial training, defaults), every variant."""
    spec, notes = SPECS["C6"], []
    variant = {m: srat for srat, drcb in SRAT_VARIANTS for m in (srat, drcb)}
    merged = pd.DataFrame()
    if not runs.empty:
        pool = runs[runs["method"].isin(list(variant)) & runs["adversarial"]]
        pool = pool[np.array([at_defaults(c) for c in pool["config"]], dtype=bool)]
        dumps = loader(list(pool["run_id"])) if not pool.empty else {}
        pool = pool[pool["run_id"].isin(list(dumps))].copy()
        if not pool.empty:
            pool["key"] = [recipe_key(c, ("method", "method_args", "method_params")) + variant[m]
                           for c, m in zip(pool["config"], pool["method"])]
            srat = pool["method"].str.startswith("srat-")
            merged = pair_runs(pool[srat], pool[~srat], "C6", "SRAT", "DRCB", notes)
            merged = _finite_pairs(merged, _log_separability(pool, dumps), "C6", notes) if not merged.empty else merged
    if merged.empty:
        return claim_from_pairs(spec, pd.DataFrame(), notes, _missing(
            spec, "no SRAT and DRCB runs (at their defaults) of one recipe and seed kept feature dumps (features > 0)"))
    groups = [f"{r['method_a']} vs {r['method_b']} · {r['dataset_a']} {r['imbalance_a']} [{r['suite_a']}]"
              for _, r in merged.iterrows()]
    return claim_from_pairs(spec, _pairs_frame(merged, merged["ln_a"], merged["ln_b"], groups), notes)
