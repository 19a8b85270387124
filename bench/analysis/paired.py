"""Paired statistics: the difference of two methods' accuracies over the seeds both ran, and Holm's correction.

Pure numbers in, numbers out (numpy and scipy, nothing of bench's), so they can be checked against scipy and by
hand. :mod:`bench.analysis.comparison` applies them to the cells of a results database.

* :func:`paired_difference` — for paired values ``a[i]``, ``b[i]`` (one seed each): the means of A and of B,
  the mean difference A − B with a 95 % t interval, ``mean ± t_{0.975, n-1} · sd / sqrt(n)``
  (``scipy.stats.t``), the paired t-test p-value (``scipy.stats.ttest_rel``), the Wilcoxon signed-rank p-value
  (``scipy.stats.wilcoxon``, zero differences dropped) when there are at least :data:`MIN_WILCOXON` non-zero
  differences — NaN otherwise, since with fewer the test cannot reach p < 0.05 at all — and wins / ties / losses.
* :func:`holm` — Holm's step-down adjusted p-values (a few lines rather than a statsmodels dependency).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
CONFIDENCE = 0.95
MIN_WILCOXON = 6  # non-zero differences; below this the exact two-sided p-value cannot go under 0.05
DECIMALS = 10  # differences are rounded here before ranking, so float noise does not break Wilcoxon ties


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

