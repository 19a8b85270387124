"""bench.analysis.theory: the numeric optimum of Section 3's model against independent computations, and the suite file.

Independent references used here (none calls bench.analysis.theory's error integrals):

* a brute-force grid over b of the weighted adversarial risk, written below with ``math.erf`` from explicit
  vectors w = 1, μ = (η, …, η) and the worst-case perturbation of each norm ball;
* the textbook Bayes threshold. Project onto u = 1ᵀx/√d: u | y ~ N(y·√d·η, σ²). Predict +1 iff
  π₊·φ((u − m)/σ) > ρ·π₋·φ((u + m)/σ), m = √d·η, i.e. iff 2um/σ² > log(ρπ₋/π₊) = log(ρ/K), i.e.
  u > σ²·log(ρ/K)/(2m). In the units of w = 1 (b = √d·u): **b* = σ²·log(ρ/K)/(2η)**, independent of d. An l∞
  adversary of radius ε moves every point ε‖1‖₁ = εd towards the boundary, which is η → η − ε in this formula;
* symmetry: K = 1, ρ = 1 gives b* = 0, and ρ = K gives b* = 0 (the weights cancel the priors).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.errors import BenchError
from bench.report.theory_render import render_theory
from bench.analysis.theory import (
    check_theorems,
    classwise_errors,
    closed_form_bias,
    evaluate_grid,
    load_theory_suite,
    monte_carlo_bias,
    monte_carlo_tolerance,
    optimal_bias,
    run_theory_suite,
    theorem_pairs,
)

SUITE = "suites/theory.toml"


# -- independent references ---------------------------------------------------------------------------------------
def _phi_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _risk_by_hand(b: float, d: int, eta: float, sigma: float, K: float, rho: float, eps: float, norm: str) -> float:
    """ρ·π₋·P(adv error | y=-1) + π₊·P(adv error | y=+1), from explicit vectors."""
    w = np.ones(d)
    mu = np.full(d, eta)
    # The worst perturbation δ (‖δ‖ <= ε) lowers y·wᵀ(x+δ) by max_δ wᵀδ = ε·(dual norm of w).
    shift = eps * (np.abs(w).sum() if norm == "linf" else np.linalg.norm(w))
    mean_plus = float(w @ mu) - shift  # E[wᵀx] − shift for y = +1; y = -1 mirrors it
    std = sigma * float(np.linalg.norm(w))
    err_plus = _phi_cdf((b - mean_plus) / std)  # P(wᵀx − shift − b <= 0 | y = +1)
    err_minus = 1.0 - _phi_cdf((b + mean_plus) / std)  # P(wᵀx + shift − b >= 0 | y = -1)
    return rho / (K + 1) * err_minus + K / (K + 1) * err_plus


def _brute_force_bias(d, eta, sigma, K, rho, eps, norm):
    """Grid search then two finer grids around the best point; resolution ~1e-6 of the projected std."""
    s = sigma * math.sqrt(d)
    lo, hi = -15 * s - d * eta, 15 * s + d * eta
    for _ in range(3):
        grid = np.linspace(lo, hi, 2001)
        risks = [_risk_by_hand(b, d, eta, sigma, K, rho, eps, norm) for b in grid]
        i = int(np.argmin(risks))
        step = grid[1] - grid[0]
        lo, hi = grid[i] - 2 * step, grid[i] + 2 * step
    return float(grid[i]), float(step)


def _bayes_bias(eta: float, sigma: float, K: float, rho: float, eps: float = 0.0) -> float:
    """b* = σ²·log(ρ/K)/(2η') with η' = η − ε (l∞) — the textbook threshold in the units of w = 1."""
    return sigma**2 * math.log(rho / K) / (2 * (eta - eps))


# -- the numeric optimum ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d, eta, sigma, K, rho, eps, norm", [
    (1, 1.0, 1.0, 10, 1, 0.0, "linf"),
    (5, 0.5, 1.0, 10, 1, 0.1, "linf"),
    (10, 0.3, 0.7, 100, 3, 0.05, "linf"),
    (4, 0.5, 1.0, 20, 2, 0.4, "l2"),
    (3, 1.0, 2.0, 1, 10, 0.0, "linf"),
])
def test_numeric_optimum_matches_brute_force_grid(d, eta, sigma, K, rho, eps, norm):
    brute, step = _brute_force_bias(d, eta, sigma, K, rho, eps, norm)
    assert optimal_bias(d, eta, sigma, K, rho, eps, norm) == pytest.approx(brute, abs=3 * step + 1e-6)


@pytest.mark.parametrize("d, eta, sigma, eps", [(1, 0.5, 1.0, 0.0), (10, 1.0, 0.5, 0.3), (100, 0.2, 2.0, 0.1)])
def test_balanced_symmetric_case_has_zero_bias(d, eta, sigma, eps):
    b = optimal_bias(d, eta, sigma, K=1, rho=1, eps=eps)
    assert abs(b) < 1e-6 * math.sqrt(d) * sigma


@pytest.mark.parametrize("d, eta, sigma, K, rho", [
    (1, 1.0, 1.0, 10, 1), (10, 0.5, 1.0, 100, 1), (100, 0.25, 1.0, 10, 3), (7, 2.0, 0.5, 1, 50), (30, 0.1, 1.5, 1000, 1),
])
def test_natural_optimum_is_the_bayes_threshold(d, eta, sigma, K, rho):
    assert optimal_bias(d, eta, sigma, K, rho) == pytest.approx(_bayes_bias(eta, sigma, K, rho), rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("d, eta, sigma, K, rho, eps", [(10, 0.5, 1.0, 10, 1, 0.1), (1, 0.25, 1.0, 100, 1, 0.1)])
def test_linf_attack_is_the_natural_problem_at_eta_minus_eps(d, eta, sigma, K, rho, eps):
    # The second case sits 15 projected stds from a class mean: a cdf near 1 must not hide the optimum.
    assert optimal_bias(d, eta, sigma, K, rho, eps) == pytest.approx(_bayes_bias(eta, sigma, K, rho, eps), rel=1e-6)


@pytest.mark.parametrize("K", [2, 10, 100])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_reweighting_by_K_undoes_the_prior(K, eps):
    assert abs(optimal_bias(10, 0.5, 1.0, K, rho=K, eps=eps)) < 1e-6 * math.sqrt(10)


def test_attack_that_closes_the_gap_gives_a_one_class_rule():
    # eps >= eta under l∞: no finite b beats predicting the heavier-weighted class everywhere.
    assert optimal_bias(10, 0.5, 1.0, K=10, rho=1, eps=0.5) == -math.inf  # predict the majority (+1)
    assert optimal_bias(10, 0.5, 1.0, K=10, rho=100, eps=0.7) == math.inf  # ρπ₋ > π₊: predict the minority
    assert math.isnan(optimal_bias(10, 0.5, 1.0, K=10, rho=10, eps=0.7))  # a tie: every b is as good
    assert monte_carlo_bias(10, 0.5, 1.0, K=10, rho=1, eps=0.7, n=2000) == -math.inf
    errors = classwise_errors(10, 0.5, 1.0, 10, 1, -math.inf, 0.7)
    assert (errors["adv_err_minority"], errors["adv_err_majority"]) == (1.0, 0.0)


def test_bad_arguments_raise_bench_error():
    with pytest.raises(BenchError, match="sigma = 0"):
        optimal_bias(1, 1.0, 0, 10, 1)
    with pytest.raises(BenchError, match="K = 0.5"):
        optimal_bias(1, 1.0, 1.0, 0.5, 1)
    with pytest.raises(BenchError, match="norm = 'l1'.*valid: linf, l2"):
        optimal_bias(1, 1.0, 1.0, 2, 1, 0.1, norm="l1")


# -- the paper's closed form --------------------------------------------------------------------------------------
def test_closed_form_is_lemma_3_1_as_printed():
    assert closed_form_bias(10, 1.0, 2.0, 10, 1) == pytest.approx(0.5 * math.log(1 / 10) * 10 * 4 / 1.0)
    assert closed_form_bias(3, 0.5, 1.0, 7, 7) == 0.0


@pytest.mark.parametrize("d", [1, 10, 100])
def test_closed_form_is_d_times_the_numeric_optimum(d):
    # The printed formula carries a factor d (its derivation uses std dσ for a sum of d coordinates, not √d·σ).
    ratio = optimal_bias(d, 0.5, 1.0, 10, 1) / closed_form_bias(d, 0.5, 1.0, 10, 1)
    assert ratio == pytest.approx(1 / d, rel=1e-6)


# -- Monte Carlo --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d, eta, sigma, K, rho, eps", [
    (1, 0.5, 1.0, 1, 1, 0.1), (10, 0.5, 1.0, 10, 1, 0.0), (10, 0.25, 0.5, 10, 100, 0.1), (4, 0.5, 1.0, 5, 1, 0.3),
])
def test_monte_carlo_agrees_with_numeric_optimum(d, eta, sigma, K, rho, eps):
    n = 40_000
    b = optimal_bias(d, eta, sigma, K, rho, eps)
    tol = monte_carlo_tolerance(d, eta, sigma, K, rho, eps, n=n, b=b)
    assert 0 < tol < math.sqrt(d) * sigma  # informative at this n
    assert abs(monte_carlo_bias(d, eta, sigma, K, rho, eps, n=n, seed=1) - b) <= tol


def test_monte_carlo_tolerance_shrinks_like_n_to_the_minus_third():
    t1 = monte_carlo_tolerance(10, 0.5, 1.0, 10, 1, n=1000)
    t8 = monte_carlo_tolerance(10, 0.5, 1.0, 10, 1, n=8000)
    assert t1 / t8 == pytest.approx(2.0)


def test_monte_carlo_sides_with_the_numeric_optimum_against_the_paper():
    d, eta, sigma, K, rho, n = 10, 0.5, 1.0, 10, 1, 40_000
    mc = monte_carlo_bias(d, eta, sigma, K, rho, n=n, seed=2)
    tol = monte_carlo_tolerance(d, eta, sigma, K, rho, n=n)
    assert abs(mc - optimal_bias(d, eta, sigma, K, rho)) <= tol
    assert abs(mc - closed_form_bias(d, eta, sigma, K, rho)) > 10 * tol


# -- class-wise errors and the theorems ---------------------------------------------------------------------------
def test_classwise_errors_move_as_the_paper_says():
    d, eta, sigma, K, eps = 10, 0.5, 1.0, 10, 0.1
    plain = classwise_errors(d, eta, sigma, K, 1, optimal_bias(d, eta, sigma, K, 1, eps), eps)
    reweighted = classwise_errors(d, eta, sigma, K, K, optimal_bias(d, eta, sigma, K, K, eps), eps)
    # Without reweighting the minority (-1) pays; the attack makes every error larger; ρ = K moves error from the
    # minority to the majority.
    assert plain["adv_err_minority"] > plain["adv_err_majority"]
    assert plain["adv_err_minority"] > plain["nat_err_minority"]
    assert plain["adv_err_majority"] > plain["nat_err_majority"]
    assert reweighted["adv_err_minority"] < plain["adv_err_minority"]
    assert reweighted["adv_err_majority"] > plain["adv_err_majority"]
    assert reweighted["adv_err_minority"] == pytest.approx(reweighted["adv_err_majority"])
    by_hand = _risk_by_hand(0.3, d, eta, sigma, K, 2.0, eps, "linf")
    assert classwise_errors(d, eta, sigma, K, 2.0, 0.3, eps)["train_risk"] == pytest.approx(by_hand, rel=1e-12)


@pytest.mark.parametrize("d, eta, K, eps", [(1, 0.5, 10, 0.1), (10, 0.5, 100, 0.1), (100, 0.25, 10, 0.1)])
def test_theorems_hold_for_natural_versus_adversarial_training(d, eta, K, eps):
    result = check_theorems(d, K, eta, 1.0, eta, 1.0, eps1=0.0, eps2=eps)
    assert result["hypothesis"] and result["snr_ordered"]
    assert result["numeric_thm31_holds"] and result["numeric_thm32_holds"]
    assert result["numeric_thm31_lhs"] < result["numeric_thm31_rhs"]
    assert result["numeric_thm32_lhs"] < result["numeric_thm32_rhs"]


def test_theorem_3_1_fails_for_equal_eta_over_sigma_despite_larger_S():
    # S1 = 0.25/0.5² = 1 > S2 = 0.5/1² = 0.5, but η/σ = 0.5 for both: the classifiers' errors are identical.
    result = check_theorems(10, 10, 0.25, 0.5, 0.5, 1.0)
    assert result["hypothesis"] and not result["snr_ordered"]
    assert result["numeric_thm31_lhs"] == pytest.approx(result["numeric_thm31_rhs"], rel=1e-9)
    assert not result["numeric_thm31_holds"] and not result["numeric_thm32_holds"]


def test_closed_form_makes_theorem_3_1_a_tie_where_the_numeric_optimum_does_not():
    # d = 100: the printed b is 100× too far, both classifiers then misclassify the whole minority.
    result = check_theorems(100, 10, 0.25, 1.0, 0.25, 1.0, eps1=0.0, eps2=0.1)
    assert result["closed_form_thm31_lhs"] == result["closed_form_thm31_rhs"] == pytest.approx(1.0)
    assert not result["closed_form_thm31_holds"]
    assert result["numeric_thm31_holds"]


# -- grids, suite files, rendering --------------------------------------------------------------------------------
SMALL = {"d": [1, 10], "eta": [0.5], "sigma": [1.0], "K": [1, 10], "rho": [1, 10], "eps": [0.0, 0.1],
         "monte_carlo_samples": 5000}


def test_evaluate_grid_rows_and_flags():
    frame = evaluate_grid(SMALL)
    assert len(frame) == 16
    row = frame.set_index(["d", "K", "rho", "eps"]).loc[(10, 10.0, 1.0, 0.0)]
    assert row["numeric_bias"] == pytest.approx(_bayes_bias(0.5, 1.0, 10, 1))
    assert row["closed_form_bias"] == pytest.approx(10 * row["numeric_bias"])
    assert not row["agrees_with_paper"] and row["verdict"].startswith("disagrees")
    assert row["closed_form_excess_risk"] > 0
    d1 = frame[(frame.d == 1) & (frame.eps == 0.0)]
    assert d1["agrees_with_paper"].all()
    assert frame.loc[frame.eps == 0.0, "thm31_numeric"].isna().all()  # theorem pairing needs eps > 0
    assert frame.loc[(frame.eps == 0.1) & (frame.K == 10), "thm31_numeric"].all()
    assert frame["monte_carlo_agrees"].dropna().all()


def test_theorem_pairs_flags_the_S_versus_snr_orders():
    frame = theorem_pairs({"d": [10], "eta": [0.25, 0.5], "sigma": [0.5, 1.0], "K": [1, 10], "rho": [1]})
    assert set(frame["K"]) == {10.0} and frame["hypothesis"].all()
    assert frame.loc[frame.snr_ordered, "numeric_thm31_holds"].all()
    assert not frame.loc[~frame.snr_ordered, "numeric_thm31_holds"].any()


def _write(tmp_path, text: str):
    path = tmp_path / "t.toml"
    path.write_text(text)
    return path


GOOD = """name = "t"
kind = "theory"
description = "Section 3"
[theory]
d = [1, 3]
eta = ["1/2"]
sigma = [1.0]
K = [10]
rho = [1, 10]
eps = [0.0, "1/10"]
monte_carlo_samples = 3000
"""


def test_run_theory_suite_on_a_small_file(tmp_path):
    frame = run_theory_suite(_write(tmp_path, GOOD))
    assert isinstance(frame, pd.DataFrame) and len(frame) == 8
    assert set(frame["eps"]) == {0.0, 0.1} and set(frame["eta"]) == {0.5}


def test_shipped_suite_file_is_valid():
    suite = load_theory_suite(SUITE)
    assert suite["name"] == "theory"
    for phrase in ("Section 3", "Lemma 3.1", "Theorems 3.1 and 3.2"):
        assert phrase.replace(" ", "") in suite["description"].replace(" ", "").replace("\n", "")
    assert suite["grid"]["d"] == [1, 10, 100]


def test_a_theory_suite_is_validated_from_the_file_already_read():
    """``bench run`` reads a suite file once (bench.suite.read_suite_file); the theory reader takes that document."""
    from bench.analysis import theory_suite
    from bench.suite import read_suite_file

    file = read_suite_file(SUITE)
    assert file.kind == "theory"
    assert load_theory_suite(file) == load_theory_suite(SUITE) == theory_suite.load_theory_suite(SUITE)


@pytest.mark.slow
def test_shipped_suite_runs():
    frame = run_theory_suite(SUITE)
    assert len(frame) == 216 and frame["monte_carlo_agrees"].dropna().all()


@pytest.mark.parametrize("change, message", [
    (("sigma = [1.0]", "sigma = [0.0]"), r"\[theory\]: sigma = 0.0 is not allowed; sigma must be numbers > 0"),
    (("K = [10]", "K = [0.5]"), r"\[theory\]: K = 0.5 is not allowed; K must be numbers >= 1"),
    (("d = [1, 3]", "d = [1.5]"), r"\[theory\]: d = 1.5 is not allowed; d must be integers >= 1"),
    (("rho = [1, 10]", "rho = [-1]"), r"\[theory\]: rho = -1 is not allowed"),
    (("eps = [0.0, \"1/10\"]", "eps = [\"x\"]"), r"\[theory\]: eps: expected a number"),
    (("eps = [0.0, \"1/10\"]", "eps = []"), r"\[theory\]: eps = \[\]: must be a non-empty list"),
    (("rho = [1, 10]", "rhoo = [1]"), r"unknown key 'rhoo' \(did you mean 'rho'\?\); valid: d, eta, sigma, K, rho"),
    (("rho = [1, 10]", "rho = [1]\nnorm = \"l1\""), r"norm = 'l1' is unknown; valid: linf, l2"),
    (("monte_carlo_samples = 3000", "monte_carlo_samples = -1"), r"monte_carlo_samples = -1 is not allowed"),
    (("K = [10]\n", ""), r"\[theory\]: missing key 'K'"),
    (("kind = \"theory\"", "kind = \"grid\""), r"kind = 'grid'; a theory suite needs kind = \"theory\""),
    (("description", "descripton"), r"unknown key 'descripton' \(did you mean 'description'\?\); valid: name, kind"),
    (("[theory]", "[theory"), r"malformed TOML"),
])
def test_bad_suite_files_name_file_key_and_value(tmp_path, change, message):
    path = _write(tmp_path, GOOD.replace(*change))
    with pytest.raises(BenchError, match=message) as info:
        run_theory_suite(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_suite_file(tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        run_theory_suite(tmp_path / "nope.toml")


def test_render_theory_formats():
    frame = evaluate_grid({**SMALL, "d": [1], "monte_carlo_samples": 0})
    frame.loc[0, "verdict"] = "<script>x</script> | y"
    html = render_theory(frame, "html")
    assert html.startswith('<table class="theory">') and "&lt;script&gt;" in html and "<script>" not in html
    md = render_theory(frame, "md")
    assert md.splitlines()[0].startswith("| d | eta |") and len(md.splitlines()) == len(frame) + 2
    assert "\\|" in md
    csv = render_theory(frame, "csv")
    assert csv.splitlines()[0].split(",") == list(frame.columns) and len(csv.splitlines()) == len(frame) + 1
    with pytest.raises(BenchError, match="unknown format 'pdf'; valid: html, md, csv"):
        render_theory(frame, "pdf")
