"""The method registry and the eleven methods of methods.md §4, plus the registry-generated tests of every method.

Contract tests (frozen, for_run, class-weight schedule, finite loss with gradients, λ switching the projection
on, a tiny model end to end) are generated over ``methods.names()``, so a newly registered method gets them. The
expected behaviour of the paper's eleven comes from the table in methods.md §4 (written out below), and expected
loss values from naive plain-Python implementations of the formulas in §3 — never from the code under test. The
other methods' losses are checked against their own naive formulas in ``test_methods_beyond.py``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import methods
from bench.errors import BenchError
from methods.base import CAPABILITY_DEFAULTS, FocalFamily, LossInputs, Method

# methods.md §4: name -> (prediction loss, weights before / from drw_epoch, λ). Paper table order.
TABLE = {
    "ce": ("ce", "uniform", 0.0),
    "focal": ("focal", "uniform", 0.0),
    "ldam": ("ldam", "uniform", 0.0),
    "cb-reweight": ("ce", "cb", 0.0),
    "cb-focal": ("focal", "cb", 0.0),
    "drcb-ce": ("ce", "drw", 0.0),
    "drcb-focal": ("focal", "drw", 0.0),
    "drcb-ldam": ("ldam", "drw", 0.0),
    "srat-ce": ("ce", "drw", 2.0),
    "srat-focal": ("focal", "drw", 2.0),
    "srat-ldam": ("ldam", "drw", 2.0),
}
PAPER_ORDER = list(TABLE)
# Every registered method: name -> (weights before / from drw_epoch, λ). Beyond the paper: test_methods_beyond.py.
SCHEDULE = {
    **{name: (row[1], row[2]) for name, row in TABLE.items()},
    "trades": ("uniform", 0.0),
    "srat-trades": ("drw", 2.0),
    "mart": ("uniform", 0.0),
    "balanced-softmax": ("uniform", 0.0),
    "logit-adjust": ("uniform", 0.0),
    "logit-adjust-posthoc": ("uniform", 0.0),
    "robal": ("uniform", 0.0),
    "resample": ("uniform", 0.0),
    "awp": ("uniform", 0.0),
    "trades-awp": ("uniform", 0.0),
    "at-bsl-ra": ("uniform", 0.0),
    "at-bsl-aua": ("uniform", 0.0),
    "reat": ("uniform", 0.0),
    "robustlt": ("uniform", 0.0),
    "taet": ("uniform", 0.0),
}
NAMES = methods.names()

EPOCHS, MILESTONES, DRW = 20, [16, 18], 16
COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]  # CIFAR-10 exp-100
C = len(COUNTS)
N = 24


# --------------------------------------------------------------------------------------------------------------
# Naive references (plain Python floats)
# --------------------------------------------------------------------------------------------------------------


def _rows(t):
    return [[float(v) for v in row] for row in t.detach().double().tolist()]


def _ce_terms(rows, ys):
    out = []
    for row, y in zip(rows, ys):
        top = max(row)
        out.append(top + math.log(sum(math.exp(v - top) for v in row)) - row[y])
    return out


def naive_cb(counts, beta=0.9999):
    effective = [(1.0 - beta**n) / (1.0 - beta) for n in counts]
    e_max = effective[counts.index(max(counts))]
    return [e_max / e for e in effective]


def naive_prediction(kind, logits, targets, weight, gamma=1.0, max_m=0.5, s=30.0):
    rows, ys = _rows(logits), [int(y) for y in targets.tolist()]
    w = [1.0] * len(rows[0]) if weight is None else [float(v) for v in weight.tolist()]
    if kind == "ldam":
        m = [max_m * (min(COUNTS) / n) ** 0.25 for n in COUNTS]
        shifted = []
        for row, y in zip(rows, ys):
            r = [s * v for v in row]
            r[y] = s * (row[y] - m[y])
            shifted.append(r)
        rows = shifted
    ce = _ce_terms(rows, ys)
    if kind == "focal":
        ells = [w[y] * c for y, c in zip(ys, ce)]
        return sum((1.0 - math.exp(-ell)) ** gamma * ell for ell in ells) / len(ells)
    return sum(w[y] * c for y, c in zip(ys, ce)) / sum(w[y] for y in ys)


def naive_separation(features, targets, tau=0.07):
    z, ys = _rows(features), [int(y) for y in targets.tolist()]
    n = len(z)
    sim = [[sum(a * b for a, b in zip(z[i], z[j])) / tau for j in range(n)] for i in range(n)]
    per_anchor = []
    for i in range(n):
        partners = [p for p in range(n) if p != i and ys[p] == ys[i]]
        if not partners:
            continue
        denominator = sum(math.exp(sim[i][a]) for a in range(n) if a != i)
        per_anchor.append(-sum(math.log(math.exp(sim[i][p]) / denominator) for p in partners) / len(partners))
    return sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


def expected_weights(name, epoch, drw_epoch=DRW):
    schedule = SCHEDULE[name][0]
    if schedule == "uniform" or (schedule == "drw" and epoch < drw_epoch):
        return None
    return naive_cb(COUNTS)


def batch(seed=0, n=N, d=16):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, C, generator=gen).requires_grad_(True)
    targets = torch.randint(0, C, (n,), generator=gen)
    raw = torch.randn(n, d, generator=gen).requires_grad_(True)
    return logits, targets, raw


def inputs_for(method, epoch, logits, targets, projection):
    """The batch's loss inputs; methods that need clean logits get a fixed stand-in (the batch reversed)."""
    return LossInputs(
        logits=logits,
        targets=targets,
        class_counts=torch.tensor(COUNTS),
        epoch=epoch,
        weight=method.class_weights(epoch, torch.tensor(COUNTS)),
        projection=projection,
        clean_logits=logits.detach().flip(0) if method.needs_clean_logits else None,
        features=logits if method.needs_features else None,  # a stand-in for h that reaches the logits
    )


