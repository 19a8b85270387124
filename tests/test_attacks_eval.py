"""Evaluation attacks (issue 8): the kinds, their labels and validation, restarts, CW margin, AutoAttack.

A linear classifier on the 8x8 digits is trained full-batch in a fraction of a second; AutoAttack runs on the
first 200 test images only (about 3 s per custom run on one busy core). The standard AutoAttack ensemble takes
~10 s even on 32 images (Square's 5000 queries), so its test is marked ``slow``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.attacks import AA_STANDARD, ATTACKS, KINDS, AttackSpec, autoattack, cw_margin_loss, pgd, pgd_restarts
from bench.errors import BenchError
from bench.evaluate import evaluate
from bench.settings import Settings
from bench.suite import attack_label, eval_attack, load_suite
from factories import trained_linear_digits

N_AA = 200  # test images AutoAttack runs on here


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    model, data = trained_linear_digits(tmp_path_factory.mktemp("digits"))
    for p in model.parameters():
        p.requires_grad_(False)
    return model, data


def _acc(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _flags(model, x, y) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) == y


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- CW margin ----------------------------------------------------------------------------------------------


def test_cw_margin_matches_hand_values():
    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, -1.0], [0.5, 0.5, 0.2]])
    y = torch.tensor([1, 2, 0])
    # max over the other classes minus the true logit: 2 − 3, 5 − (−1), 0.5 − 0.5
    assert torch.equal(cw_margin_loss(logits, y), torch.tensor([-1.0, 6.0, 0.0]))
    # linear in the logits' scale (unlike cross-entropy, it neither saturates nor flattens)
    assert torch.equal(cw_margin_loss(1e4 * logits, y), 1e4 * cw_margin_loss(logits, y))
    with pytest.raises(ValueError, match="logits"):
        cw_margin_loss(logits[0], y)


def test_pgd_cw_one_step_matches_hand_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=g)
    W = torch.randn(3, 6, generator=g, dtype=torch.float64)
    logits = x @ W.T
    other = logits.masked_fill(F.one_hot(y, 3).bool(), float("-inf")).argmax(1)
    grad = W[other] - W[y]  # d/dx (z_j* − z_y) for a linear model
    expected = (x + 0.05 * grad.sign()).clamp(0, 1)
    adv = AttackSpec("pgd-cw", eps=0.05, alpha=0.05, steps=1, random_start=False).run(
        lambda v: v @ W.T, x, y, bounds=(0.0, 1.0))
    assert torch.allclose(adv, expected, atol=1e-12)


# -- every kind attacks -------------------------------------------------------------------------------------


def _spec(kind: str, eps: float = 0.1) -> AttackSpec:
    tables = {
        "pgd": {"kind": "pgd", "eps": eps, "alpha": eps / 4, "steps": 10},
        "pgd-cw": {"kind": "pgd-cw", "eps": eps, "alpha": eps / 4, "steps": 10},
        "lsa": {"kind": "lsa", "eps": eps, "alpha": eps / 4, "steps": 10},
        "fgsm": {"kind": "fgsm", "eps": eps},
        "autoattack": {"kind": "autoattack", "eps": eps, "attacks": ["apgd-ce", "apgd-t"]},
    }
    return AttackSpec.from_table(eval_attack(tables[kind], kind))


def test_every_kind_has_a_test_table():
    assert set(ATTACKS) == {"pgd", "pgd-cw", "lsa", "fgsm", "autoattack"} == set(KINDS)


@pytest.mark.parametrize("kind", list(ATTACKS))
def test_each_kind_lowers_accuracy_and_respects_the_ball(digits_model, kind):
    model, data = digits_model
    x, y = data.test_x[:N_AA], data.test_y[:N_AA]
    before = torch.get_rng_state()
    adv = _spec(kind).run(model, x, y, bounds=data.bounds, generator=_gen())
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is never touched (AutoAttack reseeds it)
    assert adv.shape == x.shape and not adv.requires_grad
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    clean, robust = _acc(model, x, y), _acc(model, adv, y)
    assert clean > 0.9
    assert robust < clean - 0.3, f"{kind}: {clean:.3f} -> {robust:.3f}"


def test_autoattack_is_never_above_pgd(digits_model):
    """AutoAttack's ensemble is a per-sample worst case at least as strong as PGD here (within 1 point)."""
    model, data = digits_model
    x, y = data.test_x[:N_AA], data.test_y[:N_AA]
    for eps in (0.05, 0.1):
        pgd_acc = _acc(model, _spec("pgd", eps).run(model, x, y, bounds=data.bounds, generator=_gen()), y)
        aa = _spec("autoattack", eps).run(model, x, y, bounds=data.bounds, generator=_gen())
        assert _acc(model, aa, y) <= pgd_acc + 0.01
        # and never above the clean flags: a sample misclassified clean stays misclassified
        assert not (_flags(model, aa, y) & ~_flags(model, x, y)).any()


