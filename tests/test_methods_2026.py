"""The 2025-2026 baselines (issue 18): AWP, AT-BSL's augmentations, REAT, class-wise budgets (RobustLT), TAET.

Every loss and every perturbation step is compared with a naive re-computation written here — plain Python loops
over floats, or the reference's own arithmetic spelled out step by step (a proxy network and ``torch.optim.SGD``
for AWP, torchvision's transform image by image for the augmentations) — never with the code under test. The
method contract's new hooks are checked through the runner's training loop on digits.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from click.testing import CliRunner

import methods
from bench.attacks import pgd
from bench.augment import augment
from bench.data import prepare
from bench.suite import BUILTIN_DEFAULTS
from bench.train import train
from methods import losses_lt
from methods.base import LossInputs, StepContext
from methods.perturb import adversarial_weight_perturbation, awp_direction

NEW = ["awp", "trades-awp", "at-bsl-ra", "at-bsl-aua", "reat", "robustlt", "taet"]
COUNTS = [500, 300, 120, 60, 20, 9, 5, 3, 2, 1]  # ten classes: REAT's tail is 7, 8, 9
C = len(COUNTS)


def _softmax(row):
    top = max(row)
    e = [math.exp(v - top) for v in row]
    return [v / sum(e) for v in e]


def _ce(row, y):
    return -math.log(_softmax(row)[y])


# --------------------------------------------------------------------------------------------------------- AWP


class Net(nn.Module):
    """A convolution, batch norm and a linear head: weights with and without the AWP criterion, and buffers."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 4 * 4, C)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


def _awp_batch(seed=0):
    torch.manual_seed(seed)
    model = Net().train()
    x = torch.rand(8, 1, 4, 4)
    y = torch.arange(8) % C
    return model, x, y