def run_method(name, **overrides):
    return methods.get(name, **overrides).for_run(epochs=EPOCHS, milestones=MILESTONES)


# --------------------------------------------------------------------------------------------------------------
# The registry itself
# --------------------------------------------------------------------------------------------------------------


def test_names_are_the_paper_table_order_then_the_rest():
    assert NAMES[: len(PAPER_ORDER)] == PAPER_ORDER
    assert set(NAMES) == set(SCHEDULE), "a registered method without a SCHEDULE row here"
    assert methods.names("srat-*") == ["srat-ce", "srat-focal", "srat-ldam", "srat-trades"]
    assert methods.names("*ldam") == ["ldam", "drcb-ldam", "srat-ldam"]


@pytest.mark.parametrize("name", PAPER_ORDER)
def test_method_declares_table_row_and_spec_defaults(name):
    loss, _, lam = TABLE[name]
    m = methods.get(name)
    assert isinstance(m, Method)
    assert m.name == name
    assert m.prediction_loss == loss
    assert m.lam == lam
    assert m.uses_projection == (lam > 0)
    assert (m.beta, m.normalize, m.temperature, m.classifier) == (0.9999, "max", 0.07, "linear")
    assert m.drw_epoch is None and m.under_weight is None
    if loss == "focal":
        assert m.gamma == 1.0
    if loss == "ldam":
        assert (m.max_m, m.s) == (0.5, 30.0)
    assert m.description


@pytest.mark.parametrize("name", NAMES)
def test_methods_are_frozen(name):
    with pytest.raises(dataclasses.FrozenInstanceError):
        methods.get(name).lam = 1.0  # type: ignore[misc]


def test_unknown_method_lists_valid_names_and_close_match():
    with pytest.raises(BenchError) as info:
        methods.get("srat-ldm")
    message = str(info.value)
    assert "unknown method 'srat-ldm'" in message
    assert "did you mean 'srat-ldam'?" in message
    for name in PAPER_ORDER:
        assert name in message
    assert isinstance(info.value, ValueError)


def test_unknown_method_without_close_match():
    with pytest.raises(BenchError, match=r"unknown method 'zzz'; valid: ce, focal") as info:
        methods.get("zzz")
    assert "did you mean" not in str(info.value)


