"""The paper's claims, checked from the results database (``bench claims``; definitions in docs/claims.md).

Each claim is a number the paper's argument rests on, written as a paired effect **oriented so that the paper
claims it is positive**, computed from finished runs (or the stored theory grid) and given a verdict:

=====  ==============================  ===========================================================================
C1     §2.1, Fig. 1                    gap(adversarial) − gap(natural), gap = well − under standard accuracy (pp)
C2     §2.2, Fig. 2                    cost(adversarial) − cost(natural), cost = well-class standard accuracy lost
                                       per doubling of the under-represented weight (pp per doubling)
C3     §3, Fig. 3                      ln J(natural) − ln J(adversarial), J = Fisher ratio of the train features
C4-*   §5, Tables 1-10                 SRAT − DRCB robust under-represented accuracy (pp), per variant
C5     §3, Lemma 3.1                   share of theory grid points where the closed form agrees (deterministic)
C6     §5, Fig. 4                      ln J(SRAT) − ln J(DRCB) of the train features
=====  ==============================  ===========================================================================

Layout: :mod:`bench.analysis.claims_core` holds the specs, the result types, the verdict rule, Holm's correction
across the claims and the pairing helpers; this module the accuracy claims (C1, C2, C4) and the entry points;
:mod:`bench.analysis.claims_features` the feature claims (C3, C6, the Fisher ratio);
:mod:`bench.analysis.claims_theory` the theory claim (C5); :mod:`bench.report.claims_render` the formats.
:func:`claims_section` is what the CLI and the report call; :func:`evaluate_claims` is the pure core (tidy results
in, claims out).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from bench.analysis.claims_core import (
    ALPHA,
    CLAIM_IDS,
    CONFIDENCE,
    MIN_PAIRS,
    SPECS,
    SRAT_VARIANTS,
    VERDICTS,
    ClaimResult,
    Spec,
    ClaimTest,
    at_defaults,
    schedule_of,
    claim_from_pairs,
    decide,
    dedupe,
    finalize,
    group_label,
    holm,
    pair_runs,
    paired_test,
    recipe_key,
    run_table,
    _missing,
    _pairs_frame,
)
from bench.analysis.claims_features import FEATURE_DUMP, fisher_ratio, separability_claim, srat_separability_claim
from bench.analysis.claims_theory import LEMMA_SHARE, lemma_claim

__all__ = [
    "ALPHA", "CLAIM_IDS", "CONFIDENCE", "FEATURE_DUMP", "LEMMA_SHARE", "MIN_PAIRS", "SPECS", "SRAT_VARIANTS",
    "VERDICTS", "ClaimResult", "Spec", "ClaimTest", "claims_section", "decide", "evaluate_claims", "fisher_ratio",
    "gap_claim", "holm", "lemma_claim", "paired_test", "reweight_claim", "run_table", "separability_claim",
    "srat_claim", "srat_separability_claim", "weight_slope",
]


# -- C1, C2, C4 -------------------------------------------------------------------------------------------------------


def gap_claim(runs: pd.DataFrame) -> ClaimResult:
    """C1: the well − under standard-accuracy gap, adversarial minus natural training, paired."""
    spec, notes = SPECS["C1"], []
    pool = runs[np.array([at_defaults(c) for c in runs["config"]], dtype=bool)].copy() if not runs.empty else runs
    if not pool.empty:
        pool["key"] = [recipe_key(c, ("train_attack",)) for c in pool["config"]]
    merged = pair_runs(pool[pool["adversarial"]], pool[~pool["adversarial"]], "C1", "adversarial", "natural",
                       notes) if not pool.empty else pd.DataFrame()
    if merged.empty:
        return claim_from_pairs(spec, pd.DataFrame(), notes, _missing(
            spec, "no method at its defaults was trained both naturally (train_attack = \"none\") and adversarially "
                  "at one dataset, imbalance and seed"))
    gap_a = merged["std_well_a"] - merged["std_under_a"]
    gap_b = merged["std_well_b"] - merged["std_under_b"]
    groups = [group_label(r) for _, r in merged.iterrows()]
    return claim_from_pairs(spec, _pairs_frame(merged, gap_a, gap_b, groups), notes)


def weight_slope(weights: Sequence[float], accuracy: Sequence[float]) -> float:
    """OLS slope of accuracy on log2(weight): percentage points per doubling of the weight."""
    x = np.log2(np.asarray(weights, dtype=float))
    y = np.asarray(accuracy, dtype=float)
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc**2).sum())


def _under_weight(config: Mapping) -> float | None:
    value = (config.get("method_args") or {}).get("under_weight")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value > 0 and math.isfinite(value) else None


def reweight_claim(runs: pd.DataFrame) -> ClaimResult:
    """C2: how much well-represented standard accuracy each doubling of the under weight costs, adv − nat."""
    spec, notes = SPECS["C2"], []
    weights = [_under_weight(c) for c in runs["config"]] if not runs.empty else []
    pool = runs[np.array([w is not None for w in weights], dtype=bool)].copy() if not runs.empty else runs
    rows = []
    if not pool.empty:
        pool["weight"] = [w for w in weights if w is not None]
        pool["key"] = [recipe_key({**c, "method_args": {k: v for k, v in c["method_args"].items()
                                                        if k != "under_weight"}}, ("train_attack", "method_params"))
                       for c in pool["config"]]
        pool = dedupe(pool, ["key", "seed", "adversarial", "weight"], "C2", notes)
        for (key, seed), sweep in pool.groupby(["key", "seed"], sort=False):
            adv, nat = sweep[sweep["adversarial"]], sweep[~sweep["adversarial"]]
            common = sorted(set(adv["weight"]) & set(nat["weight"]))
            if adv.empty or nat.empty:
                continue  # a sweep in one training mode only (e.g. Fig. 5's) is not this claim's data
            if len(common) < 2:
                notes.append(f"C2: a sweep of {sweep['method'].iloc[0]} on {sweep['dataset'].iloc[0]} "
                             f"{sweep['imbalance'].iloc[0]}, seed {seed}, has fewer than two weights run in both "
                             "modes; not used")
                continue
            adv = adv[adv["weight"].isin(common)].sort_values("weight")
            nat = nat[nat["weight"].isin(common)].sort_values("weight")
            first = sweep.iloc[0]
            rows.append({"group": f"{first['method']} · {first['dataset']} {first['imbalance']} [{first['suite']}]",
                         "seed": int(seed), "a": -weight_slope(adv["weight"], adv["std_well"]),
                         "b": -weight_slope(nat["weight"], nat["std_well"]),
                         "runs": tuple(adv["cell_hash"]) + tuple(nat["cell_hash"]), "suite": first["suite"]})
    if not rows:
        return claim_from_pairs(spec, pd.DataFrame(), notes, _missing(
            spec, "no sweep of method_args.under_weight (two or more weights) run both naturally and adversarially "
                  "at one seed"))
    return claim_from_pairs(spec, pd.DataFrame(rows), notes)


def srat_claim(runs: pd.DataFrame, srat: str, drcb: str) -> ClaimResult:
    """C4: SRAT − DRCB robust under-represented accuracy, both at their defaults, paired by recipe and seed."""
    spec, notes = SPECS[f"C4-{srat.removeprefix('srat-')}"], []
    pool = runs[runs["method"].isin([srat, drcb]) & runs["adversarial"]].copy() if not runs.empty else runs
    if not pool.empty:
        pool = pool[np.array([at_defaults(c) for c in pool["config"]], dtype=bool)]
        pool = pool[pool["rob_under"].notna()]
    merged = pd.DataFrame()
    if not pool.empty:
        pool["key"] = [recipe_key(c, ("method", "method_args", "method_params")) + schedule_of(c)
                       for c in pool["config"]]
        merged = pair_runs(pool[pool["method"] == srat], pool[pool["method"] == drcb], spec.id, srat, drcb, notes)
    if not merged.empty:
        other = merged["rob_attack_a"] != merged["rob_attack_b"]
        if other.any():
            notes.append(f"{spec.id}: {int(other.sum())} pair(s) were evaluated under different first attacks; "
                         "not used")
            merged = merged[~other]
    if merged.empty:
        return claim_from_pairs(spec, pd.DataFrame(), notes, _missing(
            spec, f"no {srat} and {drcb} runs at their defaults with the same recipe and seed"))
    groups = [group_label(r, with_method=False) for _, r in merged.iterrows()]
    return claim_from_pairs(spec, _pairs_frame(merged, merged["rob_under_a"], merged["rob_under_b"], groups), notes)


# -- all claims ---------------------------------------------------------------------------------------------------------

FeatureLoader = Callable[[Sequence[int]], Mapping[int, tuple[np.ndarray, np.ndarray]]]


def evaluate_claims(results: pd.DataFrame, theory: Sequence[Mapping] = (),
                    features: FeatureLoader | None = None) -> list[ClaimResult]:
    """Every claim from tidy results (:func:`bench.results.read.load_results`), theory suites
    (:func:`bench.results.read.load_theory`) and a loader of the runs' train feature dumps (``{run_id: (labels,
    vectors)}`` for the ids that have one)."""
    runs = run_table(results)
    loader = features or (lambda ids: {})
    claims = [gap_claim(runs), reweight_claim(runs), separability_claim(runs, loader)]
    claims += [srat_claim(runs, srat, drcb) for srat, drcb in SRAT_VARIANTS]
    claims += [lemma_claim(theory), srat_separability_claim(runs, loader)]
    return finalize(claims)


def claims_section(url: str, suite: str | None = None) -> list[ClaimResult]:
    """The claims of a database (optionally one suite's runs and theory grid): what ``bench claims`` prints and
    the report's Claims section shows. A missing database or an unknown suite is a one-line BenchError."""
    from bench.errors import unknown
    from bench.results.read import feature_dump_runs, has_theory, load_features, load_results, load_theory, suite_names
    known = suite_names(url)  # a missing file or another schema version is a BenchError here
    theory = load_theory(url) if has_theory(url) else []
    if suite is not None:
        valid = sorted(set(known) | {t["suite"] for t in theory})
        if suite not in valid:
            raise unknown("suite", suite, valid or ["(none: the database holds no runs)"])
        theory = [t for t in theory if t["suite"] == suite]
    results = load_results(url, suite=suite)

    def loader(ids: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for run_id in sorted(feature_dump_runs(url, [int(i) for i in ids])):
            dumps = load_features(url, int(run_id))
            if FEATURE_DUMP in dumps:
                out[int(run_id)] = dumps[FEATURE_DUMP]
        return out

    return evaluate_claims(results, theory, loader)
