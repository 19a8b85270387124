"""Class weights (methods.md §1 and §3): class-balanced weights, the well/under split, fixed under-weights.

Expected values come from the formulas evaluated with the ``math`` module, or by hand.
"""

from __future__ import annotations

import pytest
import torch

from methods import weights

# CIFAR-10 class counts, class 0..9 (methods.md §1).
PROFILES = {
    "step-10": ([5000] * 5 + [500] * 5, 27_500),
    "step-100": ([5000] * 5 + [50] * 5, 25_250),
    "exp-10": ([5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500], 20_431),
    "exp-100": ([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50], 12_406),
}


def naive_cb(counts, beta=0.9999, normalize="max") -> list[float]:
    """w_c ∝ 1 / E_c with E_c = (1 − β^{n_c}) / (1 − β); max: w = E_max / E_c; sum: Σ w = C."""
    effective = [(1.0 - beta**n) / (1.0 - beta) for n in counts]
    raw = [1.0 / e for e in effective]
    if normalize == "max":
        e_max = effective[counts.index(max(counts))]
        return [e_max / e for e in effective]
    total = sum(raw)
    return [len(counts) * r / total for r in raw]


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_counts_are_the_spec_table(profile):
    counts, total = PROFILES[profile]
    assert len(counts) == 10 and sum(counts) == total


@pytest.mark.parametrize("normalize", ["max", "sum"])
@pytest.mark.parametrize("profile", PROFILES)
def test_class_balanced_matches_formula(profile, normalize):
    counts, _ = PROFILES[profile]
    w = weights.class_balanced(counts, normalize=normalize)
    assert w.shape == (10,) and w.dtype == torch.float32
    assert w.tolist() == pytest.approx(naive_cb(counts, 0.9999, normalize), rel=1e-6)


def test_class_balanced_hand_values():
    # The SRAT reference's "78": E(5000) / E(50) with β = 0.9999.
    step100 = weights.class_balanced(PROFILES["step-100"][0]).tolist()
    assert step100[:5] == pytest.approx([1.0] * 5, abs=1e-7)
    assert step100[5:] == pytest.approx([78.89] * 5, abs=0.005)
    step10 = weights.class_balanced(PROFILES["step-10"][0]).tolist()
    assert step10[5:] == pytest.approx([8.068] * 5, abs=0.001)
    exp100 = weights.class_balanced(PROFILES["exp-100"][0]).tolist()
    assert exp100[0] == pytest.approx(1.0) and exp100[-1] == pytest.approx(78.89, abs=0.005)
    exp10 = weights.class_balanced(PROFILES["exp-10"][0]).tolist()
    assert exp10[-1] == pytest.approx(8.068, abs=0.001)
    # Σ-normalised step-100: 10 / (5·1 + 5·78.89) and 78.89 times that.
    sum100 = weights.class_balanced(PROFILES["step-100"][0], normalize="sum").tolist()
    assert sum100[0] == pytest.approx(10 / (5 + 5 * 78.88987), rel=1e-5)
    assert sum100[9] == pytest.approx(78.88987 * 10 / (5 + 5 * 78.88987), rel=1e-5)


@pytest.mark.parametrize("profile", PROFILES)
def test_normalisations(profile):
    counts, _ = PROFILES[profile]
    w_max = weights.class_balanced(counts, normalize="max")
    w_sum = weights.class_balanced(counts, normalize="sum")
    assert w_max[0].item() == pytest.approx(1.0, abs=1e-7)  # class 0 is the most frequent
    assert w_max.min().item() == pytest.approx(1.0, abs=1e-7)
    assert w_sum.sum().item() == pytest.approx(10.0, rel=1e-6)
    # Same shape, different scale: the ratio is one constant.
    ratio = (w_sum / w_max).tolist()
    assert ratio == pytest.approx([ratio[0]] * 10, rel=1e-6)
    # Rarer classes weigh more (non-increasing along the non-increasing counts).
    assert all(a <= b + 1e-6 for a, b in zip(w_max.tolist(), w_max.tolist()[1:]))


def test_default_is_max_normalised_beta_0_9999():
    counts = PROFILES["exp-10"][0]
    assert weights.class_balanced(counts).tolist() == pytest.approx(naive_cb(counts, 0.9999, "max"), rel=1e-6)


def test_max_normalisation_when_most_frequent_is_not_class_0():
    counts = [50, 500, 5000, 5]
    w = weights.class_balanced(counts).tolist()
    assert w[2] == pytest.approx(1.0, abs=1e-7)
    assert w == pytest.approx(naive_cb(counts), rel=1e-6)


@pytest.mark.parametrize("beta", [0.9, 0.99, 0.999])
def test_other_betas(beta):
    counts = [300, 120, 40, 7]
    for normalize in ("max", "sum"):
        got = weights.class_balanced(counts, beta=beta, normalize=normalize).tolist()
        assert got == pytest.approx(naive_cb(counts, beta, normalize), rel=1e-6)


def test_beta_zero_gives_uniform_weights():
    # E_c = (1 − 0^{n}) / 1 = 1 for every class.
    assert weights.class_balanced([5000, 50, 3], beta=0.0).tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_class_balanced_accepts_a_tensor():
    counts = torch.tensor(PROFILES["step-100"][0])
    assert weights.class_balanced(counts).tolist() == pytest.approx(naive_cb(PROFILES["step-100"][0]), rel=1e-6)