def test_duplicate_registration_refused():
    @dataclass(frozen=True)
    class Impostor(Method):
        pass

    with pytest.raises(ValueError, match=r"method 'ce' is already registered"):
        methods.register("ce")(Impostor)
    assert methods.names() == NAMES
    assert type(methods.get("ce")).__name__ == "CE"


def test_register_only_accepts_method_subclasses():
    with pytest.raises(TypeError, match=r"expects a Method subclass"):
        methods.register("not-a-method")(object)
    assert "not-a-method" not in methods.names()


def test_register_new_method_plugin(monkeypatch):
    # Work on a copy of the registry so the global table is left as it was.
    monkeypatch.setattr(methods.METHODS, "_items", dict(methods.METHODS._items))

    @methods.register("test-drw-focal2")
    @dataclass(frozen=True)
    class DRWFocal2(FocalFamily):
        weight_schedule = "drw"
        gamma: float = 2.0

    assert methods.names()[-1] == "test-drw-focal2"
    m = methods.get("test-drw-focal2", gamma="5/2").for_run(epochs=EPOCHS, milestones=MILESTONES)
    assert m.name == "test-drw-focal2" and m.gamma == 2.5
    assert m.class_weights(DRW - 1, COUNTS) is None
    assert m.class_weights(DRW, COUNTS).tolist() == pytest.approx(naive_cb(COUNTS), rel=1e-6)


# --------------------------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------------------------


def test_unknown_hyperparameter_names_it_and_suggests():
    with pytest.raises(BenchError) as info:
        methods.get("srat-ldam", lamda=1.0)
    message = str(info.value)
    assert "unknown hyperparameter 'lamda'" in message
    assert "did you mean 'lam'?" in message
    valid = message.split("valid:")[1]
    for field in ("beta", "normalize", "drw_epoch", "under_weight", "lam", "temperature", "max_m", "s"):
        assert field in valid


def test_hyperparameter_of_another_family_is_unknown():
    with pytest.raises(BenchError, match=r"method ce: unknown hyperparameter 'gamma'") as info:
        methods.get("ce", gamma=2.0)
    assert not re.search(r"\bgamma\b", str(info.value).split("valid:")[1])  # awp_gamma is every method's


@pytest.mark.parametrize(
    "name,key,value,expected",
    [
        ("srat-ce", "lam", "1/2", 0.5),
        ("srat-ldam", "lam", 1, 1.0),
        ("focal", "gamma", "3/2", 1.5),
        ("cb-reweight", "beta", "0.999", 0.999),
        ("cb-reweight", "beta", "9999/10000", 0.9999),
        ("srat-focal", "temperature", "7/100", 0.07),
        ("ldam", "s", "30", 30.0),
        ("drcb-ce", "drw_epoch", "150", 150),
        ("drcb-ce", "drw_epoch", 150.0, 150),
        ("drcb-ce", "drw_epoch", None, None),
        ("drcb-ce", "under_weight", "50", 50.0),
        ("drcb-ce", "under_weight", None, None),
        ("cb-focal", "normalize", "sum", "sum"),
        ("ldam", "classifier", "cosine", "cosine"),
    ],
)
def test_overrides_are_coerced(name, key, value, expected):
    got = getattr(methods.get(name, **{key: value}), key)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    "name,key,value,pattern",
    [
        ("cb-reweight", "beta", 1.5, r"beta = 1\.5 is invalid; must be in \[0, 1\)"),
        ("cb-reweight", "beta", "3/2", r"beta = 1\.5 is invalid"),
        ("cb-reweight", "beta", -0.1, r"beta = -0\.1 is invalid"),
        ("srat-ce", "lam", -1, r"lam = -1\.0 is invalid; must be >= 0"),
        ("srat-ce", "lam", "abc", r"lam: expected a number"),
        ("srat-ce", "lam", True, r"lam"),
        ("srat-ce", "lam", None, r"lam may not be empty"),
        ("srat-ce", "temperature", 0, r"temperature = 0\.0 is invalid; must be > 0"),
        ("focal", "gamma", -1, r"gamma = -1\.0 is invalid; must be >= 0"),
        ("ldam", "max_m", -0.1, r"max_m = -0\.1 is invalid"),
        ("ldam", "s", 0, r"s = 0\.0 is invalid; must be > 0"),
        ("drcb-ce", "drw_epoch", -1, r"drw_epoch = -1 is invalid; must be >= 0"),
        ("drcb-ce", "drw_epoch", "1/2", r"drw_epoch = '1/2' must be int"),
        ("drcb-ce", "under_weight", 0, r"under_weight = 0\.0 is invalid; must be > 0"),
        ("cb-focal", "normalize", "l2", r"normalize = 'l2' is invalid; must be one of max, sum"),
        ("cb-focal", "normalize", 3, r"normalize = 3 must be str"),
        ("ce", "classifier", "mlp", r"classifier = 'mlp' is invalid; must be one of linear, cosine"),
    ],
)
def test_bad_overrides_rejected(name, key, value, pattern):
    with pytest.raises(BenchError, match=pattern) as info:
        methods.get(name, **{key: value})
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"method {name}")


