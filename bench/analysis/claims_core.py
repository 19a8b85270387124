"""The claims' common ground: what each claim says (:data:`SPECS`), the result types, the verdict rule, Holm's
correction across the claims, and the pairing of runs by recipe and seed (docs/claims.md defines them all).

A claim's effect is oriented so that the paper claims it is **positive**: every paired value ``a`` minus ``b``.
Pairs come from :func:`run_table` (one row per finished run, group accuracies from
:func:`bench.analysis.metrics.group_accuracies`) joined on :func:`recipe_key` (the resolved config less what the
comparison varies and less bookkeeping) and the seed. The claims themselves are in :mod:`bench.analysis.claims`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.analysis.metrics import group_accuracies
from bench.analysis import paired

ALPHA = 0.05  # family-wise error rate of the Holm-corrected tests
CONFIDENCE = 0.95  # t intervals of the effects
MIN_PAIRS = 3  # fewer pairs: no test, verdict inconclusive
VERDICTS = ("supported", "not supported", "inconclusive")
SRAT_VARIANTS = (("srat-ce", "drcb-ce"), ("srat-focal", "drcb-focal"), ("srat-ldam", "drcb-ldam"))
# Keys of a resolved config that never make two runs incomparable: where and under which name a cell was stored,
# how many features it dumped (after training), and the factories' copy of the training flag.
_BOOKKEEPING = ("suite", "seed", "features", "adversarial", "guards")


@dataclass(frozen=True)
class Spec:
    """What a claim says, how its effect is measured, and which suites give it data."""

    id: str
    source: str  # where in the paper
    statement: str
    effect: str  # the effect's definition; the paper claims it is > 0
    a: str  # what the first paired value is
    b: str  # what the second is (effect = mean of a − b)
    unit: str
    suites: tuple[str, ...]  # suite files whose runs give the claim data (offline first)


@dataclass(frozen=True)
class ClaimTest:
    """One paired test: the whole claim (``label`` "overall") or one row of its breakdown."""

    label: str
    n: int  # pairs (C5: grid points)
    seeds: tuple[int, ...]
    mean_a: float
    mean_b: float
    effect: float  # mean of a − b (C5: the share of agreeing points, percent)
    sd: float
    ci_low: float
    ci_high: float
    p: float  # two-sided paired t-test; NaN when not tested (fewer than MIN_PAIRS pairs, or C5)
    p_holm: float = math.nan
    verdict: str = "inconclusive"
    reason: str = ""
    runs: tuple[str, ...] = ()  # cell hashes (C5: theory suite names)


@dataclass(frozen=True)
class ClaimResult:
    """A claim's verdict with its headline test, its breakdown and what was left out."""

    spec: Spec
    overall: ClaimTest
    breakdown: tuple[ClaimTest, ...] = ()
    notes: tuple[str, ...] = ()
    missing: str | None = None  # why there is no data, naming the suite that produces it
    used_suites: tuple[str, ...] = ()  # the suites the runs used were stored under (C5: theory suites)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def verdict(self) -> str:
        return self.overall.verdict


def _suites(*names: str) -> tuple[str, ...]:
    return tuple(f"suites/{n}.toml" for n in names)


