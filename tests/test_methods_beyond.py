"""Methods beyond the paper: TRADES, MART, Balanced Softmax, logit adjustment, RoBal, resampling, SRAT-TRADES.

Each loss is checked against a naive plain-Python implementation of its paper's formula (never the code under
test); the contract pieces they need — clean logits, the attack's objective and start, a sampler, an
inference-time bias — are checked on their own and through a real training run of the runner's loop.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import methods
from bench.attacks import pgd
from bench.data import prepare
from bench.suite import BUILTIN_DEFAULTS
from bench.train import train
from methods import losses
from methods.base import LossInputs
from methods.objectives import OBJECTIVES
from methods.samplers import SAMPLERS

COUNTS = [500, 300, 120, 60, 20]
C = len(COUNTS)
N = 16


def _rows(t):
    return [[float(v) for v in row] for row in t.detach().double().tolist()]


def _softmax(row):
    top = max(row)
    e = [math.exp(v - top) for v in row]
    return [v / sum(e) for v in e]


def _ce(row, y):
    return -math.log(_softmax(row)[y])


def _kl(p, q):
    """KL(p ‖ q) for two probability lists."""
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0)


def batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    adv = (2 * torch.randn(N, C, generator=gen)).requires_grad_(True)
    clean = (2 * torch.randn(N, C, generator=gen)).requires_grad_(True)
    targets = torch.randint(0, C, (N,), generator=gen)
    return adv, clean, targets


def loss_of(name, adv, clean, targets, epoch=0, **overrides):
    m = methods.get(name, **overrides).for_run(epochs=10, milestones=[5])
    counts = torch.tensor(COUNTS, dtype=torch.float32)
    return m.loss(LossInputs(logits=adv, targets=targets, class_counts=counts, epoch=epoch,
                             weight=m.class_weights(epoch, counts), clean_logits=clean))


# ------------------------------------------------------------------------------------------- losses vs naive


@pytest.mark.parametrize("beta", [6.0, 1.0])
def test_trades_loss_is_natural_ce_plus_beta_kl(beta):
    adv, clean, y = batch(1)
    got = loss_of("trades", adv, clean, y, kl_weight=beta).item()
    a, c, ys = _rows(adv), _rows(clean), y.tolist()
    natural = sum(_ce(row, t) for row, t in zip(c, ys)) / N
    robust = sum(_kl(_softmax(cr), _softmax(ar)) for cr, ar in zip(c, a)) / N
    assert got == pytest.approx(natural + beta * robust, rel=1e-5)


def test_trades_needs_the_clean_logits():
    adv, _, y = batch(2)
    with pytest.raises(ValueError, match=r"method trades needs the clean logits"):
        loss_of("trades", adv, None, y)


def test_srat_trades_is_drw_weighted_trades_plus_separation():
    adv, clean, y = batch(3)
    gen = torch.Generator().manual_seed(9)
    z = F.normalize(torch.randn(N, 8, generator=gen), dim=1)
    m = methods.get("srat-trades").for_run(epochs=10, milestones=[5])
    counts = torch.tensor(COUNTS, dtype=torch.float32)
    assert (m.lam, m.weight_schedule) == (2.0, "drw")
    for epoch in (0, 5):
        w = m.class_weights(epoch, counts)
        got = m.loss(LossInputs(logits=adv, targets=y, class_counts=counts, epoch=epoch, weight=w,
                                projection=z, clean_logits=clean)).item()
        a, c, ys = _rows(adv), _rows(clean), y.tolist()
        wl = [1.0] * C if w is None else w.tolist()
        natural = sum(wl[t] * _ce(row, t) for row, t in zip(c, ys)) / sum(wl[t] for t in ys)
        robust = sum(_kl(_softmax(cr), _softmax(ar)) for cr, ar in zip(c, a)) / N
        sep = losses.separation_loss(z, y, 0.07).item()  # its own naive test is in test_methods_registry.py
        assert (w is None) == (epoch < 5)
        assert got == pytest.approx(natural + 6.0 * robust + 2.0 * sep, rel=1e-5)


def test_mart_loss_matches_its_formula():
    adv, clean, y = batch(4)
    got = loss_of("mart", adv, clean, y).item()
    total = 0.0
    for ar, cr, t in zip(_rows(adv), _rows(clean), y.tolist()):
        p_adv, p_clean = _softmax(ar), _softmax(cr)
        wrong = max((p, j) for j, p in enumerate(p_adv) if j != t)[1]  # most probable wrong class
        boosted = _ce(ar, t) - math.log(1.0001 - p_adv[wrong] + 1e-12)
        kl = sum(pc * (math.log(pc) - math.log(pa + 1e-12)) for pc, pa in zip(p_clean, p_adv))
        total += boosted + 6.0 * kl * (1.0000001 - p_clean[t])
    assert got == pytest.approx(total / N, rel=1e-5)


def test_balanced_softmax_shifts_logits_by_log_counts():
    adv, clean, y = batch(5)
    got = loss_of("balanced-softmax", adv, clean, y).item()
    expected = sum(_ce([v + math.log(n) for v, n in zip(row, COUNTS)], t) for row, t in zip(_rows(adv), y.tolist()))
    assert got == pytest.approx(expected / N, rel=1e-5)


@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
def test_logit_adjusted_loss_adds_tau_log_prior(tau):
    adv, clean, y = batch(6)
    got = loss_of("logit-adjust", adv, clean, y, tau=tau).item()
    total = sum(COUNTS)
    expected = sum(_ce([v + tau * math.log(n / total) for v, n in zip(row, COUNTS)], t)
                   for row, t in zip(_rows(adv), y.tolist()))
    assert got == pytest.approx(expected / N, rel=1e-5)


def test_balanced_softmax_is_logit_adjustment_at_tau_one():
    adv, clean, y = batch(7)
    assert loss_of("balanced-softmax", adv, clean, y).item() == pytest.approx(
        loss_of("logit-adjust", adv, clean, y, tau=1.0).item(), rel=1e-6)


def test_posthoc_logit_adjustment_trains_with_plain_ce():
    adv, clean, y = batch(8)
    expected = sum(_ce(row, t) for row, t in zip(_rows(adv), y.tolist())) / N
    assert loss_of("logit-adjust-posthoc", adv, clean, y).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("overrides", [{}, {"m": 0.2, "s": 5.0, "tau_b": 0.0, "tau_m": 1.0, "kl_weight": 2.0}])
def test_robal_loss_is_margin_bias_ce_plus_trades_kl(overrides):
    adv, clean, y = batch(9)
    cos_adv = torch.tanh(adv).detach().requires_grad_(True)  # cosines in [-1, 1]
    cos_clean = torch.tanh(clean).detach()
    got = loss_of("robal", cos_adv, cos_clean, y, **overrides).item()
    p = {"s": 10.0, "m": 0.1, "tau_b": 1.2, "tau_m": 0.0, "kl_weight": 6.0, **overrides}
    total, n_min = sum(COUNTS), min(COUNTS)
    margins = [p["m"] + p["tau_m"] * math.log(n / n_min) / p["s"] for n in COUNTS]
    value = 0.0
    for ar, cr, t in zip(_rows(cos_adv), _rows(cos_clean), y.tolist()):
        z = [p["s"] * (v - (margins[t] if j == t else 0.0)) + p["tau_b"] * math.log(COUNTS[j] / total)
             for j, v in enumerate(ar)]
        value += _ce(z, t) + p["kl_weight"] * _kl(_softmax(cr), _softmax(ar))
    assert got == pytest.approx(value / N, rel=1e-5)


def test_robal_capabilities():
    m = methods.get("robal")
    assert m.classifier == "cosplus" and m.needs_clean_logits and m.logit_scale == 10.0
    # evaluated at the scale it trained at (the reference's PostProc head, scale 10): not scale-sensitive
    assert m.inference_scale == 10.0 and not m.scale_sensitive


@pytest.mark.parametrize(
    "name,overrides,expected",
    [
        ("logit-adjust-posthoc", {}, lambda n, total: -math.log(n / total)),
        ("logit-adjust-posthoc", {"tau": 0.5}, lambda n, total: -0.5 * math.log(n / total)),
        ("robal", {}, lambda n, total: -0.1 * math.log(n / total)),  # on the 10x-scaled cosines
    ],
)
def test_inference_bias_is_minus_tau_log_prior(name, overrides, expected):
    bias = methods.get(name, **overrides).inference_bias(COUNTS)
    total = sum(COUNTS)
    assert bias.tolist() == pytest.approx([expected(n, total) for n in COUNTS], rel=1e-5)


@pytest.mark.parametrize("name", ["ce", "trades", "mart", "balanced-softmax", "logit-adjust", "resample"])
def test_methods_without_an_inference_adjustment(name):
    assert methods.get(name).inference_bias(COUNTS) is None


@pytest.mark.parametrize(
    "name,key,value,pattern",
    [("trades", "kl_weight", -1, r"kl_weight = -1\.0 is invalid; must be >= 0"),
     ("logit-adjust", "tau", -0.5, r"tau = -0\.5 is invalid"),
     ("robal", "s", 0, r"s = 0\.0 is invalid; must be > 0"),
     ("ce", "kl_weight", 1.0, r"unknown hyperparameter 'kl_weight'")],
)
def test_bad_hyperparameters_rejected(name, key, value, pattern):
    from bench.errors import BenchError

    with pytest.raises(BenchError, match=pattern):
        methods.get(name, **{key: value})


# ------------------------------------------------------------------------------------ objectives, attack start


def test_kl_objective_is_zero_at_the_clean_point_and_grows_under_pgd():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(C, 6, generator=gen)
    forward = lambda x: x @ w.T  # noqa: E731
    x = torch.rand(N, 6, generator=gen)
    y = torch.randint(0, C, (N,), generator=gen)
    objective = OBJECTIVES.get("kl")
    assert objective.needs_clean
    loss = objective.build(forward(x))
    assert loss(forward(x), y).abs().max().item() < 1e-6
    x_adv = pgd(forward, x, y, eps=0.1, alpha=0.02, steps=10, bounds=None, generator=gen, loss=loss, start_std=0.001)
    expected = [_kl(_softmax(c), _softmax(a)) for c, a in zip(_rows(forward(x)), _rows(forward(x_adv)))]
    assert min(expected) > 0 and loss(forward(x_adv), y).tolist() == pytest.approx(expected, rel=1e-4, abs=1e-7)
    assert (x_adv - x).abs().max().item() <= 0.1 + 1e-6
    assert OBJECTIVES.get("ce").build(None) is None and not OBJECTIVES.get("ce").needs_clean
    with pytest.raises(ValueError, match="needs the clean logits"):
        objective.build(None)


def test_gaussian_start_stays_near_the_input():
    x = torch.full((64, 3), 0.5)
    uniform = pgd(lambda v: v, x, torch.zeros(64, dtype=torch.long), eps=0.3, alpha=0.1, steps=0,
                  generator=torch.Generator().manual_seed(0))
    gauss = pgd(lambda v: v, x, torch.zeros(64, dtype=torch.long), eps=0.3, alpha=0.1, steps=0,
                generator=torch.Generator().manual_seed(0), start_std=0.001)
    assert (uniform - x).abs().max().item() > 0.2  # spread over the ball
    spread = (gauss - x).std().item()
    assert 0.0005 < spread < 0.002  # σ = 0.001


def test_attack_capabilities_of_each_method():
    caps = {n: (methods.get(n).attack_objective, methods.get(n).attack_start_std, methods.get(n).needs_clean_logits)
            for n in ("ce", "trades", "mart", "balanced-softmax", "robal")}
    assert caps == {"ce": ("ce", None, False), "trades": ("kl", 0.001, True), "mart": ("ce", 0.001, True),
                    "balanced-softmax": ("ce", 0.001, False), "robal": ("ce", None, True)}


# ---------------------------------------------------------------------------------------------------- samplers


def test_uniform_sampler_is_one_random_pass():
    labels = torch.tensor([0] * 30 + [1] * 5)
    idx = SAMPLERS.get("uniform")(labels, torch.Generator().manual_seed(3))
    assert torch.equal(idx, torch.randperm(35, generator=torch.Generator().manual_seed(3)))


def test_class_balanced_sampler_draws_classes_equally():
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    idx = SAMPLERS.get("class-balanced")(labels, torch.Generator().manual_seed(0))
    assert idx.shape == (1000,) and idx.min() >= 0 and idx.max() < 1000
    share = torch.bincount(labels[idx], minlength=3).double() / 1000
    # Each class has probability 1/3; with 1000 draws the standard error is 0.015, so 0.06 is four of them.
    assert share.tolist() == pytest.approx([1 / 3] * 3, abs=0.06)
    assert torch.unique(idx[labels[idx] == 2]).numel() <= 10  # the 10 rare examples, repeated


# ---------------------------------------------------------------------------- through the runner's training loop


def _config(**kw):
    return {**BUILTIN_DEFAULTS, "model": "linear", "epochs": 1, "batch_size": 64, "lr": 0.05, "seed": 0,
            "train_attack": {"kind": "pgd", "eps": 0.1, "alpha": 0.05, "steps": 2, "random_start": True,
                             "bn_mode": "train"}, **kw}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return prepare("digits", "exp-10", 0, root=tmp_path_factory.mktemp("data"))


def test_runner_gives_trades_its_kl_attack_and_clean_logits(digits, tmp_path, monkeypatch):
    import bench.train as train_module

    seen = []
    real_pgd = train_module.pgd

    def spy(forward, x, y, **kw):
        seen.append(kw)
        return real_pgd(forward, x, y, **kw)

    monkeypatch.setattr(train_module, "pgd", spy)
    clean_seen = []

    class Spy(type(methods.get("trades"))):
        def prediction(self, inputs):
            clean_seen.append(inputs.clean_logits is not None and inputs.clean_logits.requires_grad)
            return super().prediction(inputs)

    method = Spy().for_run(epochs=1, milestones=[])
    outcome = train(_config(), method, digits, tmp_path)
    assert seen and all(kw["start_std"] == 0.001 and kw["loss"] is not None for kw in seen)
    assert clean_seen and all(clean_seen)
    assert math.isfinite(outcome.curves[0]["loss"])


def test_runner_draws_resample_batches_class_balanced(digits, tmp_path):
    drawn = []

    class Spy(type(methods.get("resample"))):
        def prediction(self, inputs):
            drawn.append(inputs.targets.clone())
            return super().prediction(inputs)

    train(_config(epochs=2), Spy().for_run(epochs=2, milestones=[]), digits, tmp_path)
    labels = torch.cat(drawn)
    share = torch.bincount(labels, minlength=10).double() / labels.numel()
    natural = torch.tensor(digits.train_counts, dtype=torch.float64) / sum(digits.train_counts)
    assert labels.numel() == 2 * sum(digits.train_counts)
    assert share.min().item() > 0.05 and natural.min().item() < 0.03  # the rarest class is drawn far more often


def test_trained_model_carries_the_posthoc_bias(digits, tmp_path):
    method = methods.get("logit-adjust-posthoc").for_run(epochs=1, milestones=[])
    outcome = train(_config(), method, digits, tmp_path)
    model = outcome.model.eval()
    total = sum(digits.train_counts)
    expected = torch.tensor([-math.log(n / total) for n in digits.train_counts])
    assert torch.allclose(model.logit_bias, expected, atol=1e-6)
    x = digits.test_x[:8]
    with torch.no_grad():
        raw = model.classifier(model.backbone(x))
        assert torch.allclose(model(x), raw + expected, atol=1e-5)
    assert "logit_bias" in model.state_dict()


def test_trained_robal_predicts_from_the_references_post_processed_head(digits, tmp_path):
    """The reference's test-time head (``PostProc_Classifier``, ``*_robal_N_eval.yaml``: Cos, scale 10, tau_p 0.1,
    posthoc, gamma 0.03125 as its CosPlus training head) outputs ``10·(h/‖h‖)·(w/(‖w‖ + 0.03125))ᵀ − 0.1·log π``:
    the trained model's logits, which every evaluation attack sees, are that, computed here from its features and
    weights."""
    method = methods.get("robal").for_run(epochs=1, milestones=[])
    model = train(_config(), method, digits, tmp_path).model.eval()
    x = digits.test_x[:8]
    with torch.no_grad():
        h = model.backbone(x).double()
        w = model.classifier.weight.double()
        cos = (h / h.norm(dim=1, keepdim=True)) @ (w / (w.norm(dim=1, keepdim=True) + 0.03125)).T
        prior = torch.tensor(digits.train_counts, dtype=torch.float64) / sum(digits.train_counts)
        torch.testing.assert_close(model(x).double(), 10 * cos - 0.1 * torch.log(prior), rtol=0, atol=1e-5)
    assert model.state_dict()["logit_scale"].item() == 10.0


def test_weights_saved_without_an_inference_adjustment_still_load(digits, tmp_path):
    """A final.pt written before models carried ``logit_scale`` (or ``logit_bias``) loads strictly and predicts
    the unadjusted logits it computed then."""
    model = train(_config(), methods.get("ce").for_run(epochs=1, milestones=[]), digits, tmp_path).model.eval()
    old = {k: v for k, v in model.state_dict().items() if k not in ("logit_scale", "logit_bias")}
    model.set_inference(3.0, torch.ones(10))
    model.load_state_dict(old)  # strict
    assert model.logit_scale.item() == 1.0 and model.logit_bias.abs().sum().item() == 0.0
    assert "logit_scale" not in old  # the caller's dict is left as it was


@pytest.mark.parametrize("name", ["trades", "srat-trades", "mart", "balanced-softmax", "logit-adjust", "robal",
                                  "resample"])
def test_each_new_method_trains_end_to_end(digits, tmp_path, name):
    method = methods.get(name).for_run(epochs=1, milestones=[])
    outcome = train(_config(), method, digits, tmp_path)
    assert math.isfinite(outcome.curves[0]["loss"]) and outcome.curves[0]["loss"] > 0


def test_needs_lists_what_each_method_asks_of_the_runner():
    needs = {n: methods.get(n).needs() for n in ("ce", "srat-ce", "trades", "robal", "resample", "logit-adjust-posthoc")}
    assert needs == {
        "ce": [],
        "srat-ce": ["projection head"],
        "trades": ["clean logits", "kl attack", "gaussian start 0.001"],
        "robal": ["cosplus classifier", "clean logits", "inference bias", "inference scale 10"],
        "resample": ["class-balanced sampler"],
        "logit-adjust-posthoc": ["inference bias"],
    }


def test_a_stored_robal_cell_is_re_evaluated_as_it_trained():
    """`bench evaluate` rebuilds the method of a stored cell from its own method_params: a RoBal cell stored before
    the CosPlus head and eval_scale keeps its plain cosine head, predicts at 1x (eval_scale's legacy value) and so
    keeps the scaled-pgd guard; a cell stored today gets exactly its own fields back."""
    old_params = {"beta": 0.9999, "normalize": "max", "drw_epoch": 10, "under_weight": None, "lam": 0.0,
                  "temperature": 0.07, "classifier": "cosine", "kl_weight": 6.0, "s": 10.0, "m": 0.1, "tau_b": 1.2,
                  "tau_m": 0.0, "tau_p": 0.1}
    config = {"method": "robal", "method_args": {}, "method_params": old_params, "epochs": 10, "milestones": []}
    old = methods.as_stored(config)
    assert old.classifier == "cosine" and old.inference_scale == 1.0 and old.scale_sensitive
    today = methods.for_cell(config)
    assert today.classifier == "cosplus" and today.inference_scale == 10.0
    again = methods.as_stored({**config, "method_params": today.params()})
    assert again == today
    assert methods.as_stored({**config, "method_params": None}) == today  # a record without params: as new
