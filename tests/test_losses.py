"""The loss formulas of methods.md §3, checked against values computed independently.

Every expected value here comes either from a hand calculation on a tiny input or from a naive
re-implementation written with plain Python loops and the ``math`` module — never from the function under
test, and never from ``torch.nn.functional.cross_entropy`` with weights.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from methods import losses

# --------------------------------------------------------------------------------------------------------------
# Naive references (plain Python floats)
# --------------------------------------------------------------------------------------------------------------


def _rows(t: torch.Tensor) -> list[list[float]]:
    return [[float(v) for v in row] for row in t.detach().cpu().tolist()]


def _labels(t: torch.Tensor) -> list[int]:
    return [int(v) for v in t.tolist()]


def naive_ce_terms(logits, targets) -> list[float]:
    """CE_i = -log softmax(z_i)[y_i], with a max shift for stability."""
    out = []
    for row, y in zip(_rows(logits), _labels(targets)):
        top = max(row)
        log_norm = top + math.log(sum(math.exp(v - top) for v in row))
        out.append(log_norm - row[y])
    return out


def naive_weighted_ce(logits, targets, weight=None) -> float:
    """Σ w_{y_i} CE_i / Σ w_{y_i} (PyTorch's weighted mean)."""
    ys = _labels(targets)
    w = [1.0] * len(_rows(logits)[0]) if weight is None else [float(v) for v in weight.tolist()]
    ce = naive_ce_terms(logits, targets)
    return sum(w[y] * c for y, c in zip(ys, ce)) / sum(w[y] for y in ys)


def naive_focal(logits, targets, weight=None, gamma=1.0) -> float:
    """ℓ_i = w_{y_i} CE_i, p_i = exp(-ℓ_i), L = (1/N) Σ (1 - p_i)^γ ℓ_i."""
    ys = _labels(targets)
    w = [1.0] * len(_rows(logits)[0]) if weight is None else [float(v) for v in weight.tolist()]
    total = 0.0
    for y, ce in zip(ys, naive_ce_terms(logits, targets)):
        ell = w[y] * ce
        total += (1.0 - math.exp(-ell)) ** gamma * ell
    return total / len(ys)


def naive_margins(counts, max_m=0.5) -> list[float]:
    n_min = min(counts)
    return [max_m * (n_min / n) ** 0.25 for n in counts]


def naive_ldam(logits, targets, counts, weight=None, max_m=0.5, s=30.0) -> float:
    m = naive_margins([float(c) for c in counts], max_m)
    rows = _rows(logits)
    ys = _labels(targets)
    shifted = []
    for row, y in zip(rows, ys):
        r = [s * v for v in row]
        r[y] = s * (row[y] - m[y])
        shifted.append(r)
    return naive_weighted_ce(torch.tensor(shifted, dtype=torch.float64), targets, weight)


def naive_separation(features, targets, tau=0.07) -> float:
    """Supervised contrastive loss, one view, written as the double loop of methods.md §3."""
    z = _rows(features)
    ys = _labels(targets)
    n = len(z)
    sim = [[sum(a * b for a, b in zip(z[i], z[j])) / tau for j in range(n)] for i in range(n)]
    per_anchor = []
    for i in range(n):
        partners = [p for p in range(n) if p != i and ys[p] == ys[i]]
        if not partners:
            continue  # left out of the mean, but still a negative for the others (below)
        denominator = sum(math.exp(sim[i][a]) for a in range(n) if a != i)
        per_anchor.append(-sum(math.log(math.exp(sim[i][p]) / denominator) for p in partners) / len(partners))
    return sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


def _random_batch(n=12, c=5, seed=0, scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, c, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, c, (n,), generator=gen)
    return logits, targets


def _unit(n, d, seed):
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=gen, dtype=torch.float64), dim=1)


WEIGHTS5 = torch.tensor([1.0, 2.5, 0.4, 7.0, 1.3], dtype=torch.float64)
STEP100 = [5000] * 5 + [50] * 5
EXP100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]

# --------------------------------------------------------------------------------------------------------------
# Focal
# --------------------------------------------------------------------------------------------------------------