@pytest.mark.parametrize("beta", [1.0, 1.5, -0.1])
def test_class_balanced_rejects_beta_out_of_range(beta):
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        weights.class_balanced([10, 1], beta=beta)


@pytest.mark.parametrize("normalize", ["l1", "MAX", ""])
def test_class_balanced_rejects_bad_normalize(normalize):
    with pytest.raises(ValueError, match=r"normalize must be one of .*max.*sum"):
        weights.class_balanced([10, 1], normalize=normalize)


@pytest.mark.parametrize("counts", [[10, 0, 3], [5, -2], [0]])
def test_class_balanced_rejects_non_positive_counts(counts):
    with pytest.raises(ValueError, match=r"class_counts must be positive"):
        weights.class_balanced(counts)


def test_class_balanced_rejects_empty_counts():
    with pytest.raises(ValueError, match=r"class_counts is empty"):
        weights.class_balanced([])


# --------------------------------------------------------------------------------------------------------------
# Well / under split and fixed under-weights
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_well_represented_cifar10_profiles(profile):
    assert weights.well_represented(PROFILES[profile][0]) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "counts,expected",
    [
        ([1, 10, 5, 7], [1, 3]),  # not sorted by class index
        ([5, 5, 5, 1], [0, 1]),  # ties: lower class index wins
        ([3, 3, 3, 3], [0, 1]),
        ([10, 1, 5], [0]),  # odd C: C // 2 = 1
        ([5000, 50], [0]),  # the paper's binary study
        ([50, 5000], [1]),
        ([7], []),
    ],
)
def test_well_represented_by_hand(counts, expected):
    assert weights.well_represented(counts) == expected
    assert weights.well_represented(torch.tensor(counts)) == expected


def test_well_represented_rejects_bad_counts():
    with pytest.raises(ValueError, match=r"class_counts must be positive"):
        weights.well_represented([5, 0])


def test_fixed_under_weight_step100():
    w = weights.fixed_under_weight(PROFILES["step-100"][0], 10)
    assert w.shape == (10,) and w.is_floating_point()
    assert w.tolist() == [1.0] * 5 + [10.0] * 5


@pytest.mark.parametrize("ratio", [1, 2, 10, 50, 100, 200, 0.5])
def test_fixed_under_weight_binary_study(ratio):
    assert weights.fixed_under_weight([5000, 50], ratio).tolist() == pytest.approx([1.0, float(ratio)])
    assert weights.fixed_under_weight([50, 5000], ratio).tolist() == pytest.approx([float(ratio), 1.0])


def test_fixed_under_weight_follows_counts_not_index():
    w = weights.fixed_under_weight([1, 10, 5, 7], 3.5).tolist()
    assert w == [3.5, 1.0, 3.5, 1.0]


@pytest.mark.parametrize("under_weight", [0, -1.0])
def test_fixed_under_weight_rejects_non_positive(under_weight):
    with pytest.raises(ValueError, match=r"under_weight must be positive"):
        weights.fixed_under_weight([10, 1], under_weight)


def test_fixed_under_weight_rejects_bad_counts():
    with pytest.raises(ValueError, match=r"class_counts must be positive"):
        weights.fixed_under_weight([10, -1], 2.0)


# --------------------------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------------------------


class _FakeMethod:
    beta = 0.9999
    normalize = "max"
    drw_epoch = 3
    under_weight = None


def test_schedules_registered():
    assert set(weights.SCHEDULES.names()) >= {"uniform", "cb", "drw"}


def test_schedules_by_hand():
    counts = PROFILES["step-100"][0]
    cb = naive_cb(counts)
    m = _FakeMethod()
    for epoch in range(6):
        assert weights.SCHEDULES.get("uniform")(m, epoch, counts) is None
        assert weights.SCHEDULES.get("cb")(m, epoch, counts).tolist() == pytest.approx(cb, rel=1e-6)
        drw = weights.SCHEDULES.get("drw")(m, epoch, counts)
        if epoch < 3:
            assert drw is None
        else:
            assert drw.tolist() == pytest.approx(cb, rel=1e-6)


def test_schedule_uses_fixed_under_weight_when_set():
    m = _FakeMethod()
    m.under_weight = 25.0
    counts = PROFILES["exp-100"][0]
    expected = [1.0] * 5 + [25.0] * 5
    assert weights.SCHEDULES.get("cb")(m, 0, counts).tolist() == expected
    assert weights.SCHEDULES.get("drw")(m, 2, counts) is None
    assert weights.SCHEDULES.get("drw")(m, 3, counts).tolist() == expected


def test_report_grouping_matches_well_represented():
    """bench.analysis.metrics.class_groups (vectorised) and methods.weights.well_represented give the same split."""
    import pandas as pd

    from bench.analysis.metrics import class_groups
    from methods.weights import well_represented

    profiles = [[5, 5, 1, 1], [1, 9, 9, 1, 3], [7, 7, 7], [50, 3, 50, 3, 50, 3], [2, 1]]
    rows = [{"run_id": r, "class_index": c, "n_train": n} for r, counts in enumerate(profiles) for c, n in enumerate(counts)]
    frame = pd.DataFrame(rows)
    groups = class_groups(frame)
    for r, counts in enumerate(profiles):
        well = {c for c in range(len(counts)) if groups[(frame.run_id == r) & (frame.class_index == c)].item() == "well"}
        assert well == set(well_represented(counts)), counts
