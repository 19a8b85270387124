"""The theory claim C5 (§3, Lemma 3.1): the closed-form bias against the numeric optimum of the stored grid.

The grid is deterministic (every point is computed, none sampled), so C5 has no interval and no test and takes no
part in Holm's correction: it is **supported** when the numeric optimum agrees with the closed form at no less than
:data:`LEMMA_SHARE` of the grid points, else **not supported**; inconclusive only without a stored grid.

"Agrees" is :mod:`bench.analysis.theory`'s own test (``|b_num − b_cf| <= AGREE_ATOL·√d·σ + AGREE_RTOL·|b_cf|``).
Lemma 3.1 is a statement about natural training of the Gaussian model; the paper models adversarial training as
the same data at a lower separability, so at ``eps > 0`` the lemma is read at the attacked mean η' (the grid's
``agrees_at_effective_eta``; at ``eps = 0`` it is the printed formula, ``agrees_with_paper``). Points where the
attack leaves no unique optimum (``numeric_bias`` NaN) are left out; a point whose optimum is a one-class rule
(±inf) counts as a disagreement. The printed formula's agreement at every point is given as a note.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import pandas as pd

from bench.analysis.claims_core import SPECS, ClaimResult, ClaimTest, _missing

LEMMA_SHARE = 0.95  # C5 is supported when at least this share of the grid points agree


def _flags(frame: pd.DataFrame, column: str) -> pd.Series:
    """A boolean column as read back from JSON (True/False, 0/1 or null), null as False."""
    if column not in frame.columns:
        return pd.Series(False, index=frame.index)
    return frame[column].map(lambda v: bool(v) if v is not None and not (isinstance(v, float) and math.isnan(v))
                             else False)


def _share_test(label: str, agrees: pd.Series, runs: Sequence[str]) -> ClaimTest:
    n = int(agrees.size)
    k = int(agrees.sum())
    share = 100.0 * k / n if n else math.nan
    nan = math.nan
    verdict = "inconclusive" if n == 0 else ("supported" if share >= 100 * LEMMA_SHARE else "not supported")
    reason = (f"{k} of {n} grid points agree ({share:.1f}%), "
              f"{'at least' if verdict == 'supported' else 'below'} the {LEMMA_SHARE:.0%} the rule asks") if n else "no data"
    return ClaimTest(label, n, (), float(k), float(n), share, nan, nan, nan, nan, verdict=verdict, reason=reason,
                runs=tuple(runs))


def lemma_claim(theory: Sequence[Mapping]) -> ClaimResult:
    """C5 from :func:`bench.results.read.load_theory` items (``suite``, ``frame``)."""
    spec = SPECS["C5"]
    frames = [item["frame"].assign(suite=item["suite"]) for item in theory
              if item.get("frame") is not None and not item["frame"].empty]
    if not frames:
        missing = _missing(spec, "no theory grid is stored")
        empty = _share_test("overall", pd.Series([], dtype=bool), ())
        return ClaimResult(spec, dataclasses.replace(empty, reason=missing), (), (), missing)
    frame = pd.concat(frames, ignore_index=True)
    numeric = pd.to_numeric(frame["numeric_bias"], errors="coerce")
    eps = pd.to_numeric(frame["eps"], errors="coerce").fillna(0.0)
    defined = numeric.notna()
    agrees = _flags(frame, "agrees_with_paper").where(eps == 0, _flags(frame, "agrees_at_effective_eta"))[defined]
    frame = frame[defined]
    suites = tuple(dict.fromkeys(frame["suite"]))
    overall = _share_test("overall", agrees, suites)
    breakdown = tuple(
        _share_test(f"d = {d:g}, eps = {e:g} [{s}]", agrees[sub.index], (s,))
        for (s, d, e), sub in frame.groupby(["suite", "d", "eps"], sort=True))
    printed = _flags(frame, "agrees_with_paper")
    notes = [f"C5: Lemma 3.1 as printed (no eps) agrees at {int(printed.sum())} of {len(frame)} points"]
    if (~defined).any():
        notes.append(f"C5: {int((~defined).sum())} point(s) without a unique optimum (the attack closes the gap "
                     "and rho = K) were left out")
    return ClaimResult(spec, overall, breakdown, tuple(notes), None, suites)