def test_focal_hand_values():
    # Two equal logits: CE = ln 2, p = 1/2.
    logits = torch.zeros(1, 2, dtype=torch.float64)
    target = torch.tensor([0])
    ln2 = math.log(2.0)
    assert losses.focal_loss(logits, target, gamma=1.0).item() == pytest.approx(0.5 * ln2, rel=1e-12)
    assert losses.focal_loss(logits, target, gamma=2.0).item() == pytest.approx(0.25 * ln2, rel=1e-12)
    # Weight 2 on the true class: ℓ = 2 ln 2, p = 1/4.
    w = torch.tensor([2.0, 1.0], dtype=torch.float64)
    assert losses.focal_loss(logits, target, w, gamma=1.0).item() == pytest.approx(0.75 * 2 * ln2, rel=1e-12)
    assert losses.focal_loss(logits, target, w, gamma=2.0).item() == pytest.approx(0.5625 * 2 * ln2, rel=1e-12)


def test_focal_is_plain_mean_over_batch_not_weight_sum():
    # Two samples, weights 3 and 1 on their classes: (1/2)(f(3 ln2) + f(ln2)), NOT divided by 3 + 1.
    logits = torch.zeros(2, 2, dtype=torch.float64)
    targets = torch.tensor([0, 1])
    w = torch.tensor([3.0, 1.0], dtype=torch.float64)
    ln2 = math.log(2.0)
    f = lambda ell: (1 - math.exp(-ell)) * ell  # noqa: E731
    expected = 0.5 * (f(3 * ln2) + f(ln2))
    assert losses.focal_loss(logits, targets, w, gamma=1.0).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("gamma", [1.0, 2.0])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_focal_matches_naive(gamma, weighted, seed):
    logits, targets = _random_batch(seed=seed)
    w = WEIGHTS5 if weighted else None
    got = losses.focal_loss(logits, targets, w, gamma=gamma).item()
    assert got == pytest.approx(naive_focal(logits, targets, w, gamma), rel=1e-10, abs=1e-12)


def test_focal_default_gamma_is_one():
    logits, targets = _random_batch(seed=3)
    assert losses.focal_loss(logits, targets, WEIGHTS5).item() == pytest.approx(
        naive_focal(logits, targets, WEIGHTS5, gamma=1.0), rel=1e-10
    )


def test_focal_gamma_zero_is_mean_of_weighted_ce():
    logits, targets = _random_batch(seed=4)
    ce = naive_ce_terms(logits, targets)
    ys = _labels(targets)
    expected = sum(float(WEIGHTS5[y]) * c for y, c in zip(ys, ce)) / len(ys)
    assert losses.focal_loss(logits, targets, WEIGHTS5, gamma=0.0).item() == pytest.approx(expected, rel=1e-10)


def test_focal_gradient_matches_finite_differences():
    logits, targets = _random_batch(n=6, c=4, seed=5)
    logits.requires_grad_(True)
    w = torch.tensor([1.0, 3.0, 0.5, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: losses.focal_loss(z, targets, w, gamma=2.0), (logits,))


# --------------------------------------------------------------------------------------------------------------
# Cross-entropy and scale (in)variance
# --------------------------------------------------------------------------------------------------------------


def test_cross_entropy_hand_value():
    # logits [ln 1, ln 3] -> softmax [1/4, 3/4]; targets 0 (CE ln 4) and 1 (CE ln 4/3); weights 2 and 1.
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]], dtype=torch.float64)
    targets = torch.tensor([0, 1])
    w = torch.tensor([2.0, 1.0], dtype=torch.float64)
    expected = (2 * math.log(4.0) + 1 * math.log(4.0 / 3.0)) / 3.0
    assert losses.cross_entropy(logits, targets, w).item() == pytest.approx(expected, rel=1e-12)
    assert losses.cross_entropy(logits, targets).item() == pytest.approx(
        (math.log(4.0) + math.log(4.0 / 3.0)) / 2, rel=1e-12
    )


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_cross_entropy_matches_naive(seed, weighted):
    logits, targets = _random_batch(seed=seed)
    w = WEIGHTS5 if weighted else None
    got = losses.cross_entropy(logits, targets, w).item()
    assert got == pytest.approx(naive_weighted_ce(logits, targets, w), rel=1e-10)