# --------------------------------------------------------------------------------------------------------------
# for_run and class weights
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_for_run_fills_drw_epoch_from_first_milestone(name):
    m = methods.get(name)
    assert m.for_run(epochs=200, milestones=[160, 180]).drw_epoch == 160
    assert m.for_run(epochs=EPOCHS, milestones=MILESTONES).drw_epoch == DRW
    assert m.for_run(epochs=30, milestones=[]).drw_epoch == 30
    assert m.drw_epoch is None  # not mutated
    explicit = methods.get(name, drw_epoch=5)
    assert explicit.for_run(epochs=200, milestones=[160, 180]).drw_epoch == 5
    assert type(m.for_run(epochs=1, milestones=[1])) is type(m)


@pytest.mark.parametrize("name", NAMES)
def test_for_cell_is_get_then_for_run_on_a_cell_config(name):
    """``methods.for_cell`` is the one place a cell's method is built (suite, runner and bench evaluate use it)."""
    config = {"method": name, "method_args": {"drw_epoch": "3"} if name == "ce" else {}, "epochs": 20,
              "milestones": [16, 18]}
    expected = methods.get(name, **config["method_args"]).for_run(epochs=20, milestones=[16, 18])
    assert methods.for_cell(config) == expected
    assert methods.for_cell(config).drw_epoch == (3 if name == "ce" else 16)


def test_a_suite_stores_the_method_for_cell_builds():
    from pathlib import Path

    from bench.settings import Settings
    from bench.suite import load_suite

    for cell in load_suite(Path(__file__).resolve().parents[1] / "suites" / "quick.toml", Settings()).cells:
        assert methods.for_cell(cell.config).params() == cell["method_params"]
        assert dataclasses.asdict(methods.for_cell(cell.config)) == {**CAPABILITY_DEFAULTS, **cell["method_params"]}