def test_autoattack_is_reproducible_from_the_generator(digits_model):
    model, data = digits_model
    x, y = data.test_x[:64], data.test_y[:64]
    spec = AttackSpec("autoattack", 0.1, version="custom", attacks=("apgd-ce",))
    a = spec.run(model, x, y, bounds=data.bounds, generator=_gen(3))
    b = spec.run(model, x, y, bounds=data.bounds, generator=_gen(3))
    assert torch.equal(a, b)


def test_autoattack_on_unbounded_data_keeps_the_ball():
    """Bounds other than [0, 1] are mapped there; with bounds=None the box never binds."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 5, generator=g)
    x = 4 * torch.randn(64, 5, generator=g)  # far outside [0, 1]
    y = (x @ W.T).argmax(1)

    def forward(v):
        return v @ W.T

    eps = 0.5
    adv = autoattack(forward, x, y, eps=eps, version="custom", attacks=["apgd-ce"], bounds=None, seed=0)
    assert float((adv - x).abs().max()) <= eps + 1e-5
    assert _acc(forward, adv, y) < 0.9
    shifted = autoattack(forward, x, y, eps=eps, version="custom", attacks=["apgd-ce"], bounds=(-20.0, 20.0), seed=0)
    assert float((shifted - x).abs().max()) <= eps + 1e-5 and float(shifted.abs().max()) <= 20.0


def test_autoattack_refuses_what_it_cannot_do(digits_model):
    model, data = digits_model
    two = torch.nn.Linear(4, 2).eval()
    x, y = torch.rand(8, 4), torch.zeros(8, dtype=torch.long)
    with pytest.raises(BenchError, match="apgd-t needs at least 4 classes, the model has 2"):
        autoattack(two, x, y, eps=0.1)
    with pytest.raises(BenchError, match="square needs image inputs"):
        autoattack(torch.nn.Linear(4, 5).eval(), x, y, eps=0.1, version="custom", attacks=["square"])
    model.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            autoattack(model, data.test_x[:4], data.test_y[:4], eps=0.1)
    finally:
        model.eval()


def test_autoattack_checks_are_reported_once_per_kind(digits_model, caplog):
    """The reference's sanity checks (here: zero gradients of a stop-gradient model) reach our logger, condensed."""
    model, data = digits_model
    x, y = data.test_x[:16], data.test_y[:16]

    def masked(v):
        return model(v).detach() + 0 * v.flatten(1).sum(1, keepdim=True)  # zero input gradient everywhere

    with caplog.at_level("WARNING", logger="bench.attacks"):
        autoattack(masked, x, y, eps=0.1, version="custom", attacks=["apgd-dlr"], seed=0)
    lines = [r.getMessage() for r in caplog.records if r.name == "bench.attacks"]
    assert len(lines) == 1 and "points with zero gradient" in lines[0] and "more like it" in lines[0]


@pytest.mark.slow
def test_standard_autoattack_runs_every_component(digits_model):
    model, data = digits_model
    x, y = data.test_x[:32], data.test_y[:32]
    adv = AttackSpec("autoattack", 0.1).run(model, x, y, bounds=data.bounds, generator=_gen())
    pgd_acc = _acc(model, _spec("pgd").run(model, x, y, bounds=data.bounds, generator=_gen()), y)
    assert _acc(model, adv, y) <= pgd_acc + 1 / 32
    assert AA_STANDARD == ("apgd-ce", "apgd-t", "fab-t", "square")


# -- restarts -----------------------------------------------------------------------------------------------


