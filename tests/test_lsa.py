"""The logit-scaled attack (kind ``lsa``) and the per-class robust accuracy summary (issue 19, item 5).

LSA = L∞ PGD on CE(scale · logits), scale 10 by default (AT-BSL's ``eval.py``). The tests check its one-step
formula by hand on a linear model, that it is plain PGD at scale 1, and that it undoes a logit shrinkage that
inflates plain PGD's robust accuracy: a model whose logits are divided by 100 predicts exactly as before, yet PGD
finds far fewer adversarial examples; LSA at scale 100 attacks it exactly as PGD attacks the original model.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from factories import trained_linear_digits

from bench.analysis.metrics import CLASS_SUMMARY, class_summary, group_accuracies
from bench.attacks import ATTACKS, AttackSpec, scaled_ce_loss
from bench.catalog import LSA_SCALE
from bench.errors import BenchError
from bench.evaluate import evaluate
from bench.reevaluate import parse_attacks
from bench.settings import Settings
from bench.suite import attack_label, eval_attack, load_suite


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    model, data = trained_linear_digits(tmp_path_factory.mktemp("digits"))
    for p in model.parameters():
        p.requires_grad_(False)
    return model, data


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _flags(forward, x, y) -> torch.Tensor:
    with torch.no_grad():
        return forward(x).argmax(1) == y


# -- the attack -----------------------------------------------------------------------------------------------


def test_scaled_ce_matches_hand_values():
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.5, 0.5]])
    y = torch.tensor([0, 2])
    loss = scaled_ce_loss(10.0)(logits, y)
    # CE(10·z)_i = logsumexp(10·z_i) − 10·z_iy
    expected = [math.log(math.exp(10) + math.exp(20) + 1) - 10, math.log(3)]
    assert loss.dtype == torch.float64 and loss.tolist() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="> 0"):
        scaled_ce_loss(0.0)


def test_one_step_matches_hand_formula():
    """x + α·sign(∇x CE(s·Wx)) = x + α·sign(s·Wᵀ(softmax(s·Wx) − e_y)), clipped to [0, 1]."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (16,), generator=g)
    W = torch.randn(4, 6, generator=g, dtype=torch.float64)
    for scale in (1.0, 10.0, 0.1):
        p = torch.softmax(scale * x @ W.T, 1)
        grad = scale * (p - F.one_hot(y, 4)) @ W
        expected = (x + 0.05 * grad.sign()).clamp(0, 1)
        spec = AttackSpec("lsa", eps=0.05, alpha=0.05, steps=1, random_start=False, scale=scale)
        assert torch.allclose(spec.run(lambda v: v @ W.T, x, y, bounds=(0.0, 1.0)), expected, atol=1e-12)


def test_scale_one_is_plain_pgd(digits_model):
    model, data = digits_model
    x, y = data.test_x[:300], data.test_y[:300]
    double = model.double()
    try:
        xd = x.double()
        pgd = AttackSpec("pgd", 0.1, 0.025, 10).run(double, xd, y, bounds=data.bounds, generator=_gen())
        lsa = AttackSpec("lsa", 0.1, 0.025, 10, scale=1.0).run(double, xd, y, bounds=data.bounds, generator=_gen())
        assert torch.equal(pgd, lsa)
    finally:
        model.float()


def test_lsa_undoes_inflated_robustness_from_small_logits(digits_model):
    """Dividing the logits by 100 changes no prediction but flattens the softmax: plain PGD then finds far fewer
    adversarial examples. LSA at scale 100 sees the original loss and gets the original model's flags; LSA at
    its default scale 10 already recovers part of the gap."""
    model, data = digits_model
    x, y = data.test_x[:400], data.test_y[:400]

    def shrunk(v: torch.Tensor) -> torch.Tensor:
        return model(v) / 100

    assert torch.equal(_flags(shrunk, x, y), _flags(model, x, y))
    kw = {"bounds": data.bounds}
    true = _flags(model, AttackSpec("pgd", 0.1, 0.025, 10).run(model, x, y, generator=_gen(), **kw), y)
    inflated = _flags(shrunk, AttackSpec("pgd", 0.1, 0.025, 10).run(shrunk, x, y, generator=_gen(), **kw), y)
    undone = _flags(shrunk, AttackSpec("lsa", 0.1, 0.025, 10, scale=100.0).run(shrunk, x, y, generator=_gen(), **kw), y)
    default = _flags(shrunk, AttackSpec("lsa", 0.1, 0.025, 10).run(shrunk, x, y, generator=_gen(), **kw), y)
    assert float(inflated.float().mean()) > float(true.float().mean()) + 0.1
    assert torch.equal(undone, true)
    assert float(default.float().mean()) <= float(inflated.float().mean())


def test_restarts_and_the_ball(digits_model):
    model, data = digits_model
    x, y = data.test_x[:200], data.test_y[:200]
    one = AttackSpec("lsa", 0.1, 0.025, 5).run(model, x, y, bounds=data.bounds, generator=_gen())
    three = AttackSpec("lsa", 0.1, 0.025, 5, restarts=3).run(model, x, y, bounds=data.bounds, generator=_gen())
    for adv in (one, three):
        assert float((adv - x).abs().max()) <= 0.1 + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert not (_flags(model, three, y) & ~_flags(model, one, y)).any()  # more restarts never raise robustness


# -- tables, suites, evaluate -----------------------------------------------------------------------------------