def _reference_diff(model, x, y, lr):
    """csdongxian/AWP ``calc_awp`` + ``diff_in_weights``, written out: a proxy copy, one SGD step on −CE."""
    proxy = copy.deepcopy(model)
    proxy.load_state_dict(model.state_dict())
    proxy.train()
    opt = torch.optim.SGD(proxy.parameters(), lr=lr)
    loss = -F.cross_entropy(proxy(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    out = {}
    for (k, old), (_, new) in zip(model.state_dict().items(), proxy.state_dict().items()):
        if len(old.size()) <= 1:
            continue
        if "weight" in k:
            d = new - old
            out[k] = old.norm() / (d.norm() + 1e-20) * d
    return out


@pytest.mark.parametrize("lr", [0.01, 0.1])
def test_awp_direction_is_the_reference_proxy_step(lr):
    model, x, y = _awp_batch()
    before = copy.deepcopy(model.state_dict())
    got = awp_direction(model, lambda: F.cross_entropy(model(x), y), lr)
    expected = _reference_diff(model, x, y, lr)
    assert list(expected) == ["conv.weight", "fc.weight"]  # no bias, no batch-norm scale
    for g, (name, e) in zip(got, expected.items()):
        assert torch.equal(g, e), name  # bit for bit: the same float operations as the reference's proxy
        w = before[name]  # naive: each layer's perturbation has the norm of its weight
        assert math.sqrt(sum(v * v for v in g.flatten().tolist())) == pytest.approx(w.norm().item(), rel=1e-5)
    for k, v in model.state_dict().items():  # weights and batch-norm running statistics untouched
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_awp_perturbs_steps_and_restores_exactly_the_reference_arithmetic():
    model, x, y = _awp_batch(1)
    gamma, lr = 0.01, 0.05
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.0)
    # by hand: w + γd, the SGD step taken there, then + (−γ)d
    hand = copy.deepcopy(model)
    d = _reference_diff(hand, x, y, 0.01)
    with torch.no_grad():
        for name, p in hand.named_parameters():
            if name in d:
                p.add_(1.0 * gamma * d[name])
    hand_opt = torch.optim.SGD(hand.parameters(), lr=lr, momentum=0.0)
    hand_opt.zero_grad()
    F.cross_entropy(hand(x), y).backward()
    hand_opt.step()
    with torch.no_grad():
        for name, p in hand.named_parameters():
            if name in d:
                p.add_(-1.0 * gamma * d[name])

    method = methods.get("awp").for_run(epochs=1, milestones=[])
    seen_inside = {}
    with method.around_step(StepContext(model, 0, lambda: F.cross_entropy(model(x), y))):
        seen_inside = {k: v.clone() for k, v in model.state_dict().items()}
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    for k, v in model.state_dict().items():  # bit for bit the reference's ((w + γd) + SGD step) + (−γd)
        assert torch.equal(v, hand.state_dict()[k]), k
    # inside the step: weight matrices moved by γ·d, biases and batch-norm parameters did not
    assert not torch.equal(seen_inside["conv.weight"], w0["conv.weight"])
    for k in ("conv.bias", "bn.weight", "bn.bias", "fc.bias", "bn.running_mean"):
        assert torch.equal(seen_inside[k], w0[k]), k


def test_awp_without_an_optimiser_step_restores_the_weights():
    model, x, y = _awp_batch(2)
    w0 = {k: v.clone() for k, v in model.named_parameters()}
    with adversarial_weight_perturbation(model, lambda: F.cross_entropy(model(x), y), 0.01, 0.01) as d:
        assert max((model.conv.weight - w0["conv.weight"]).abs().max().item(), 0) > 0
    for k, v in model.named_parameters():
        # (w + γd) − γd: equal to w up to one rounding of the addition
        assert torch.allclose(v, w0[k], rtol=0, atol=4 * torch.finfo(v.dtype).eps * (1 + w0[k].abs().max().item()))
    assert len(d) == 2


def test_awp_switches_on_at_its_warmup_epoch():
    model, x, y = _awp_batch(3)
    m = methods.get("trades-awp").for_run(epochs=20, milestones=[])
    assert (m.awp_gamma, m.awp_warmup, m.awp_proxy_lr, m.kl_weight) == (0.005, 9, 0.1, 6.0)
    a = methods.get("awp")
    assert (a.awp_gamma, a.awp_warmup, a.awp_proxy_lr) == (0.01, 0, 0.01)
    calls = []

    def loss():
        calls.append(1)
        return F.cross_entropy(model(x), y)

    with m.around_step(StepContext(model, 8, loss)):
        pass
    assert not calls
    with m.around_step(StepContext(model, 9, loss)):
        pass
    assert calls
    assert methods.get("ce", awp_gamma=0.01).needs() == ["AWP gamma 0.01"]


# ------------------------------------------------------------------------------------------------ augmentation


def _images(n=12, c=3, h=8, w=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=gen).float() / 255


@pytest.mark.parametrize("kind", ["randaugment", "autoaugment"])
def test_policy_is_torchvision_applied_image_by_image(kind):
    """The batched policy equals torchvision's per-image arithmetic for the same draws (re-drawn here in order)."""
    from torchvision.transforms import v2

    x = _images()
    out = augment(x, kind, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    if kind == "randaugment":
        t = v2.RandAugment(num_ops=2, magnitude=8)
        ops = list(t._AUGMENTATION_SPACE)
        drawn = torch.randint(0, len(ops), (2, x.shape[0]), generator=gen)
        negate = torch.rand((2, x.shape[0]), generator=gen) <= 0.5
        plan = [[(ops[drawn[k, i]], t.magnitude, 31, bool(negate[k, i]), True) for k in range(2)]
                for i in range(x.shape[0])]
    else:
        t = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
        chosen = torch.randint(0, len(t._policies), (x.shape[0],), generator=gen)
        applied = torch.rand((2, x.shape[0]), generator=gen)
        negate = torch.rand((2, x.shape[0]), generator=gen) <= 0.5
        plan = []
        for i in range(x.shape[0]):
            sub = t._policies[int(chosen[i])]
            plan.append([(sub[k][0], sub[k][2], 10, bool(negate[k, i]), float(applied[k, i]) <= sub[k][1])
                         for k in range(2)])
    for i in range(x.shape[0]):
        img = (x[i] * 255).round().to(torch.uint8)
        acted = False
        for op, index, bins, neg, on in plan[i]:
            if not on:
                continue
            fn, signed = t._AUGMENTATION_SPACE[op]
            mags = fn(bins, 8, 8)
            m = 0.0 if mags is None or index is None else float(mags[index])
            m = -m if signed and neg else m
            img = t._apply_image_or_video_transform(img, op, m, interpolation=t.interpolation, fill=t._fill)
            acted = acted or op != "Identity"
        expected = img.float() / 255 if acted else x[i]
        assert torch.equal(out[i], expected), (i, plan[i])


def test_policies_are_seeded_and_keep_untouched_images_bit_exact():
    x = _images(n=1000, c=1) * 0.7 + 0.01  # not multiples of 1/255; 1000 images: some draw Identity twice
    a = augment(x, "randaugment", torch.Generator().manual_seed(1))
    assert torch.equal(a, augment(x, "randaugment", torch.Generator().manual_seed(1)))
    assert not torch.equal(a, augment(x, "randaugment", torch.Generator().manual_seed(2)))
    same = (a == x).flatten(1).all(1)
    assert same.any()  # Identity-only draws: returned bit for bit
    pipeline = augment(x, "randaugment+crop-flip", torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(1)
    assert torch.equal(pipeline, augment(augment(x, "randaugment", gen), "crop-flip", gen))


def test_method_default_augment_and_its_precedence(tmp_path):
    from bench.errors import BenchError
    from bench.settings import Settings
    from bench.suite import load_suite

    def cells(extra=""):
        path = tmp_path / "s.toml"
        path.write_text(f'name = "s"\n[defaults]\nepochs = 2\n{extra}\n[[grid]]\ndataset = "digits"\n'
                        'imbalance = "step-10"\nmethod = ["ce", "at-bsl-ra", "at-bsl-aua"]\n')
        return {c["method"]: c["augment"] for c in load_suite(path, Settings()).cells}

    assert cells() == {"ce": "none", "at-bsl-ra": "randaugment+crop-flip", "at-bsl-aua": "autoaugment+crop-flip"}
    assert cells('augment = "flip"') == {"ce": "flip", "at-bsl-ra": "flip", "at-bsl-aua": "flip"}
    path = tmp_path / "bad.toml"
    path.write_text('name = "b"\n[[grid]]\ndataset = "digits"\nimbalance = "step-10"\nmethod = "ce"\n'
                    'augment = "flip+flip"\n')
    with pytest.raises(BenchError, match=r"augment = 'flip\+flip' is unknown"):
        load_suite(path, Settings())


# ------------------------------------------------------------------------------------------------------- REAT


def test_rbl_weights_are_the_reference_loop():
    import numpy as np

    counts = [500, 300, 120, 60, 20, 9, 5, 3, 2, 1]
    predicted = [700, 250, 0, 60, 30, 1, 5, 0, 2, 1]
    beta = np.zeros(C).astype(np.float32)
    e = np.zeros(C).astype(np.float32)
    for i in range(C):  # loss_functions.RBL, line by line
        beta[i] = (counts[i] - 1.0) / counts[i]
        e[i] = (1.0 - beta[i] ** predicted[i]) / (1.0 - beta[i])
    w = 1.0 / (e + 1e-5)
    w = w / np.sum(w) * C
    got = losses_lt.rbl_weights(torch.tensor(counts), torch.tensor(predicted))
    assert got.dtype == torch.float32
    assert got.tolist() == pytest.approx(w.tolist(), rel=1e-6)
    logits, y = torch.randn(16, C), torch.arange(16) % C
    total = losses_lt.rbl_attack_loss(got)(logits, y).sum()
    assert total.item() == pytest.approx(F.cross_entropy(logits, y, weight=got).item(), rel=1e-6)


def _naive_tail(features, targets, counts, reduction):
    f, ys = features.double().tolist(), targets.tolist()
    n, d = len(f), len(f[0])
    total_n = sum(counts)
    w = [math.sqrt(1.0 / (c / total_n)) for c in counts]
    tail = list(range(len(counts) // 3 * 2 + 1, len(counts)))
    acc, anchors = [0.0] * n, 0
    for a in range(n):
        if ys[a] not in tail:
            continue
        anchors += 1
        q = _softmax(f[a])
        kl = []
        for j in range(n):
            top = max(f[j])
            lse = top + math.log(sum(math.exp(v - top) for v in f[j]))
            kl.append([q[k] * (math.log(q[k]) - (f[j][k] - lse)) for k in range(d)])
        mean_all = sum(sum(row) for row in kl) / (n * d)  # KLDivLoss(size_average=<truthy>): mean of every element
        for j in range(n):
            k_aj = mean_all if reduction == "mean" else sum(kl[j])
            acc[j] += k_aj * (-1.0 if ys[j] == ys[a] else 1.0) * (w[ys[a]] + w[ys[j]])
    return sum(acc) / n / anchors if anchors else 0.0


def test_reat_tail_term_stays_float32_under_bf16_autocast():
    """Precision "auto" trains in bf16 on CUDA: the tail term's KL is a difference that cancels, so it must not be
    computed from a bf16 matrix product (5 % off there); it is the float32 reference loop's value, as a float32."""
    gen = torch.Generator().manual_seed(0)
    f = (torch.relu(torch.randn(48, 64, generator=gen)) * 0.5).requires_grad_(True)
    y = torch.randint(0, 10, (48,), generator=gen)
    y[:10] = 9
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = losses_lt.reat_tail_loss(f, y, torch.tensor(COUNTS), "mean")
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(_naive_tail(f.double(), y, COUNTS, "mean"), rel=1e-4)
    got.backward()
    assert f.grad.dtype == torch.float32


@pytest.mark.parametrize("reduction", ["mean", "pair"])
def test_reat_tail_term_is_the_reference_loop(reduction):
    gen = torch.Generator().manual_seed(4)
    f = torch.randn(12, 6, generator=gen, dtype=torch.float64).requires_grad_(True)
    y = torch.tensor([0, 7, 8, 1, 9, 7, 2, 3, 8, 5, 9, 0])
    got = losses_lt.reat_tail_loss(f, y, torch.tensor(COUNTS), reduction)
    assert got.item() == pytest.approx(_naive_tail(f, y, COUNTS, reduction), rel=1e-9)
    got.backward()
    assert f.grad.abs().sum() > 0
    no_tail = losses_lt.reat_tail_loss(f, torch.zeros(12, dtype=torch.long), torch.tensor(COUNTS), reduction)
    assert no_tail.item() == 0.0


def test_reat_loss_is_balanced_softmax_plus_tail_and_counts_predictions():
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(10, C, generator=gen)
    feats = torch.randn(10, 5, generator=gen)
    y = torch.arange(10)
    m = methods.get("reat").for_run(epochs=2, milestones=[])
    counts = torch.tensor(COUNTS, dtype=torch.float32)
    got = m.loss(LossInputs(logits=logits, targets=y, class_counts=counts, epoch=0, features=feats)).item()
    bsl = sum(_ce([v + math.log(n) for v, n in zip(row, COUNTS)], t) for row, t in zip(logits.tolist(), y.tolist()))
    assert got == pytest.approx(bsl / 10 + _naive_tail(feats, y, COUNTS, "mean"), rel=1e-5)
    state = m.init_state(counts)
    assert state["predicted"].tolist() == COUNTS  # the first epoch weighs by the training counts
    m.observe(state, LossInputs(logits=logits, targets=y, class_counts=counts, epoch=0))
    m.observe(state, LossInputs(logits=logits, targets=y, class_counts=counts, epoch=0))
    m.end_epoch(state, 0)
    assert state["predicted"].tolist() == torch.bincount(logits.argmax(1) , minlength=C).mul(2).tolist()
    assert state["counting"].sum().item() == 0
    assert m.attack_start_std is None and "own attack objective" in m.needs()


# ------------------------------------------------------------------------------- class-wise budgets (RobustLT)


def test_classwise_budgets_are_the_reference_formula():
    counts = [500, 300, 120, 60, 20]
    eps, alpha, a, beta, epochs = 8 / 255, 2 / 255, 0.3, 0.8, 10
    n_max, total = max(counts), sum(counts)
    s = [math.sqrt(math.log(n_max / n)) for n in counts]
    tau = a / sum(n / total * si for n, si in zip(counts, s))
    eps_c = [(1 - a) * eps + tau * si * eps for si in s]
    assert sum(n / total * e for n, e in zip(counts, eps_c)) == pytest.approx(eps)  # the mean budget is ε
    y = torch.tensor([0, 4, 2, 4, 1])
    for epoch in (0, 3, 8, 9):
        intensity = min(epoch / (beta * epochs), 1)
        e_i, a_i = losses_lt.classwise_budgets(y, torch.tensor(counts), eps, alpha, epoch, epochs, a, beta)
        assert e_i.tolist() == pytest.approx([eps_c[c] * intensity for c in y.tolist()], rel=1e-5, abs=1e-9)
        assert a_i.tolist() == pytest.approx([eps_c[c] * intensity / eps * alpha for c in y.tolist()], rel=1e-5,
                                             abs=1e-9)
    flat, _ = losses_lt.classwise_budgets(y, torch.tensor([7] * 5), eps, alpha, 9, 10, a, 0.0)
    assert flat.tolist() == pytest.approx([(1 - a) * eps] * 5)


def _naive_pgd(forward, x, y, eps, alpha, steps, start):
    """Per-sample PGD by the reference's formula: x ← min(max(x + α_i·sign(g), x0 − ε_i), x0 + ε_i), clip [0, 1]."""
    x_adv = (x + start).clamp(0, 1)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(forward(x_adv), y), x_adv)
        rows = []
        for i in range(x.shape[0]):
            r = x_adv[i].detach() + alpha[i] * g[i].sign()
            r = torch.min(torch.max(r, x[i] - eps[i]), x[i] + eps[i]).clamp(0, 1)
            rows.append(r)
        x_adv = torch.stack(rows)
    return x_adv.detach()


def test_pgd_with_per_sample_budgets_is_the_naive_loop():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, C))
    x, y = torch.rand(6, 1, 4, 4), torch.arange(6)
    eps = torch.tensor([0.0, 0.01, 0.05, 0.1, 0.2, 0.03])
    alpha = eps / 4
    got = pgd(model, x, y, eps=eps, alpha=alpha, steps=5, generator=torch.Generator().manual_seed(3), start_eps=0.1)
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(3))
    expected = _naive_pgd(model, x, y, eps.tolist(), alpha.tolist(), 5, (2 * noise - 1) * 0.1)
    assert torch.allclose(got, expected, atol=1e-6)
    assert ((got - x).abs().flatten(1).amax(1) <= eps + 1e-6).all()
    assert torch.equal(got[0], x[0])  # ε = 0 with a global start: back on x after the first step
    scalar = pgd(model, x, y, eps=0.05, alpha=0.01, steps=3, generator=torch.Generator().manual_seed(1))
    tensor = pgd(model, x, y, eps=torch.full((6,), 0.05), alpha=torch.full((6,), 0.01), steps=3,
                 generator=torch.Generator().manual_seed(1))
    assert torch.allclose(scalar, tensor, atol=1e-7)


def test_robustlt_budget_hook_and_capability_on_any_method():
    m = methods.get("robustlt")
    assert (m.cw_eps_alpha, m.cw_eps_warmup, m.cw_eps_start) == (0.3, 0.8, "global")
    y, counts = torch.tensor([0, 4]), torch.tensor([500.0, 300, 120, 60, 20])
    budget = m.attack_budget(4, 10, y, 8 / 255, 2 / 255, counts)
    assert budget.start_eps == 8 / 255 and budget.eps.shape == (2,)
    assert budget.eps[1] > budget.eps[0]  # the rare class gets the larger budget
    plain = methods.get("ce").attack_budget(4, 10, y, 8 / 255, 2 / 255, counts)
    assert (plain.eps, plain.alpha, plain.start_eps) == (8 / 255, 2 / 255, None)
    other = methods.get("at-bsl-aua", cw_eps_alpha=0.3, cw_eps_warmup=0.8, cw_eps_start="class")
    b = other.attack_budget(4, 10, y, 8 / 255, 2 / 255, counts)
    assert torch.equal(b.eps, budget.eps) and torch.equal(b.start_eps, b.eps)


# ------------------------------------------------------------------------------------------------------- TAET


def _naive_harl(logits, y, a=0.1, b=0.1, g=0.1):
    rows, ys = logits.double().tolist(), y.tolist()
    c = len(rows[0])
    per = [_ce(r, t) for r, t in zip(rows, ys)]
    cl = []
    for k in range(c):
        members = [p for p, t in zip(per, ys) if t == k]
        cl.append(sum(members) / (len(members) + 1e-10))
    avg = sum(cl) / c
    norm = [v / (sum(cl) + 1e-10) for v in cl]
    return a * avg + b * sum((v - avg) ** 2 for v in cl) / c + g * sum(v * v for v in norm)


@pytest.mark.parametrize("weights", [(0.1, 0.1, 0.1), (1.0, 0.5, 2.0)])
def test_harl_is_the_reference_formula(weights):
    gen = torch.Generator().manual_seed(8)
    logits = torch.randn(14, C, generator=gen)
    y = torch.tensor([0, 0, 1, 2, 2, 2, 3, 5, 5, 6, 7, 7, 0, 1])  # classes 4, 8, 9 absent
    got = losses_lt.harl_loss(logits, y, *weights).item()
    assert got == pytest.approx(_naive_harl(logits, y, *weights), rel=1e-5)


def test_taet_stages():
    m = methods.get("taet").for_run(epochs=100, milestones=[75, 90])
    assert m.stage1_epochs == 40 and not m.attack_on(39) and m.attack_on(40)
    assert methods.get("taet").for_run(epochs=10, milestones=[]).stage1_epochs == 4
    logits, y = torch.randn(6, C), torch.arange(6)
    counts = torch.tensor(COUNTS, dtype=torch.float32)
    natural = m.loss(LossInputs(logits=logits, targets=y, class_counts=counts, epoch=10, clean_logits=logits))
    assert natural.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    harl = m.loss(LossInputs(logits=logits, targets=y, class_counts=counts, epoch=40, clean_logits=logits))
    assert harl.item() == pytest.approx(_naive_harl(logits, y), rel=1e-5)


# ---------------------------------------------------------------------------- through the runner's training loop


def _config(**kw):
    return {**BUILTIN_DEFAULTS, "model": "cnn-small", "epochs": 1, "batch_size": 64, "lr": 0.05, "seed": 0,
            "train_attack": {"kind": "pgd", "eps": 0.1, "alpha": 0.05, "steps": 2, "random_start": True,
                             "bn_mode": "train"}, **kw}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return prepare("digits", "exp-10", 0, root=tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("name,args", [(n, {}) for n in NEW] + [("trades-awp", {"awp_warmup": 0}),
                                                                  ("taet", {"stage1_epochs": 1})])
def test_each_2026_method_trains_end_to_end(digits, tmp_path, name, args):
    method = methods.get(name, **args).for_run(epochs=2, milestones=[])
    outcome = train(_config(epochs=2, augment=method.default_augment or "none"), method, digits, tmp_path)
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in outcome.curves)


def test_runner_calls_the_hooks_generically(digits, tmp_path, monkeypatch):
    import bench.train as train_module

    budgets, real_pgd = [], train_module.pgd

    def spy(forward, x, y, **kw):
        budgets.append(kw)
        return real_pgd(forward, x, y, **kw)

    monkeypatch.setattr(train_module, "pgd", spy)
    train(_config(epochs=2), methods.get("taet", stage1_epochs=1).for_run(epochs=2, milestones=[]), digits, tmp_path)
    n_batches = math.ceil(len(digits.train_y) / 64)
    assert len(budgets) == n_batches  # no attack in the natural stage
    budgets.clear()
    train(_config(), methods.get("robustlt", cw_eps_warmup=0.0).for_run(epochs=1, milestones=[]), digits,
          tmp_path / "r")
    assert budgets and all(isinstance(kw["eps"], torch.Tensor) and kw["start_eps"] == 0.1 for kw in budgets)


def test_reat_state_resumes_exactly(digits, tmp_path):
    method = methods.get("reat").for_run(epochs=2, milestones=[])
    whole = train(_config(epochs=2), method, digits, tmp_path / "whole")
    train(_config(epochs=1), method, digits, tmp_path / "split")  # epoch 0, checkpoint with the state
    state = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)["method_state"]
    assert state["predicted"].sum().item() == len(digits.train_y) and state["counting"].sum().item() == 0
    resumed = train(_config(epochs=2), method, digits, tmp_path / "split")
    assert resumed.resumed_from == 1
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_bench_list_methods_shows_them():
    from bench.cli import cli

    out = CliRunner().invoke(cli, ["list", "methods"])
    assert out.exit_code == 0
    for name in NEW:
        assert name in out.output
    assert methods.names()[-len(NEW):] == NEW
    for name in NEW:
        card = type(methods.get(name)).card
        assert {"paper", "venue", "year", "repository", "file", "hyperparameters"} <= set(card)