def test_restarts_never_increase_robust_accuracy(digits_model):
    model, data = digits_model
    x, y = data.test_x, data.test_y
    kw = {"eps": 0.1, "alpha": 0.05, "steps": 3, "bounds": data.bounds}  # a weak attack, so restarts have work to do
    one = _flags(model, pgd(model, x, y, generator=_gen(), **kw), y)
    again = _flags(model, pgd_restarts(model, x, y, restarts=1, generator=_gen(), **kw), y)
    assert torch.equal(one, again)
    three = _flags(model, pgd_restarts(model, x, y, restarts=3, generator=_gen(), **kw), y)
    assert not (three & ~one).any()  # per sample: robust after 3 restarts ⇒ robust after the first
    assert three.sum() < one.sum()
    spec = AttackSpec("pgd", 0.1, 0.05, 3, restarts=3)
    assert spec.label == "pgd-3x3"
    assert torch.equal(_flags(model, spec.run(model, x, y, bounds=data.bounds, generator=_gen()), y), three)
    with pytest.raises(ValueError, match="restarts"):
        pgd_restarts(model, x, y, restarts=0, **kw)


# -- evaluate -----------------------------------------------------------------------------------------------


def test_evaluate_with_added_attacks_matches_the_suite(digits_model):
    """An attack evaluated alone (bench evaluate) gives the flags it gives among the suite's attacks."""
    model, data = digits_model
    tables = [eval_attack(t, "t") for t in (
        {"kind": "pgd", "eps": 0.1, "alpha": 0.025, "steps": 5},
        {"kind": "fgsm", "eps": 0.1},
        {"kind": "pgd-cw", "eps": 0.1, "alpha": 0.025, "steps": 5, "restarts": 2},
    )]
    config = {"eval_attacks": tables, "seed": 4, "eval_batch_size": 300}
    full = evaluate(model, data, config)
    assert list(full) == ["clean", "pgd-5", "fgsm", "pgd-cw-5x2"]
    alone = evaluate(model, data, config, specs=[AttackSpec.from_table(tables[2])])
    assert list(alone) == ["clean", "pgd-cw-5x2"]
    assert (alone["pgd-cw-5x2"] == full["pgd-cw-5x2"]).all() and (alone["clean"] == full["clean"]).all()
    for label in ("pgd-5", "fgsm", "pgd-cw-5x2"):
        assert full[label].mean() < full["clean"].mean() - 0.3


# -- tables, labels, validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "label"),
    [
        ({"kind": "pgd", "eps": "8/255", "alpha": "2/255", "steps": 20}, "pgd-20"),
        ({"kind": "pgd", "eps": 0.1, "alpha": 0.1, "steps": 20, "restarts": 5}, "pgd-20x5"),
        ({"kind": "pgd-cw", "eps": 0.1, "alpha": 0.1, "steps": 20}, "pgd-cw-20"),
        ({"kind": "fgsm", "eps": 0.1}, "fgsm"),
        ({"kind": "fgsm", "eps": 0.1, "alpha": 0.1, "steps": 1}, "fgsm"),
        ({"kind": "autoattack", "eps": "8/255"}, "autoattack"),
        ({"kind": "autoattack", "eps": 0.1, "version": "standard"}, "autoattack"),
        ({"kind": "autoattack", "eps": 0.1, "attacks": ["apgd-ce", "apgd-t"]}, "apgd-ce+apgd-t"),
        ({"kind": "autoattack", "eps": 0.1, "version": "custom", "attacks": ["square"], "name": "sq"}, "sq"),
    ],
)
def test_labels(table, label):
    resolved = eval_attack(table, "here")
    assert attack_label(resolved) == label == AttackSpec.from_table(resolved).label