def test_registered_and_labelled():
    assert "lsa" in ATTACKS and LSA_SCALE == 10.0
    table = eval_attack({"kind": "lsa", "eps": "8/255", "alpha": "2/255", "steps": 20}, "t")
    assert table == {"kind": "lsa", "eps": 8 / 255, "alpha": 2 / 255, "steps": 20, "random_start": True, "scale": 10.0}
    assert attack_label(table) == "lsa10-20" == AttackSpec.from_table(table).label
    other = eval_attack({"kind": "lsa", "eps": 0.1, "alpha": 0.1, "steps": 5, "scale": 2.5, "restarts": 2}, "t")
    assert attack_label(other) == "lsa2.5-5x2"


@pytest.mark.parametrize(("table", "message"), [
    ({"kind": "lsa", "eps": 0.1, "alpha": 0.1, "scale": 0}, r"here.scale: must be > 0"),
    ({"kind": "lsa", "eps": 0.1, "alpha": 0.1, "scale": -2}, r"here.scale: must be > 0"),
    ({"kind": "lsa", "eps": 0.1}, r"missing alpha"),
    ({"kind": "pgd", "eps": 0.1, "alpha": 0.1, "scale": 10}, r"unknown key 'scale' for kind pgd"),
])
def test_bad_tables_are_one_line(table, message):
    with pytest.raises(BenchError, match=message) as info:
        eval_attack(table, "here")
    assert "\n" not in str(info.value)


def test_in_a_suite_in_evaluate_and_in_bench_evaluate(tmp_path, digits_model):
    path = tmp_path / "s.toml"
    path.write_text('seeds = [0]\n[defaults]\neval_attacks = [{ kind = "pgd", eps = 0.1, alpha = 0.025, steps = 5 }, '
                    '{ kind = "lsa", eps = 0.1, alpha = 0.025, steps = 5 }]\n'
                    '[[grid]]\ndataset = "digits"\nimbalance = "step-10"\nmethod = "ce"\n')
    cell = load_suite(path, Settings()).cells[0]
    assert [attack_label(a) for a in cell["eval_attacks"]] == ["pgd-5", "lsa10-5"]
    model, data = digits_model
    flags = evaluate(model, data, {"eval_attacks": cell["eval_attacks"], "seed": 0, "eval_batch_size": 500})
    assert list(flags) == ["clean", "pgd-5", "lsa10-5"]
    assert flags["lsa10-5"].mean() < flags["clean"].mean() - 0.3
    tables = parse_attacks(['{kind="lsa", eps="8/255", alpha="2/255", steps=20, scale=5}'])
    assert attack_label(tables[0]) == "lsa5-20"


def test_bench_list_attacks_shows_it():
    from bench.cli import cli

    result = CliRunner().invoke(cli, ["list", "attacks"])
    assert result.exit_code == 0 and "lsa" in result.output and "Logit-scaled" in result.output


# -- per-class summary ------------------------------------------------------------------------------------------


def _frame() -> pd.DataFrame:
    rows = []

    def add(run_id, attack, order, n_train, n_test, correct):
        for c, (nt, ne, k) in enumerate(zip(n_train, n_test, correct)):
            rows.append({"run_id": run_id, "method": "m", "seed": run_id, "attack": attack, "attack_order": order,
                         "class_index": c, "n_train": nt, "n_test": ne, "correct": k})

    add(1, "clean", 0, [200, 50, 5], [10, 10, 10], [9, 8, 5])
    add(1, "pgd-20", 1, [200, 50, 5], [10, 10, 10], [6, 3, 3])
    add(2, "pgd-20", 1, [5000, 500, 100, 20], [4, 5, 10, 20], [1, 5, 2, 10])
    return pd.DataFrame(rows)


def test_class_summary_by_hand():
    out = class_summary(_frame()).set_index(["run_id", "attack"])
    assert list(out.columns[-len(CLASS_SUMMARY):]) == list(CLASS_SUMMARY)
    clean = out.loc[(1, "clean")]
    assert clean["mean"] == pytest.approx((0.9 + 0.8 + 0.5) / 3)
    assert (clean["worst"], clean["best"], clean["worst_class"]) == (pytest.approx(0.5), pytest.approx(0.9), 2)
    robust = out.loc[(1, "pgd-20")]  # class accuracies 0.6, 0.3, 0.3
    assert robust["mean"] == pytest.approx(0.4)
    assert robust["worst"] == pytest.approx(0.3) and robust["worst_class"] == 1  # tie: the lower index
    assert robust["best"] == pytest.approx(0.6) and robust["gap"] == pytest.approx(0.3)
    assert robust["std"] == pytest.approx(math.sqrt((0.2**2 + 0.1**2 + 0.1**2) / 3))
    # many-shot: > 100 training images (200); medium: 20..100 (50); few: < 20 (5)
    assert (robust["many"], robust["medium"], robust["few"]) == (pytest.approx(0.6), pytest.approx(0.3),
                                                                 pytest.approx(0.3))
    other = out.loc[(2, "pgd-20")]  # 0.25, 1.0, 0.2, 0.5 with 5000, 500, 100, 20 training images
    assert other["mean"] == pytest.approx((0.25 + 1.0 + 0.2 + 0.5) / 4)
    assert other["worst_class"] == 2 and other["best"] == pytest.approx(1.0)
    assert other["many"] == pytest.approx((0.25 + 1.0) / 2) and other["medium"] == pytest.approx((0.2 + 0.5) / 2)
    assert np.isnan(other["few"])  # no class under 20 images


def test_class_summary_mean_is_overall_on_balanced_test_sets_and_empty_frames():
    frame = _frame()
    frame = frame[frame["run_id"] == 1]
    summary = class_summary(frame).sort_values("attack_order")
    overall = group_accuracies(frame).sort_values("attack_order")
    assert summary["mean"].to_numpy() == pytest.approx(overall["overall"].to_numpy())
    empty = class_summary(frame.iloc[:0])
    assert empty.empty and set(CLASS_SUMMARY) <= set(empty.columns)