SPECS: dict[str, Spec] = {s.id: s for s in (
    Spec("C1", "§2.1, Fig. 1",
         "Under adversarial training the gap between well- and under-represented standard accuracy is larger than "
         "under natural training.",
         "gap(adversarial) − gap(natural), gap = well − under standard (clean) accuracy; same method at its "
         "defaults, dataset, imbalance, recipe and seed", "adversarial gap", "natural gap", "pp",
         _suites("quick", "digits_studies", "prelim_classwise")),
    Spec("C2", "§2.2, Fig. 2",
         "Raising the under-represented weight costs the well-represented class more accuracy under adversarial "
         "than under natural training.",
         "cost(adversarial) − cost(natural), cost = −(OLS slope of the well-represented standard accuracy on "
         "log2 of method_args.under_weight) over the weights both modes ran; same sweep and seed",
         "adversarial cost", "natural cost", "pp per doubling", _suites("digits_studies", "binary_reweight")),
    Spec("C3", "§3, Fig. 3",
         "Adversarially trained features are less separable than naturally trained ones.",
         "ln J(natural) − ln J(adversarial), J = class-balanced Fisher ratio of the penultimate features of the "
         "stored train points (clean); same method, dataset, imbalance, recipe and seed",
         "ln J natural", "ln J adversarial", "ln ratio", _suites("digits_studies", "prelim_classwise")),
    *(Spec(f"C4-{srat.removeprefix('srat-')}", "§5, Tables 1-10",
           f"{srat} beats {drcb} on robust under-represented accuracy.",
           f"robust under-represented accuracy (first evaluation attack) of {srat} − {drcb}, both at their "
           "defaults; same dataset, imbalance, recipe and seed",
           srat, drcb, "pp", _suites(*(("quick",) if srat == "srat-ce" else ("quick", "digits_studies")),
                                     "cifar10_full", "svhn_full", "cifar100_full"))
      for srat, drcb in SRAT_VARIANTS),
    Spec("C5", "§3, Lemma 3.1",
         "Lemma 3.1's closed-form bias is the risk-minimising bias of the Gaussian model.",
         "share of grid points whose numeric optimum agrees with Lemma 3.1 within the theory module's tolerance "
         "(at eps > 0 the lemma is read at the attacked mean eta'); supported at >= 95% of the points",
         "agreeing points", "grid points", "% of points", _suites("theory")),
    Spec("C6", "§5, Fig. 4",
         "SRAT learns more separable features than its DRCB counterpart.",
         "ln J(SRAT) − ln J(DRCB) of the stored train features (clean), every variant pooled; same dataset, "
         "imbalance, recipe and seed", "ln J SRAT", "ln J DRCB", "ln ratio",
         _suites("digits_studies", "tsne_features")),
)}
CLAIM_IDS = tuple(SPECS)


