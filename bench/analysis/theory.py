"""Section 3 of the SRAT paper, recomputed: the optimal linear classifier on two imbalanced Gaussian classes.

The paper's model (its Eq. (1)): labels ``y ∈ {-1, +1}``; ``x | y=+1 ~ N(μ, σ²I)``, ``x | y=-1 ~ N(-μ, σ²I)`` in
``d`` dimensions with ``μ = (η, …, η)``, ``η > 0``; separability ``S = η/σ²``. Training priors satisfy
``Pr(y=+1) = K·Pr(y=-1)``, so **class +1 is the majority** (well-represented) and **class -1 the minority**
(under-represented), ``π₊ = K/(K+1)``, ``π₋ = 1/(K+1)``. Reweighting multiplies the minority's loss by ``ρ``.
The classifier is ``f(x) = sign(wᵀx − b)``. Test priors are equal.

Symbols used throughout (all arguments of the public functions):

=========  ==========================================================================================
``d``      dimension (integer >= 1)
``eta``    η > 0, every coordinate of the class mean μ (class +1 at +μ, class -1 at -μ)
``sigma``  σ > 0, per-coordinate standard deviation (covariance σ²I)
``K``      K >= 1, training prior ratio Pr(y=+1) / Pr(y=-1) = majority / minority
``rho``    ρ > 0, weight on the minority class -1 in the training risk (the majority has weight 1)
``eps``    ε >= 0, radius of the adversary's norm ball; 0 is natural training
``norm``   ``"linf"`` (default; the paper's experiments use l∞ 8/255, its footnote 1) or ``"l2"``
``b``      the bias, in the units of w = 1 = (1, …, 1) (the paper's w; see below)
=========  ==========================================================================================

**Direction of w.** By the symmetry of the model (every coordinate alike) the optimal direction is
``w ∝ (1, …, 1)``; the paper proves this (Lemma 3.1, Appendix A.3.1) and uses ``w = 1``. We fix ``w = 1`` (not
the unit vector) so that our ``b`` is in the same units as the paper's; for the unit vector ``1/√d`` divide b by
``√d``. Only b is optimised.

**The projected problem.** With ``w = 1`` the score ``t = wᵀx = Σᵢ xᵢ`` is ``N(±dη, dσ²)``: mean ``±dη`` and
standard deviation ``s = √d·σ`` (a sum of d independent N(·, σ²) has variance dσ², not d²σ²).

**The adversary.** The paper's Section 3 has no perturbation: it models adversarial training only through a
lower separability. We add the exact worst case of a norm-ball adversary, which for a linear classifier is a
shift of the score by ``δ = ε·‖w‖_*`` towards the boundary (‖·‖_* the dual norm): ``δ = ε‖1‖₁ = εd`` for l∞ and
``δ = ε‖1‖₂ = ε√d`` for l2. Class +1 is then (adversarially) misclassified iff ``t − δ − b <= 0`` and class -1
iff ``t + δ − b >= 0``, so

    adv error of class +1 (majority) = Φ((b − (dη − δ)) / s)
    adv error of class -1 (minority) = Φ((−b − (dη − δ)) / s)

— exactly the natural errors of the same data with η replaced by the *effective mean* ``η' = η − δ/d``
(``η − ε`` for l∞, ``η − ε/√d`` for l2). So adversarial training here is natural training at the lower
separability ``S' = η'/σ²``, which is the paper's premise made exact. ``eps = 0`` gives the natural errors.

**The risk** (the paper's Eq. (2), with the adversarial errors): ``R(b) = ρ·π₋·err₋(b) + π₊·err₊(b)``.

**Numeric optimum** (:func:`optimal_bias`): bounded Brent (``scipy.optimize.minimize_scalar``) on R written
without cancellation (``log R`` via ``scipy.special.log_ndtr`` between the two class means, ``R`` minus a one-class
rule's risk beyond them), over at most 37 projected standard deviations past a class mean. R is unimodal in b
when ``η' > 0``. When the adversary closes the gap (``η' <= 0``) the infimum is at ``b = ±∞``: predicting one
class everywhere. This side never uses a closed form; see :func:`optimal_bias` for the details.

**The paper's closed form** (:func:`closed_form_bias`): Lemma 3.1 (Section 3 and Appendix A.3.1, the solution of
Eq. (2)), as printed: ``b = ½·log(ρ/K)·dσ²/η = ½·log(ρ/K)·d/S``. Its derivation (Appendix A.3.1) writes the
standardised error as ``(b ∓ dη)/(dσ)``, i.e. a standard deviation dσ for the sum of d coordinates. With the
correct ``√d·σ`` the same first-order condition gives ``b* = σ²·log(ρ/K)/(2η)`` (no factor d): the two agree only
for ``d = 1`` or ``ρ = K``. That derivation is ours and is stated here to explain the numbers in the report; the
benchmark's numeric side does not use it.

**Monte Carlo** (:func:`monte_carlo_bias`): n labelled points from the training distribution (labels with priors
π₊, π₋; each x drawn in full d dimensions), the scores ``t = Σᵢ xᵢ`` shifted by the adversary, and the exact
minimiser of the empirical weighted risk (a step function of b; sort the scores, cumulate the two classes'
counts, take the middle of the minimising gap). Its error shrinks like ``n^(-1/3)`` (an argmin of a step-function
risk, Kim & Pollard 1990); :func:`monte_carlo_tolerance` gives the scale.

**Theorems** (:func:`check_theorems`): for two distributions D1, D2 (each ``(η, σ, ε)`` with the same d, K),
Theorem 3.1, Eq. (3): ``err₋(f1*) − err₊(f1*) < err₋(f2*) − err₊(f2*)`` with f* optimal at ρ = 1; Theorem 3.2,
Eq. (4): ``err₊(f1'*) − err₊(f1*) < err₊(f2'*) − err₊(f2*)`` with f'* optimal at ρ = K; both claimed for
``S1 > S2`` and "K large enough". Errors are those of each classifier on the distribution it was trained on
(adversarial errors when its ε > 0). Every such error depends on (η', σ) only through η'/σ (and d), so it is the
order of η'/σ, not of S = η'/σ², that decides the inequalities (:func:`theorem_pairs` lists both orders).

**Entry points**: :func:`evaluate_grid` (grid → frame), :func:`theorem_pairs`, :func:`run_theory_suite` (file →
frame; reading the file is :mod:`bench.analysis.theory_suite`); :mod:`bench.report.theory_render` renders a frame.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_ndtr, ndtr

from bench.analysis.theory_suite import DEFAULT_MONTE_CARLO_SAMPLES, GRID_KEYS, NORMS  # noqa: F401 - the grid
from bench.analysis.theory_suite import load_theory_suite, validate_grid  # noqa: F401 - the suite-file reader
from bench.errors import BenchError, valid_choices

# Numeric vs closed form "agree" when |b_num − b_cf| <= AGREE_ATOL·s + AGREE_RTOL·|b_cf| (s = √d·σ, the projected
# std). The numeric optimiser is ~1e-8 relative accurate, so this tolerance only absorbs rounding, never a model
# difference.
AGREE_RTOL = 1e-4
AGREE_ATOL = 1e-6
# optimal_bias searches b at most TAIL projected stds beyond a class mean: farther out Φ(-TAIL) ≈ 6e-300 and the
# gain over predicting one class everywhere is not representable; it then reports that one-class rule (±inf).
TAIL = 37.0
MC_TOLERANCE_FACTOR = 4.0  # × the n^(-1/3) scale λ; Chernoff's argmax(W(t) − t²) has sd ≈ 0.52, so ≈ 7.7 sd
CHERNOFF_SD = 0.52


# -- the model ----------------------------------------------------------------------------------------------------
def _check(d: Any, eta: Any, sigma: Any, K: Any, rho: Any, eps: Any, norm: str) -> None:
    """Public-API validation: one BenchError naming the bad value and the allowed range."""
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise BenchError(f"d = {d!r}: must be an integer >= 1")
    for name, value, ok, allowed in (
        ("eta", eta, lambda v: v > 0, "> 0"),
        ("sigma", sigma, lambda v: v > 0, "> 0"),
        ("K", K, lambda v: v >= 1, ">= 1 (the majority/minority prior ratio)"),
        ("rho", rho, lambda v: v > 0, "> 0"),
        ("eps", eps, lambda v: v >= 0, ">= 0"),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not math.isfinite(value) or not ok(value):
            raise BenchError(f"{name} = {value!r}: must be a finite number {allowed}")
    if norm not in NORMS:
        raise BenchError(f"norm = {norm!r} is unknown{valid_choices(str(norm), NORMS)}")


def adversarial_shift(d: int, eps: float, norm: str = "linf") -> float:
    """δ = ε·‖w‖_* for w = 1: the adversary's worst-case shift of the score wᵀx (εd for l∞, ε√d for l2)."""
    if norm not in NORMS:
        raise BenchError(f"norm = {norm!r} is unknown{valid_choices(str(norm), NORMS)}")
    return eps * d if norm == "linf" else eps * math.sqrt(d)