def test_the_method_contract_loads_without_torch():
    """The registry and hyperparameter resolution are torch-free; losses and weights are imported when computed."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, methods; methods.for_cell({'method': 'srat-ldam', 'method_args': {'lam': 1}, 'epochs': 5, "
            "'milestones': [3]}); print(sorted(m for m in ('torch', 'methods.losses', 'methods.weights') "
            "if m in sys.modules))")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", [n for n in NAMES if SCHEDULE[n][0] != "uniform"])
def test_reweighting_methods_need_for_run(name):
    with pytest.raises(ValueError, match=r"for_run"):
        methods.get(name).class_weights(0, COUNTS)


@pytest.mark.parametrize("name", NAMES)
def test_class_weights_follow_the_table_every_epoch(name):
    m = run_method(name)
    for epoch in range(EPOCHS):
        w = m.class_weights(epoch, torch.tensor(COUNTS))
        expected = expected_weights(name, epoch)
        if expected is None:
            assert w is None, f"{name} epoch {epoch}: expected uniform weights"
        else:
            assert isinstance(w, torch.Tensor) and w.shape == (C,) and w.is_floating_point()
            assert w.tolist() == pytest.approx(expected, rel=1e-6), f"{name} epoch {epoch}"


@pytest.mark.parametrize("name", [n for n in NAMES if SCHEDULE[n][0] == "drw"])
def test_drw_switches_exactly_at_drw_epoch(name):
    for epochs, milestones, switch in [(20, [16, 18], 16), (200, [160, 180], 160)]:
        m = methods.get(name).for_run(epochs=epochs, milestones=milestones)
        assert m.class_weights(switch - 1, COUNTS) is None
        assert m.class_weights(switch, COUNTS).tolist() == pytest.approx(naive_cb(COUNTS), rel=1e-6)
        assert m.class_weights(epochs - 1, COUNTS).tolist() == pytest.approx(naive_cb(COUNTS), rel=1e-6)
    m = methods.get(name, drw_epoch="7").for_run(epochs=200, milestones=[160, 180])
    assert m.class_weights(6, COUNTS) is None
    assert m.class_weights(7, COUNTS) is not None


@pytest.mark.parametrize("name", [n for n in NAMES if SCHEDULE[n][0] != "uniform"])
def test_weight_overrides_reach_the_schedule(name):
    switch = 0 if SCHEDULE[name][0] == "cb" else DRW
    fixed = run_method(name, under_weight=50).class_weights(switch, COUNTS)
    assert fixed.tolist() == [1.0] * 5 + [50.0] * 5
    summed = run_method(name, normalize="sum").class_weights(switch, COUNTS)
    assert summed.sum().item() == pytest.approx(C, rel=1e-6)
    other_beta = run_method(name, beta=0.999).class_weights(switch, COUNTS)
    assert other_beta.tolist() == pytest.approx(naive_cb(COUNTS, beta=0.999), rel=1e-6)


# --------------------------------------------------------------------------------------------------------------
# Losses through the method interface
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("epoch", [0, DRW - 1, DRW, EPOCHS - 1])
@pytest.mark.parametrize("name", NAMES)
def test_loss_finite_and_gradients_reach_inputs(name, epoch):
    m = run_method(name)
    logits, targets, raw = batch(seed=epoch)
    loss = m.loss(inputs_for(m, epoch, logits, targets, F.normalize(raw, dim=1)))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    if m.uses_projection:
        assert raw.grad is not None and torch.isfinite(raw.grad).all() and raw.grad.abs().sum() > 0
    else:
        assert raw.grad is None, f"{name} must not touch the projection"


@pytest.mark.parametrize("epoch", [0, DRW - 1, DRW, EPOCHS - 1])
@pytest.mark.parametrize("name", PAPER_ORDER)
def test_loss_value_matches_naive_formula(name, epoch):
    kind, _, lam = TABLE[name]
    m = run_method(name)
    logits, targets, raw = batch(seed=100 + epoch)
    projection = F.normalize(raw, dim=1).detach()
    got = m.loss(inputs_for(m, epoch, logits, targets, projection)).item()
    expected = naive_prediction(kind, logits, targets, _as_tensor(expected_weights(name, epoch)))
    if lam:
        expected += lam * naive_separation(projection, targets, 0.07)
    assert got == pytest.approx(expected, rel=2e-5, abs=1e-5)


def _as_tensor(w):
    return None if w is None else torch.tensor(w, dtype=torch.float64)


@pytest.mark.parametrize(
    "name,overrides,kwargs",
    [
        ("focal", {"gamma": 2}, {"gamma": 2.0}),
        ("cb-focal", {"gamma": "0"}, {"gamma": 0.0}),
        ("ldam", {"max_m": 0.3, "s": 10}, {"max_m": 0.3, "s": 10.0}),
        ("drcb-ldam", {"max_m": "1/4"}, {"max_m": 0.25}),
    ],
)
def test_loss_hyperparameter_overrides_change_the_formula(name, overrides, kwargs):
    kind = TABLE[name][0]
    m = run_method(name, **overrides)
    logits, targets, raw = batch(seed=7)
    got = m.loss(inputs_for(m, DRW, logits, targets, None)).item()
    expected = naive_prediction(kind, logits, targets, _as_tensor(expected_weights(name, DRW)), **kwargs)
    assert got == pytest.approx(expected, rel=2e-5, abs=1e-5)


@pytest.mark.parametrize("loss", ["ce", "focal", "ldam"])
@pytest.mark.parametrize("epoch", [0, DRW])
@pytest.mark.parametrize("lam", [None, "1/2"])
def test_srat_is_drw_baseline_plus_lambda_separation(loss, epoch, lam):
    overrides = {} if lam is None else {"lam": lam}
    srat = run_method(f"srat-{loss}", **overrides)
    drw = run_method(f"drcb-{loss}")
    expected_lam = 2.0 if lam is None else 0.5
    assert srat.lam == expected_lam
    logits, targets, raw = batch(seed=200 + epoch)
    projection = F.normalize(raw, dim=1).detach()
    w_srat = srat.class_weights(epoch, COUNTS)
    w_drw = drw.class_weights(epoch, COUNTS)
    assert (w_srat is None) == (w_drw is None) == (epoch < DRW)
    if w_srat is not None:
        assert torch.equal(w_srat, w_drw)
    got = srat.loss(inputs_for(srat, epoch, logits, targets, projection)).item()
    base = drw.loss(inputs_for(drw, epoch, logits, targets, None)).item()
    sep = naive_separation(projection, targets, 0.07)
    assert sep > 0
    assert got == pytest.approx(base + expected_lam * sep, rel=1e-5, abs=1e-5)


def test_srat_separation_uses_the_temperature_hyperparameter():
    m = run_method("srat-ce", temperature=0.5)
    base = run_method("drcb-ce")
    logits, targets, raw = batch(seed=3)
    projection = F.normalize(raw, dim=1).detach()
    got = m.loss(inputs_for(m, 0, logits, targets, projection)).item()
    expected = base.loss(inputs_for(base, 0, logits, targets, None)).item() + 2.0 * naive_separation(
        projection, targets, 0.5
    )
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", [n for n in NAMES if SCHEDULE[n][1] > 0])
def test_srat_without_projection_is_an_error(name):
    m = run_method(name)
    logits, targets, _ = batch()
    with pytest.raises(ValueError, match=r"got no projection"):
        m.loss(inputs_for(m, 0, logits, targets, None))


@pytest.mark.parametrize("name", [n for n in NAMES if SCHEDULE[n][1] == 0])
def test_lambda_override_switches_the_projection_on(name):
    m = run_method(name, lam=1)
    assert m.uses_projection
    logits, targets, raw = batch(seed=4)
    projection = F.normalize(raw, dim=1).detach()
    base = run_method(name)
    got = m.loss(inputs_for(m, DRW, logits, targets, projection)).item()
    expected = base.loss(inputs_for(base, DRW, logits, targets, None)).item() + naive_separation(
        projection, targets
    )
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-5)


# --------------------------------------------------------------------------------------------------------------
# A tiny model end to end
# --------------------------------------------------------------------------------------------------------------


class TinyNet(nn.Module):
    """Linear feature extractor, linear classifier and a projection head with L2 normalisation."""

    def __init__(self, d_in=12, d_feat=16, d_proj=8, classes=C):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(d_in, d_feat), nn.Tanh())
        self.classifier = nn.Linear(d_feat, classes)
        self.head = nn.Sequential(nn.Linear(d_feat, d_feat), nn.ReLU(), nn.Linear(d_feat, d_proj))

    def forward(self, x):
        h = self.features(x)
        return self.classifier(h), F.normalize(self.head(h), dim=1)


@pytest.mark.parametrize("epoch", [0, DRW])
@pytest.mark.parametrize("name", NAMES)
def test_tiny_model_gradients(name, epoch):
    torch.manual_seed(0)
    model = TinyNet()
    m = run_method(name)
    x = torch.randn(N, 12)
    targets = torch.arange(N) % C  # every class present, most with partners
    logits, z = model(x)
    loss = m.loss(inputs_for(m, epoch, logits, targets, z))
    assert torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        affects_loss = not pname.startswith("head.") or m.uses_projection
        if affects_loss:
            assert p.grad is not None, f"{name}: no gradient for {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
        else:
            assert p.grad is None, f"{name}: {pname} should not affect the loss"
    assert model.features[0].weight.grad.abs().sum() > 0
    assert model.classifier.weight.grad.abs().sum() > 0
    if m.uses_projection:
        assert model.head[2].weight.grad.abs().sum() > 0