def test_resolved_tables_keep_old_hashes():
    """Tables that use no new key resolve exactly as before issue 8 (so cell hashes did not change)."""
    assert eval_attack({"kind": "pgd", "eps": 0.1, "alpha": 0.05, "steps": 2}, "t") == {
        "kind": "pgd", "eps": 0.1, "alpha": 0.05, "steps": 2, "random_start": True}
    assert eval_attack({"kind": "pgd", "eps": 0.1, "alpha": 0.05, "steps": 2, "restarts": 1}, "t") == {
        "kind": "pgd", "eps": 0.1, "alpha": 0.05, "steps": 2, "random_start": True}
    assert eval_attack({"kind": "autoattack", "eps": 0.1}, "t") == {"kind": "autoattack", "eps": 0.1, "version": "standard"}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"kind": "autoatack", "eps": 0.1}, r"kind = 'autoatack' is unknown \(did you mean 'autoattack'\?\); valid: pgd, pgd-cw, lsa, fgsm, autoattack"),
        ({"kind": "pgd", "eps": -0.1, "alpha": 0.1}, r"here.eps = -0.1 is negative"),
        ({"kind": "pgd", "eps": 0.1}, r"missing alpha"),
        ({"kind": "pgd", "eps": 0.1, "alpha": 0.1, "version": "custom"}, r"unknown key 'version' for kind pgd"),
        ({"kind": "pgd", "eps": 0.1, "alpha": 0.1, "restarts": 0}, r"restarts: must be an integer >= 1"),
        ({"kind": "fgsm", "eps": 0.1, "alpha": 0.05}, r"fgsm takes one step of size eps"),
        ({"kind": "fgsm", "eps": 0.1, "steps": 3}, r"fgsm takes one step"),
        ({"kind": "autoattack", "eps": 0.1, "version": "plus"}, r"version = 'plus' is unknown; valid: standard, custom"),
        ({"kind": "autoattack", "eps": 0.1, "version": "custom"}, r"needs a non-empty list"),
        ({"kind": "autoattack", "eps": 0.1, "attacks": ["apgd-cw"]}, r"'apgd-cw' is not an AutoAttack attack .*valid: apgd-ce"),
        ({"kind": "autoattack", "eps": 0.1, "version": "standard", "attacks": ["fab"]}, r"only for version = \"custom\""),
        ({"kind": "autoattack", "eps": 0.1, "alpha": 0.1}, r"unknown key 'alpha' for kind autoattack"),
    ],
)
def test_bad_attack_tables_are_one_line(table, message):
    with pytest.raises(BenchError, match=message) as info:
        eval_attack(table, "here")
    assert "\n" not in str(info.value)


ATTACKS_TOML = """eval_attacks = [{ kind = "pgd", eps = 0.1, alpha = 0.025, steps = 5 },
                { kind = "autoattack", eps = 0.1, attacks = ["apgd-ce"] }]"""
SUITE = """
seeds = [0]
[defaults]
{extra}
[[grid]]
dataset = "digits"
imbalance = "step-10"
method = "ce"
"""


def _suite(tmp_path, extra: str = ""):
    path = tmp_path / "s.toml"
    if not extra.startswith("eval_attacks"):
        extra = ATTACKS_TOML + "\n" + extra
    path.write_text(SUITE.format(extra=extra))
    return load_suite(path, Settings())


def test_suites_take_the_new_kinds_and_guards(tmp_path):
    cell = _suite(tmp_path).cells[0]
    assert [attack_label(a) for a in cell["eval_attacks"]] == ["pgd-5", "apgd-ce"]
    assert "guards" not in cell.config  # the default is left out of the resolved config (hash unchanged)
    assert _suite(tmp_path, 'guards = ["pgd-aa-gap", "scaled-pgd", "zero-grad-share"]').cells[0].cell_hash == cell.cell_hash
    only = _suite(tmp_path, 'guards = ["pgd-aa-gap", "pgd-aa-gap"]').cells[0]
    assert only["guards"] == ["pgd-aa-gap"] and only.cell_hash != cell.cell_hash
    assert _suite(tmp_path, "guards = []").cells[0]["guards"] == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('guards = ["zero-grad"]', r"unknown guard 'zero-grad' \(did you mean 'zero-grad-share'\?\); valid: zero-grad-share, scaled-pgd, pgd-aa-gap"),
        ('guards = "pgd-aa-gap"', r"guards: must be a list of guard names"),
        ('train_attack = { kind = "autoattack", eps = 0.1, alpha = 0.1 }', r"train_attack: kind = 'autoattack' cannot train; valid: pgd"),
        ('eval_attacks = [{ kind = "fgsm", eps = 0.1, name = "clean" }]', r"labels must be unique and not clean or worst-case"),
        ('eval_attacks = [{ kind = "fgsm", eps = 0.1 }, { kind = "fgsm", eps = 0.2 }]', r"must be unique.*set `name`"),
    ],
)
def test_bad_suite_guards_and_attacks(tmp_path, extra, message):
    with pytest.raises(BenchError, match=message):
        _suite(tmp_path, extra)