# -- statistics and the verdict --------------------------------------------------------------------------------------


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (NaN entries are not tests), from :mod:`bench.analysis.paired`."""
    return paired.holm(pvalues)


def paired_test(label: str, a: Sequence[float], b: Sequence[float], seeds: Sequence[int] = (),
                runs: Sequence[str] = ()) -> ClaimTest:
    """Mean of a − b with its t interval and, from MIN_PAIRS pairs on, the two-sided paired t-test."""
    runs = tuple(dict.fromkeys(runs))
    seeds = tuple(sorted({int(s) for s in seeds}))
    if len(a) == 0:
        nan = math.nan
        return ClaimTest(label, 0, seeds, nan, nan, nan, nan, nan, nan, nan, runs=runs)
    d = paired.paired_difference(a, b, confidence=CONFIDENCE)
    p = d.t_p if d.n >= MIN_PAIRS else math.nan
    return ClaimTest(label, d.n, seeds, d.mean_a, d.mean_b, d.mean, d.sd, d.ci_low, d.ci_high, p, runs=runs)


def decide(test: ClaimTest, p_holm: float) -> tuple[str, str]:
    """The verdict of a claim whose effect the paper says is positive, and the reason in words.

    * fewer than MIN_PAIRS pairs: inconclusive;
    * Holm-adjusted p < ALPHA: supported when the effect is positive, not supported when it is negative (the
      data contradict the claim);
    * otherwise not supported when the 95% interval holds no positive value (its upper end <= 0: the data rule
      out the claimed direction, though not at the corrected level), else inconclusive.
    """
    if test.n == 0:
        return "inconclusive", "no data"
    if test.n < MIN_PAIRS:
        return "inconclusive", f"{test.n} pair(s), fewer than the {MIN_PAIRS} a test needs"
    if not math.isnan(p_holm) and p_holm < ALPHA:
        if test.effect > 0:
            return "supported", f"effect > 0 with Holm-adjusted p = {_p(p_holm)} < {ALPHA:g}"
        return "not supported", f"effect < 0 (the opposite of the claim) with Holm-adjusted p = {_p(p_holm)}"
    if not math.isnan(test.ci_high) and test.ci_high <= 0:
        return "not supported", f"the 95% interval [{test.ci_low:+.3g}, {test.ci_high:+.3g}] holds no positive effect"
    shown = "n/a" if math.isnan(p_holm) else _p(p_holm)
    return "inconclusive", f"Holm-adjusted p = {shown} >= {ALPHA:g} and the 95% interval includes positive effects"


def _p(p: float) -> str:
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


def claim_from_pairs(spec: Spec, pairs: pd.DataFrame, notes: Sequence[str] = (), missing: str | None = None) -> ClaimResult:
    """A claim from its pairs: columns ``group`` (breakdown label), ``seed``, ``a``, ``b``, ``runs`` (tuples of
    cell hashes) and optionally ``suite`` (where the pair's runs are stored).

    The headline test pools every pair; each breakdown group gets its own test, Holm-corrected within the claim.
    The headline's Holm correction across claims is :func:`finalize`'s.
    """
    if pairs.empty:
        return ClaimResult(spec, paired_test("overall", [], []), (), tuple(notes), missing or "no data")
    hashes = [h for runs in pairs["runs"] for h in runs]
    overall = paired_test("overall", pairs["a"].to_numpy(float), pairs["b"].to_numpy(float), pairs["seed"], hashes)
    rows = [paired_test(str(g), sub["a"].to_numpy(float), sub["b"].to_numpy(float), sub["seed"],
                        [h for runs in sub["runs"] for h in runs])
            for g, sub in pairs.groupby("group", sort=True)]
    adjusted = holm([r.p for r in rows]) if rows else []
    breakdown = tuple(dataclasses.replace(r, p_holm=float(q), verdict=decide(r, float(q))[0],
                                          reason=decide(r, float(q))[1]) for r, q in zip(rows, adjusted))
    used = tuple(sorted({str(x) for x in pairs["suite"]})) if "suite" in pairs else ()
    return ClaimResult(spec, overall, breakdown, tuple(notes), None, used)


def finalize(claims: Sequence[ClaimResult]) -> list[ClaimResult]:
    """Holm-correct the headline tests across the claims and give each its verdict (C5 keeps its own rule)."""
    tested = [c for c in claims if c.id != "C5"]
    adjusted = holm([c.overall.p for c in tested]) if tested else []
    by_id = {c.id: float(q) for c, q in zip(tested, adjusted)}
    out = []
    for claim in claims:
        if claim.id == "C5":
            out.append(claim)
            continue
        q = by_id[claim.id]
        verdict, reason = decide(claim.overall, q)
        if claim.missing:
            reason = claim.missing
        out.append(dataclasses.replace(claim, overall=dataclasses.replace(claim.overall, p_holm=q, verdict=verdict,
                                                                            reason=reason)))
    return out


# -- runs and pairs ---------------------------------------------------------------------------------------------------

RUN_COLUMNS = ["run_id", "cell_hash", "suite", "method", "dataset", "imbalance", "seed", "model", "adversarial",
               "config", "std_well", "std_under", "rob_under", "rob_attack"]


def run_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run: its keys, parsed config and group accuracies in percent.

    ``std_*`` from the clean rows, ``rob_under`` from the first evaluation attack (``attack_order == 1``), both
    through :func:`bench.analysis.metrics.group_accuracies` (the one place for the group formula).
    """
    if results.empty:
        return pd.DataFrame(columns=RUN_COLUMNS)
    acc = group_accuracies(results)
    clean = acc[acc["attack"] == "clean"].set_index("run_id")
    robust = acc[(acc["attack_order"] == 1) & (acc["attack"] != "clean")].set_index("run_id")
    runs = results.drop_duplicates("run_id").set_index("run_id", drop=False)
    out = runs[["run_id", "cell_hash", "suite", "method", "dataset", "imbalance", "seed", "model", "adversarial"]].copy()
    out["adversarial"] = out["adversarial"].astype(bool)
    out["seed"] = out["seed"].astype(int)
    out["config"] = [json.loads(c) if isinstance(c, str) else dict(c or {}) for c in runs["config"]]
    out["std_well"] = clean["well"].reindex(out.index) * 100
    out["std_under"] = clean["under"].reindex(out.index) * 100
    out["rob_under"] = robust["under"].reindex(out.index) * 100
    out["rob_attack"] = robust["attack"].reindex(out.index)
    return out.reset_index(drop=True)[RUN_COLUMNS]


def recipe_key(config: Mapping, drop: Sequence[str] = ()) -> str:
    """The config less the bookkeeping keys and ``drop``, as canonical JSON: runs with equal keys differ in
    nothing else."""
    kept = {k: v for k, v in config.items() if k not in _BOOKKEEPING and k not in drop}
    return json.dumps(kept, sort_keys=True, default=str)


SCHEDULE_ARGS = ("drw_epoch",)  # method_args that set the run's schedule, not the method's hyperparameters


def at_defaults(config: Mapping) -> bool:
    """Whether a run's method ran at its own defaults (no ``method_args`` but the schedule's, e.g. the quick suite's
    ``drw_epoch``): the paper's tables' setting."""
    return not {k for k in (config.get("method_args") or {}) if k not in SCHEDULE_ARGS}


def schedule_of(config: Mapping) -> str:
    """The schedule ``method_args`` of a run, as text: two runs pair only when these are equal."""
    args = config.get("method_args") or {}
    return json.dumps({k: args[k] for k in SCHEDULE_ARGS if k in args}, sort_keys=True)


def dedupe(frame: pd.DataFrame, keys: Sequence[str], what: str, notes: list[str]) -> pd.DataFrame:
    """One run per ``keys`` (the oldest); the others are named in ``notes`` (equal configs stored twice, e.g. in
    two suites, are one replicate, not two)."""
    if frame.empty:
        return frame
    frame = frame.sort_values("run_id")
    dup = frame.duplicated(list(keys), keep="first")
    if dup.any():
        notes.append(f"{what}: {int(dup.sum())} run(s) repeat the configuration and seed of an older one and were "
                     f"left out: {', '.join(frame.loc[dup, 'cell_hash'])}")
    return frame[~dup]


def pair_runs(a: pd.DataFrame, b: pd.DataFrame, what: str, a_name: str, b_name: str,
              notes: list[str]) -> pd.DataFrame:
    """Inner join of two sides on ``key`` and ``seed`` (suffixes ``_a``, ``_b``).

    A run whose recipe the other side also ran, but not at its seed, is an unpaired seed and named in ``notes``;
    a recipe the other side never ran is simply not part of the claim.
    """
    a = dedupe(a, ["key", "seed"], f"{what} ({a_name})", notes)
    b = dedupe(b, ["key", "seed"], f"{what} ({b_name})", notes)
    merged = a.merge(b, on=["key", "seed"], suffixes=("_a", "_b"))
    paired = set(zip(merged["key"], merged["seed"]))
    for side, other, name, other_name in ((a, b, a_name, b_name), (b, a, b_name, a_name)):
        unpaired = np.array([(k, s) not in paired for k, s in zip(side["key"], side["seed"])], dtype=bool)
        lone = side[side["key"].isin(set(other["key"])).to_numpy() & unpaired]
        if not lone.empty:
            notes.append(f"{what}: {len(lone)} {name} run(s) have no {other_name} partner at their seed and were not "
                         f"used: {', '.join(f'{h} (seed {s})' for h, s in zip(lone['cell_hash'], lone['seed']))}")
    return merged


def group_label(row: Mapping, with_method: bool = True) -> str:
    method = f"{row['method_a']} · " if with_method else ""
    return f"{method}{row['dataset_a']} {row['imbalance_a']} [{row['suite_a']}]"


def _pairs_frame(merged: pd.DataFrame, a: Sequence[float], b: Sequence[float], groups: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({"group": list(groups), "seed": merged["seed"].to_numpy(int), "a": list(a), "b": list(b),
                         "runs": [(x, y) for x, y in zip(merged["cell_hash_a"], merged["cell_hash_b"])],
                         "suite": merged["suite_a"].to_numpy()})


def _missing(spec: Spec, what: str) -> str:
    return f"no data: {what}; run {' or '.join(spec.suites)}"