def effective_eta(d: int, eta: float, eps: float, norm: str = "linf") -> float:
    """η' = η − δ/d: the per-coordinate mean at which natural errors equal the adversarial ones."""
    return eta - adversarial_shift(d, eps, norm) / d


def _z_scores(d: int, eta: float, sigma: float, b: float, eps: float, norm: str) -> tuple[float, float]:
    """(z₋, z₊): class -1's and class +1's error is Φ(z); the one place the error integrals are written."""
    m = d * eta - adversarial_shift(d, eps, norm)  # projected mean of class +1 after the attack (class -1: -m)
    s = math.sqrt(d) * sigma  # std of Σᵢ xᵢ
    return (-b - m) / s, (b - m) / s


def classwise_errors(d: int, eta: float, sigma: float, K: float, rho: float, b: float, eps: float = 0.0,
                     norm: str = "linf") -> dict[str, float]:
    """Class-wise natural and adversarial (radius ``eps``) errors of ``sign(1ᵀx − b)``, and the risks.

    ``minority`` is class -1, ``majority`` class +1. ``balanced`` errors use the paper's equal test priors;
    ``train_risk`` is the weighted adversarial risk ρ·π₋·err₋ + π₊·err₊ that :func:`optimal_bias` minimises.
    """
    _check(d, eta, sigma, K, rho, eps, norm)
    nat_minus, nat_plus = (float(ndtr(z)) for z in _z_scores(d, eta, sigma, b, 0.0, norm))
    adv_minus, adv_plus = (float(ndtr(z)) for z in _z_scores(d, eta, sigma, b, eps, norm))
    return {
        "nat_err_minority": nat_minus, "nat_err_majority": nat_plus,
        "adv_err_minority": adv_minus, "adv_err_majority": adv_plus,
        "nat_balanced_error": (nat_minus + nat_plus) / 2, "adv_balanced_error": (adv_minus + adv_plus) / 2,
        "train_risk": (rho * adv_minus + K * adv_plus) / (K + 1),
    }