@pytest.mark.parametrize("factor", [0.01, 3.0, 78.89])
def test_weighted_ce_and_ldam_invariant_to_weight_scale(factor):
    logits, targets = _random_batch(n=10, c=10, seed=6, scale=0.3)
    w = torch.linspace(1.0, 5.0, 10, dtype=torch.float64)
    assert losses.cross_entropy(logits, targets, factor * w).item() == pytest.approx(
        losses.cross_entropy(logits, targets, w).item(), rel=1e-10
    )
    assert losses.ldam_loss(logits, targets, EXP100, factor * w).item() == pytest.approx(
        losses.ldam_loss(logits, targets, EXP100, w).item(), rel=1e-10
    )


@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_focal_depends_on_weight_scale(gamma):
    logits, targets = _random_batch(seed=7)
    base = losses.focal_loss(logits, targets, WEIGHTS5, gamma=gamma).item()
    scaled = losses.focal_loss(logits, targets, 4.0 * WEIGHTS5, gamma=gamma).item()
    assert scaled == pytest.approx(naive_focal(logits, targets, 4.0 * WEIGHTS5, gamma), rel=1e-10)
    assert abs(scaled - base) > 1e-3 * abs(base)
    assert scaled > base  # larger ℓ_i everywhere -> larger (1 - p_i)^γ ℓ_i


# --------------------------------------------------------------------------------------------------------------
# LDAM
# --------------------------------------------------------------------------------------------------------------


def test_ldam_margins_hand_values():
    # n_min / n_c = 1/100 -> (1/100)^{1/4} = 1/sqrt(10).
    m = losses.ldam_margins([100, 1])
    assert m.tolist() == pytest.approx([0.5 / math.sqrt(10.0), 0.5], rel=1e-6)
    m = losses.ldam_margins(STEP100)
    assert m.tolist() == pytest.approx([0.5 / math.sqrt(10.0)] * 5 + [0.5] * 5, rel=1e-6)
    assert losses.ldam_margins([16, 1], max_m=1.0).tolist() == pytest.approx([0.5, 1.0], rel=1e-6)
    assert losses.ldam_margins([7, 7, 7]).tolist() == pytest.approx([0.5, 0.5, 0.5], rel=1e-6)


@pytest.mark.parametrize("counts", [STEP100, EXP100, [5000, 50], [3, 900, 27]], ids=str)
@pytest.mark.parametrize("max_m", [0.5, 0.1])
def test_ldam_margins_match_formula(counts, max_m):
    m = losses.ldam_margins(torch.tensor(counts), max_m=max_m)
    assert m.shape == (len(counts),)
    assert m.tolist() == pytest.approx(naive_margins(counts, max_m), rel=1e-6)
    assert max(m.tolist()) == pytest.approx(max_m, rel=1e-6)  # the rarest class gets max_m