def log_risk(b: float, d: int, eta: float, sigma: float, K: float, rho: float, eps: float = 0.0,
             norm: str = "linf") -> float:
    """log R(b), R(b) = ρ·π₋·err₋(b) + π₊·err₊(b) with the adversarial errors (natural when eps = 0)."""
    z_minus, z_plus = _z_scores(d, eta, sigma, b, eps, norm)
    return float(np.logaddexp(math.log(rho / (K + 1)) + log_ndtr(z_minus), math.log(K / (K + 1)) + log_ndtr(z_plus)))


def optimal_bias(d: int, eta: float, sigma: float, K: float, rho: float, eps: float = 0.0,
                 norm: str = "linf") -> float:
    """The b minimising the weighted (adversarial) risk R for w = 1, found numerically (bounded Brent).

    With ``m = dη'`` and ``s = √d·σ``, R is written on each of three pieces in a form without cancellation, since a
    cdf near 1 loses the small differences that locate b* when the best rule is close to a one-class rule:

    * ``[-m, m]``: ``log R`` (both errors below ½);
    * ``[-m − TAIL·s, -m]``: ``R − ρπ₋ = π₊Φ(z₊) − ρπ₋Φ(−z₋)`` (the minority error is near 1);
    * ``[m, m + TAIL·s]``: ``R − π₊ = ρπ₋Φ(z₋) − π₊Φ(−z₊)`` (the majority error is near 1).

    Each differs from R by a constant, so has the same minimiser. R is unimodal in b when ``m > 0`` (R' ∝
    π₊φ(z₊) − ρπ₋φ(z₋) and ``φ(z₊)/φ(z₋) = exp(2bm/s²)`` increases), so the middle piece is searched first and an
    outer piece only when the minimiser sits on the shared edge. A minimiser on an outer piece's far edge means
    the best finite b beats the one-class rule by less than ~Φ(−TAIL) (below double precision); the answer is
    then that rule. One-class rules: ``-inf`` predicts +1 everywhere (risk ρπ₋), ``+inf`` predicts -1 (risk π₊).
    When ``m <= 0`` (the attack closes the gap) the same ratio is non-increasing, R has no interior minimum and the
    infimum is the better one-class rule; ``nan`` when they tie (ρ = K: every b is equally good).
    """
    _check(d, eta, sigma, K, rho, eps, norm)
    m = d * eta - adversarial_shift(d, eps, norm)
    s = math.sqrt(d) * sigma
    w_minus, w_plus = rho / (K + 1), K / (K + 1)  # ρ·π₋ and π₊: the risks of the two one-class rules
    one_class = -math.inf if w_minus < w_plus else math.inf if w_plus < w_minus else math.nan
    if m <= 0:
        return one_class

    def log_r(b: float) -> float:
        return log_risk(b, d, eta, sigma, K, rho, eps, norm)

    def excess_over_all_plus(b: float) -> float:  # R − ρπ₋, for b <= -m
        return float(w_plus * ndtr((b - m) / s) - w_minus * ndtr((b + m) / s))

    def excess_over_all_minus(b: float) -> float:  # R − π₊, for b >= m
        return float(w_minus * ndtr((-b - m) / s) - w_plus * ndtr((m - b) / s))

    def argmin(f, lo: float, hi: float) -> tuple[float, str]:
        x = float(minimize_scalar(f, bounds=(lo, hi), method="bounded",
                                  options={"xatol": 1e-10 * s, "maxiter": 500}).x)
        edge = 1e-6 * s
        return x, ("lo" if x - lo < edge else "hi" if hi - x < edge else "inside")

    b, where = argmin(log_r, -m, m)
    if where == "lo":
        b, where = argmin(excess_over_all_plus, -m - TAIL * s, -m)
        if where == "lo":
            return -math.inf
    elif where == "hi":
        b, where = argmin(excess_over_all_minus, m, m + TAIL * s)
        if where == "hi":
            return math.inf
    return b