def test_ldam_loss_hand_value():
    # logits [0, 0], target 1 (the rare class, margin 0.5): s·[0, -0.5] = [0, -15] -> CE = 15 + log(1 + e^-15).
    logits = torch.zeros(1, 2, dtype=torch.float64)
    got = losses.ldam_loss(logits, torch.tensor([1]), [100, 1]).item()
    assert got == pytest.approx(15.0 + math.log1p(math.exp(-15.0)), rel=1e-7)
    # target 0 (margin 0.5/sqrt(10)): s·[-m0, 0] -> CE = log(1 + e^{s·m0}).
    m0 = 0.5 / math.sqrt(10.0)
    got = losses.ldam_loss(logits, torch.tensor([0]), [100, 1], s=2.0).item()
    assert got == pytest.approx(math.log1p(math.exp(2.0 * m0)), rel=1e-6)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("max_m,s", [(0.5, 30.0), (0.3, 10.0), (0.0, 1.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_ldam_loss_matches_naive(weighted, max_m, s, seed):
    logits, targets = _random_batch(n=16, c=10, seed=seed, scale=0.3)
    w = torch.linspace(0.5, 4.0, 10, dtype=torch.float64) if weighted else None
    got = losses.ldam_loss(logits, targets, EXP100, w, max_m=max_m, s=s).item()
    # Margins are float32 in the code: allow ~1e-7 relative on them.
    assert got == pytest.approx(naive_ldam(logits, targets, EXP100, w, max_m, s), rel=1e-6, abs=1e-8)


def test_ldam_zero_margin_unit_scale_is_plain_ce():
    logits, targets = _random_batch(seed=8)
    assert losses.ldam_loss(logits, targets, [1, 2, 3, 4, 5], max_m=0.0, s=1.0).item() == pytest.approx(
        naive_weighted_ce(logits, targets), rel=1e-10
    )


# --------------------------------------------------------------------------------------------------------------
# Separation loss (supervised contrastive)
# --------------------------------------------------------------------------------------------------------------


def test_separation_hand_value_two_pairs():
    # Orthogonal unit features e1, e1, e2, e2 (classes 0, 0, 1, 1), τ = 1.
    # Anchor 0: S = [1, 1, 0, 0]; partner 1; denominator e + 1 + 1 -> ℓ = -log(e / (e + 2)). Same for all.
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    expected = -math.log(math.e / (math.e + 2.0))
    assert losses.separation_loss(z, y, temperature=1.0).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "targets",
    [
        [0, 0, 1, 1, 2, 2, 0, 1],  # every anchor has partners
        [0, 0, 1, 2, 2, 2, 3, 4],  # singletons 1, 3, 4
        [5, 5, 5, 5, 5, 5],  # one class
        [0, 1, 0, 2, 3, 4, 5, 6, 7],  # one pair, seven singletons
    ],
    ids=["all-paired", "some-singletons", "one-class", "one-pair"],
)
@pytest.mark.parametrize("tau", [0.07, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_separation_matches_naive_double_loop(targets, tau, seed):
    y = torch.tensor(targets)
    z = _unit(len(targets), 6, seed)
    got = losses.separation_loss(z, y, temperature=tau).item()
    assert got == pytest.approx(naive_separation(z, y, tau), rel=1e-9, abs=1e-12)


def test_separation_stays_float32_under_bf16_autocast():
    """Under bf16 autocast (precision "auto" on CUDA) the similarity product would round to 3 significant digits
    before the softmax; the loss is computed in float32 and equals the double loop."""
    z = _unit(32, 16, seed=3).float()
    targets = torch.tensor([i % 6 for i in range(32)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = losses.separation_loss(z, targets)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(naive_separation(z.double(), targets), rel=1e-5)


def test_separation_default_temperature_is_0_07():
    y = torch.tensor([0, 0, 1, 1, 2, 3])
    z = _unit(6, 4, 3)
    assert losses.separation_loss(z, y).item() == pytest.approx(naive_separation(z, y, 0.07), rel=1e-9)
    assert losses.separation_loss(z, y).item() != pytest.approx(naive_separation(z, y, 0.5), rel=1e-3)


def test_separation_singletons_still_count_as_negatives():
    # The same paired anchors with and without two extra singleton anchors: the loss must change (extra
    # negatives in the denominators), and match the naive version both times.
    z = _unit(6, 5, 4)
    y = torch.tensor([0, 0, 1, 1, 7, 8])
    with_singletons = losses.separation_loss(z, y).item()
    without = losses.separation_loss(z[:4], y[:4]).item()
    assert with_singletons == pytest.approx(naive_separation(z, y), rel=1e-9)
    assert without == pytest.approx(naive_separation(z[:4], y[:4]), rel=1e-9)
    assert with_singletons > without  # more terms in every denominator


def test_separation_singletons_left_out_of_the_mean():
    # Hand check with τ = 1: anchors 0, 1 share class 0 (identical features e1); anchor 2 is a singleton (e2).
    # ℓ_0 = ℓ_1 = -log(e / (e + 1)); mean over 2 anchors, not 3.
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 9])
    expected = -math.log(math.e / (math.e + 1.0))
    assert losses.separation_loss(z, y, temperature=1.0).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n", [1, 5])
def test_separation_without_partners_is_zero_and_differentiable(n):
    raw = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
    z = F.normalize(raw, dim=1)
    y = torch.arange(n)
    loss = losses.separation_loss(z, y)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert raw.grad is not None
    assert torch.equal(raw.grad, torch.zeros_like(raw))


def test_separation_gradient_matches_finite_differences():
    raw = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9)).requires_grad_(True)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 3])
    assert torch.autograd.gradcheck(
        lambda r: losses.separation_loss(F.normalize(r, dim=1), y, temperature=0.3), (raw,)
    )