def closed_form_bias(d: int, eta: float, sigma: float, K: float, rho: float) -> float:
    """The paper's Lemma 3.1 (Section 3, solution of Eq. (2); Appendix A.3.1), as printed:
    ``b = ½·log(ρ/K)·dσ²/η = ½·log(ρ/K)·d/S``. It has no ε: the paper's Section 3 models no perturbation."""
    _check(d, eta, sigma, K, rho, 0.0, "linf")
    return 0.5 * math.log(rho / K) * d * sigma**2 / eta


# -- Monte Carlo --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _sample(d: int, K: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(minority mask, Σᵢ zᵢ) for n points with z ~ N(0, I_d), minority (-1) with probability 1/(K+1).

    Every coordinate is drawn (in chunks of about 2·10⁶ numbers) and summed, so the spread of the projected score
    is measured, not assumed. Cached: the rows of a grid with the same (d, K, n, seed) share their draws (common
    random numbers), since x = y·μ + σ·z gives 1ᵀx = y·dη + σ·1ᵀz for every (η, σ).
    """
    rng = np.random.default_rng(seed)
    minority = rng.random(n) < 1 / (K + 1)
    z_sum = np.empty(n)
    chunk = max(1, 2_000_000 // d)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        z_sum[start:stop] = rng.standard_normal((stop - start, d)).sum(axis=1)
    minority.flags.writeable = False
    z_sum.flags.writeable = False
    return minority, z_sum


def monte_carlo_bias(d: int, eta: float, sigma: float, K: float, rho: float, eps: float = 0.0,
                     norm: str = "linf", n: int = DEFAULT_MONTE_CARLO_SAMPLES, seed: int = 0) -> float:
    """The exact minimiser of the empirical weighted adversarial risk on n sampled points (±inf at an edge).

    Points x = y·μ + σ·z (see :func:`_sample`), scores t = 1ᵀx, each pushed δ towards the boundary. Empirical
    risk: (ρ·#{y=-1: t+δ >= b} + #{y=+1: t−δ <= b}) / n, a step function of b; its minimiser is found exactly by
    sorting (the middle of the middle minimising gap). ``-inf``/``+inf`` when predicting one class is best.
    """
    _check(d, eta, sigma, K, rho, eps, norm)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise BenchError(f"n = {n!r}: must be an integer >= 1")
    minority, z_sum = _sample(int(d), float(K), int(n), int(seed))
    scores = np.where(minority, -d * eta, d * eta) + sigma * z_sum
    delta = adversarial_shift(d, eps, norm)
    attacked = np.where(minority, scores + delta, scores - delta)  # each point pushed towards the boundary
    order = np.argsort(attacked, kind="stable")
    attacked, is_minority = attacked[order], minority[order]
    # For b in the gap (attacked[k-1], attacked[k]), k = 0..n: majority errors = majority points among the first k,
    # minority errors = minority points among the last n − k.
    majority_below = np.concatenate(([0], np.cumsum(~is_minority)))
    minority_below = np.concatenate(([0], np.cumsum(is_minority)))
    risk = rho * (minority_below[-1] - minority_below) + majority_below
    best = np.flatnonzero(risk == risk.min())
    k = int(best[len(best) // 2])
    if k == 0 or k == n:
        return -math.inf if k == 0 else math.inf
    return float((attacked[k - 1] + attacked[k]) / 2)


def monte_carlo_tolerance(d: int, eta: float, sigma: float, K: float, rho: float, eps: float = 0.0,
                          norm: str = "linf", n: int = DEFAULT_MONTE_CARLO_SAMPLES, b: float | None = None) -> float:
    """How far the Monte-Carlo minimiser may fall from the true one: MC_TOLERANCE_FACTOR·λ.

    The empirical risk near b* is ½R''·u² plus noise of variance a·|u|/n (u = b − b*), a = π₊f₊(b*) + ρ²π₋f₋(b*)
    (f the densities of the attacked scores), so b̂ − b* ≈ λ·Z with λ = (4a / (n·R''²))^(1/3) and Z Chernoff's
    distribution (sd ≈ 0.52). ``b`` defaults to :func:`optimal_bias`. NaN when the optimum is infinite.
    """
    if b is None:
        b = optimal_bias(d, eta, sigma, K, rho, eps, norm)
    if not math.isfinite(b):
        return math.nan
    m = d * eta - adversarial_shift(d, eps, norm)
    s = math.sqrt(d) * sigma
    pi_minus, pi_plus = 1 / (K + 1), K / (K + 1)
    u_plus, u_minus = (b - m) / s, (b + m) / s  # standardised distance of b from each class's attacked mean
    phi_plus, phi_minus = math.exp(-u_plus**2 / 2) / math.sqrt(2 * math.pi), math.exp(-u_minus**2 / 2) / math.sqrt(2 * math.pi)
    a = (pi_plus * phi_plus + rho**2 * pi_minus * phi_minus) / s
    curvature = (-pi_plus * u_plus * phi_plus + rho * pi_minus * u_minus * phi_minus) / s**2
    if a <= 0 or curvature <= 0:
        return math.nan
    return MC_TOLERANCE_FACTOR * CHERNOFF_SD * (4 * a / (n * curvature**2)) ** (1 / 3)


# -- the theorems -------------------------------------------------------------------------------------------------
def check_theorems(d: int, K: float, eta1: float, sigma1: float, eta2: float, sigma2: float, eps1: float = 0.0,
                   eps2: float = 0.0, norm: str = "linf") -> dict[str, Any]:
    """Theorems 3.1 (Eq. (3)) and 3.2 (Eq. (4)) for D1 = (eta1, sigma1, eps1) and D2 = (eta2, sigma2, eps2).

    Each inequality is evaluated twice: with the numeric optima (:func:`optimal_bias` at ρ = 1 and ρ = K) and with
    the paper's Lemma 3.1 applied to each distribution at its effective mean η' (the paper's own reading of
    adversarial training as lower separability; η' = η when ε = 0). Errors are the exact integrals, on the
    distribution each classifier was trained on (adversarial errors when its ε > 0); an infinite optimum is the
    one-class rule it stands for. Returned: the separabilities S = η'/σ², ``hypothesis`` = S1 > S2, the paper's
    "K large enough" condition from its proof of Theorem 3.1 (log K > 2η²/(σ1σ2) for η1 = η2, which after its
    rescaling reads log K > 2·η1'η2'/(σ1σ2)), ``snr_ordered`` = η1'/σ1 > η2'/σ2, and per source ("numeric",
    "closed_form") the two sides and truth of each strict inequality (``None`` when an optimum is undefined).
    Every error depends on (η', σ) only through η'/σ, so ``snr_ordered``, not S1 > S2, decides the outcome: with
    equal η'/σ both sides are equal and the strict inequalities fail.
    """
    _check(d, eta1, sigma1, K, 1.0, eps1, norm)
    _check(d, eta2, sigma2, K, 1.0, eps2, norm)
    e1, e2 = effective_eta(d, eta1, eps1, norm), effective_eta(d, eta2, eps2, norm)
    out: dict[str, Any] = {
        "S1": e1 / sigma1**2, "S2": e2 / sigma2**2, "hypothesis": e1 / sigma1**2 > e2 / sigma2**2,
        # The errors depend on (η', σ) only through η'/σ (rescaling x changes S = η/σ² but no error), so this,
        # not S1 > S2, is the ordering that decides the inequalities.
        "snr_ordered": e1 / sigma1 > e2 / sigma2,
        "K_condition_paper": bool(math.log(K) > 2 * e1 * e2 / (sigma1 * sigma2)),
    }
    dists = ((eta1, sigma1, eps1, e1), (eta2, sigma2, eps2, e2))
    for source in ("numeric", "closed_form"):
        z = []  # per distribution: the (z₋, z₊) of its classifier at ρ = 1 and at ρ = K
        for eta, sigma, eps, eff in dists:
            if source == "numeric":
                biases = (optimal_bias(d, eta, sigma, K, 1.0, eps, norm), optimal_bias(d, eta, sigma, K, K, eps, norm))
            elif eff > 0:
                biases = (closed_form_bias(d, eff, sigma, K, 1.0), closed_form_bias(d, eff, sigma, K, K))
            else:
                biases = (math.nan, math.nan)
            if any(math.isnan(b) for b in biases):
                z = None
                break
            z.append(tuple(_z_scores(d, eta, sigma, b, eps, norm) for b in biases))
        if z is None:
            out.update({f"{source}_{k}": None for k in
                        ("thm31_lhs", "thm31_rhs", "thm31_holds", "thm32_lhs", "thm32_rhs", "thm32_holds")})
            continue
        # Errors on the (attacked) training distribution (equal to the natural ones at eps = 0); Φ(z₋) is the
        # minority's error, Φ(z₊) the majority's.
        gap = [float(ndtr(zm) - ndtr(zp)) for (zm, zp), _ in z]
        # err₋ − err₊ rounds to 1 − 1 = 0 differences when both rules nearly always predict +1, so Eq. (3) is decided
        # in the equivalent form 1 − gap = Φ(−z₋) + Φ(z₊) (minority accuracy + majority error), free of cancellation.
        one_minus_gap = [float(ndtr(-zm) + ndtr(zp)) for (zm, zp), _ in z]
        hurt = [float(ndtr(zp_k) - ndtr(zp)) for (_, zp), (_, zp_k) in z]
        out.update({
            f"{source}_thm31_lhs": gap[0], f"{source}_thm31_rhs": gap[1],
            f"{source}_thm31_holds": bool(one_minus_gap[0] > one_minus_gap[1]),
            f"{source}_thm32_lhs": hurt[0], f"{source}_thm32_rhs": hurt[1], f"{source}_thm32_holds": bool(hurt[0] < hurt[1]),
        })
    return out


# -- grids --------------------------------------------------------------------------------------------------------
def _agree(value: float, reference: float, s: float) -> bool:
    """|value − reference| <= AGREE_ATOL·s + AGREE_RTOL·|reference|, both finite."""
    return bool(math.isfinite(value) and math.isfinite(reference)
                and abs(value - reference) <= AGREE_ATOL * s + AGREE_RTOL * abs(reference))


def _verdict(numeric: float, closed: float, agrees: bool, agrees_eff: bool, eps: float) -> str:
    if math.isnan(numeric):
        return "no unique optimum: the attack closes the gap and rho = K, so every b is equally good"
    if not math.isfinite(numeric):
        side = "+1 (majority)" if numeric < 0 else "-1 (minority)"
        return f"no finite optimum: the best rule predicts {side} everywhere; Lemma 3.1 gives b = {closed:.4g}"
    if agrees:
        return "agrees with Lemma 3.1"
    text = f"disagrees: numeric b = {numeric:.4g}, Lemma 3.1 gives {closed:.4g}"
    if closed != 0:
        text += f" (ratio {numeric / closed:.4g})"
    if eps > 0 and agrees_eff:
        text += "; matches Lemma 3.1 at the effective mean eta' (the paper's formula has no eps)"
    return text


def evaluate_row(d: int, eta: float, sigma: float, K: float, rho: float, eps: float = 0.0, norm: str = "linf",
                 monte_carlo_samples: int = DEFAULT_MONTE_CARLO_SAMPLES, seed: int = 0) -> dict[str, Any]:
    """One row of :func:`evaluate_grid` (see there for the columns)."""
    s = math.sqrt(d) * sigma
    eff = effective_eta(d, eta, eps, norm)
    numeric = optimal_bias(d, eta, sigma, K, rho, eps, norm)
    closed = closed_form_bias(d, eta, sigma, K, rho)
    closed_eff = closed_form_bias(d, eff, sigma, K, rho) if eff > 0 else math.nan
    agrees, agrees_eff = _agree(numeric, closed, s), _agree(numeric, closed_eff, s)
    row: dict[str, Any] = {
        "d": d, "eta": eta, "sigma": sigma, "K": K, "rho": rho, "eps": eps, "norm": norm,
        "separability": eta / sigma**2, "effective_eta": eff, "effective_separability": eff / sigma**2,
        "numeric_bias": numeric, "closed_form_bias": closed, "closed_form_bias_effective": closed_eff,
        "diff_closed_form": numeric - closed,
        "ratio_closed_form": numeric / closed if closed != 0 and math.isfinite(numeric) else math.nan,
        "diff_closed_form_effective": numeric - closed_eff,
        "agreement_tolerance": AGREE_ATOL * s + AGREE_RTOL * abs(closed),
        "agrees_with_paper": agrees, "agrees_at_effective_eta": agrees_eff,
        "verdict": _verdict(numeric, closed, agrees, agrees_eff, eps),
    }
    if monte_carlo_samples > 0:
        mc = monte_carlo_bias(d, eta, sigma, K, rho, eps, norm, n=monte_carlo_samples, seed=seed)
        tol = monte_carlo_tolerance(d, eta, sigma, K, rho, eps, norm, n=monte_carlo_samples, b=numeric)
        if math.isnan(numeric):
            mc_agrees = None
        elif math.isinf(numeric):
            mc_agrees = mc == numeric
        elif not tol <= s:
            mc_agrees = None  # uninformative: too few sampled points near b* to locate it within one projected std
        else:
            mc_agrees = bool(math.isfinite(mc) and abs(mc - numeric) <= tol)
        row.update({"monte_carlo_bias": mc, "monte_carlo_diff": mc - numeric, "monte_carlo_tolerance": tol,
                    "monte_carlo_agrees": mc_agrees, "monte_carlo_samples": monte_carlo_samples})
    else:
        row.update({"monte_carlo_bias": math.nan, "monte_carlo_diff": math.nan, "monte_carlo_tolerance": math.nan,
                    "monte_carlo_agrees": None, "monte_carlo_samples": 0})
    errors = classwise_errors(d, eta, sigma, K, rho, numeric, eps, norm)
    row.update(errors)
    # How much worse the paper's b is on the risk it claims to minimise (0 when it is optimal).
    row["closed_form_excess_risk"] = (classwise_errors(d, eta, sigma, K, rho, closed, eps, norm)["train_risk"]
                                      - errors["train_risk"])
    # Theorems 3.1/3.2 with D1 = this data trained naturally, D2 = the same data trained adversarially at eps (the
    # paper's narrative: adversarial training separates worse). Independent of rho; only defined for eps > 0.
    theorem = check_theorems(d, K, eta, sigma, eta, sigma, 0.0, eps, norm) if eps > 0 and K > 1 else {}
    for source in ("numeric", "closed_form"):
        for thm in ("thm31", "thm32"):
            row[f"{thm}_{source}"] = theorem.get(f"{source}_{thm}_holds")
    for thm in ("thm31", "thm32"):
        row[f"{thm}_natural"] = theorem.get(f"numeric_{thm}_lhs", math.nan)
        row[f"{thm}_adversarial"] = theorem.get(f"numeric_{thm}_rhs", math.nan)
    row["K_condition_paper"] = theorem.get("K_condition_paper")
    return row


BOOLEAN_COLUMNS = ("agrees_with_paper", "agrees_at_effective_eta", "monte_carlo_agrees", "thm31_numeric",
                   "thm32_numeric", "thm31_closed_form", "thm32_closed_form", "K_condition_paper")


def evaluate_grid(grid: Mapping[str, Any], where: str = "theory grid") -> pd.DataFrame:
    """One row per (d, eta, sigma, K, rho, eps) of the grid (see :func:`validate_grid` for the keys).

    Columns: the parameters; ``separability`` S = η/σ² and the effective η' and S' under the attack;
    ``numeric_bias`` (:func:`optimal_bias`), ``closed_form_bias`` (Lemma 3.1 as printed),
    ``closed_form_bias_effective`` (Lemma 3.1 at η', our reading for eps > 0), their differences and ratio;
    ``agrees_with_paper`` = numeric within ``agreement_tolerance`` (AGREE_ATOL·√d·σ + AGREE_RTOL·|closed form|) of
    the printed closed form, and a one-line ``verdict``; ``monte_carlo_*`` (:func:`monte_carlo_bias`, its distance
    from the numeric optimum and :func:`monte_carlo_tolerance`; ``monte_carlo_agrees`` is NA when that tolerance
    exceeds the projected std √d·σ: too few sampled points near the optimum for the check to say anything, as when
    the classes barely overlap); the class-wise natural and adversarial errors at
    the numeric optimum (:func:`classwise_errors`); ``closed_form_excess_risk`` = R(closed form) − R(numeric) >= 0;
    ``thm31_*``/``thm32_*``: Theorems 3.1/3.2 for D1 = this data under natural training vs D2 = under adversarial
    training at eps (``*_natural``/``*_adversarial`` the two sides with numeric optima; ``*_numeric`` and
    ``*_closed_form`` whether the strict inequality holds), NA when eps = 0 or K = 1; ``K_condition_paper``.
    """
    g = validate_grid(grid, where)
    rows = [evaluate_row(d, eta, sigma, K, rho, eps, g["norm"], g["monte_carlo_samples"], g["seed"])
            for d, eta, sigma, K, rho, eps in itertools.product(*(g[k] for k in GRID_KEYS))]
    frame = pd.DataFrame(rows)
    for column in BOOLEAN_COLUMNS:
        frame[column] = frame[column].astype("boolean")
    return frame


def theorem_pairs(grid: Mapping[str, Any], where: str = "theory grid") -> pd.DataFrame:
    """Theorems 3.1 and 3.2 as stated: every pair of the grid's (eta, sigma) with S1 > S2, per (d, K > 1, eps).

    Both distributions are trained at the same eps. One row per pair with the fields of :func:`check_theorems`.
    Pairs whose S order differs from their η'/σ order (``snr_ordered`` false) are where the statement in terms of
    S can fail: the errors depend on η'/σ only.
    """
    g = validate_grid(grid, where)
    dists = list(itertools.product(g["eta"], g["sigma"]))
    rows = []
    for d, K, eps in itertools.product(g["d"], g["K"], g["eps"]):
        if K <= 1:
            continue
        for (eta1, sigma1), (eta2, sigma2) in itertools.permutations(dists, 2):
            if not eta1 / sigma1**2 > eta2 / sigma2**2:
                continue
            result = check_theorems(d, K, eta1, sigma1, eta2, sigma2, eps, eps, g["norm"])
            rows.append({"d": d, "K": K, "eps": eps, "eta1": eta1, "sigma1": sigma1, "eta2": eta2,
                         "sigma2": sigma2, **result})
    frame = pd.DataFrame(rows)
    for column in frame.columns:
        if column.endswith("_holds") or column in ("hypothesis", "snr_ordered", "K_condition_paper"):
            frame[column] = frame[column].astype("boolean")
    return frame


def run_theory_suite(path: str | Path) -> pd.DataFrame:
    """Load a theory suite file and return :func:`evaluate_grid`'s frame for its [theory] grid."""
    suite = load_theory_suite(path)
    return evaluate_grid(suite["grid"], f"{path}: [theory]")