def test_separation_is_stable_for_large_similarities():
    # Unnormalised features with norm 30: S up to 30²/0.07 ≈ 12857; the row-max shift keeps it finite.
    raw = (30.0 * _unit(8, 4, 10).float()).requires_grad_(True)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss = losses.separation_loss(raw, y)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(raw.grad).all()


# --------------------------------------------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------------------------------------------

LOGITS = torch.zeros(4, 3)
TARGETS = torch.tensor([0, 1, 2, 0])


@pytest.mark.parametrize(
    "call",
    [
        lambda lg, t, w: losses.cross_entropy(lg, t, w),
        lambda lg, t, w: losses.focal_loss(lg, t, w),
        lambda lg, t, w: losses.ldam_loss(lg, t, [10, 5, 1], w),
    ],
    ids=["ce", "focal", "ldam"],
)
def test_prediction_losses_reject_bad_shapes(call):
    with pytest.raises(ValueError, match=r"logits must be \[N, C\].*\(4, 3, 1\)"):
        call(LOGITS.unsqueeze(-1), TARGETS, None)
    with pytest.raises(ValueError, match=r"logits must be \[N, C\]"):
        call(torch.zeros(3), TARGETS[:3], None)
    with pytest.raises(ValueError, match=r"targets must be \[N\] with N = 4.*\(3,\)"):
        call(LOGITS, TARGETS[:3], None)
    with pytest.raises(ValueError, match=r"targets must be \[N\]"):
        call(LOGITS, TARGETS.unsqueeze(1), None)
    with pytest.raises(ValueError, match=r"weight must be \[C\] with C = 3.*\(4,\)"):
        call(LOGITS, TARGETS, torch.ones(4))
    with pytest.raises(ValueError, match=r"weight must be \[C\]"):
        call(LOGITS, TARGETS, torch.ones(3, 1))


@pytest.mark.parametrize("gamma", [-0.5, -1])
def test_focal_rejects_negative_gamma(gamma):
    with pytest.raises(ValueError, match=r"gamma must be >= 0"):
        losses.focal_loss(LOGITS, TARGETS, gamma=gamma)


def test_ldam_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"class_counts must have C = 3 entries, got 2"):
        losses.ldam_loss(LOGITS, TARGETS, [10, 1])
    with pytest.raises(ValueError, match=r"class_counts must be non-empty and positive"):
        losses.ldam_loss(LOGITS, TARGETS, [10, 0, 1])
    with pytest.raises(ValueError, match=r"class_counts must be non-empty and positive"):
        losses.ldam_margins([])
    with pytest.raises(ValueError, match=r"class_counts must be non-empty and positive"):
        losses.ldam_margins([5, -1])
    with pytest.raises(ValueError, match=r"max_m must be >= 0"):
        losses.ldam_margins([5, 1], max_m=-0.1)
    with pytest.raises(ValueError, match=r"s must be > 0"):
        losses.ldam_loss(LOGITS, TARGETS, [10, 5, 1], s=0.0)


def test_separation_rejects_bad_arguments():
    z = _unit(4, 3, 0)
    with pytest.raises(ValueError, match=r"features must be \[N, D\]"):
        losses.separation_loss(z.unsqueeze(0), TARGETS)
    with pytest.raises(ValueError, match=r"targets must be \[N\] with N = 4"):
        losses.separation_loss(z, TARGETS[:2])
    with pytest.raises(ValueError, match=r"temperature must be > 0"):
        losses.separation_loss(z, TARGETS, temperature=0.0)
