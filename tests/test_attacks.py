"""L∞ attacks (methods.md §2): the PGD update rule, its constraints, and that it really attacks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.attacks import ATTACKS, AttackSpec, pgd
from bench.models import build_model
from factories import trained_linear_digits



def _linear_forward(W: torch.Tensor, b: torch.Tensor):
    return lambda x: x.flatten(1) @ W.T + b


@pytest.fixture
def linear_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 12, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (16,), generator=g)
    W = torch.randn(4, 12, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    return x, y, W, b


def test_pgd_stays_in_eps_ball_and_bounds():
    torch.manual_seed(0)
    model = build_model("cnn-small", 3, (1, 8, 8)).eval()
    x = torch.rand(8, 1, 8, 8)
    x[:, :, 0, :] = 0.0  # images touching both bounds
    x[:, :, -1, :] = 1.0
    y = torch.randint(0, 3, (8,))
    eps = 0.1
    adv = pgd(model, x, y, eps=eps, alpha=0.03, steps=5, generator=torch.Generator().manual_seed(1))
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert not adv.requires_grad
    assert float((adv - x).abs().max()) <= eps + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert not torch.equal(adv, x)


def test_pgd_unbounded_leaves_unit_interval(linear_problem):
    x, y, W, b = linear_problem
    x = x * 0  # all zeros: any downward move leaves [0, 1]
    eps = 0.2
    adv = pgd(_linear_forward(W, b), x, y, eps=eps, alpha=0.05, steps=3, bounds=None,
              generator=torch.Generator().manual_seed(0))
    assert float(adv.min()) < 0.0
    assert float((adv - x).abs().max()) <= eps + 1e-12
    bounded = pgd(_linear_forward(W, b), x, y, eps=eps, alpha=0.05, steps=3,
                  generator=torch.Generator().manual_seed(0))
    assert float(bounded.min()) >= 0.0


def test_pgd_eps_zero_and_steps_zero_return_x(linear_problem):
    x, y, W, b = linear_problem
    f = _linear_forward(W, b)
    assert torch.equal(pgd(f, x, y, eps=0.0, alpha=0.1, steps=5), x)
    assert torch.equal(pgd(f, x, y, eps=0.0, alpha=0.1, steps=5, bounds=None), x)
    assert torch.equal(pgd(f, x, y, eps=0.1, alpha=0.1, steps=0, random_start=False), x)
    # steps = 0 with a random start: only the start, within the ball
    start = pgd(f, x, y, eps=0.1, alpha=0.1, steps=0, generator=torch.Generator().manual_seed(0))
    assert float((start - x).abs().max()) <= 0.1 + 1e-12 and not torch.equal(start, x)


@pytest.mark.parametrize("bounds", [(0.0, 1.0), None])
def test_one_step_matches_hand_formula(linear_problem, bounds):
    x, y, W, b = linear_problem
    eps, alpha = 0.05, 0.03
    n = x.shape[0]
    # d/dx of mean CE for logits = x W^T + b: (softmax - onehot) W / N, per sample.
    probs = torch.softmax(x @ W.T + b, dim=1)
    grad = (probs - F.one_hot(y, 4).to(x.dtype)) @ W / n
    expected = x + alpha * grad.sign()
    expected = torch.minimum(torch.maximum(expected, x - eps), x + eps)
    if bounds is not None:
        expected = expected.clamp(*bounds)
    adv = pgd(_linear_forward(W, b), x, y, eps=eps, alpha=alpha, steps=1, random_start=False, bounds=bounds)
    assert torch.allclose(adv, expected, atol=1e-12)
    # alpha > eps: the step is clipped back onto the ball
    adv = pgd(_linear_forward(W, b), x, y, eps=0.01, alpha=0.5, steps=1, random_start=False, bounds=None)
    assert torch.allclose(adv, x + 0.01 * grad.sign(), atol=1e-12)


def test_two_steps_match_hand_formula(linear_problem):
    x, y, W, b = linear_problem
    eps, alpha = 0.04, 0.03
    x_adv = x.clone()
    for _ in range(2):
        probs = torch.softmax(x_adv @ W.T + b, dim=1)
        grad = (probs - F.one_hot(y, 4).to(x.dtype)) @ W
        x_adv = (x + (x_adv + alpha * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)
    adv = pgd(_linear_forward(W, b), x, y, eps=eps, alpha=alpha, steps=2, random_start=False)
    assert torch.allclose(adv, x_adv, atol=1e-12)


def test_pgd_leaves_parameter_grads_none():
    torch.manual_seed(0)
    model = build_model("cnn-small", 3, (1, 8, 8))
    x = torch.rand(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 0])
    pgd(model, x, y, eps=0.1, alpha=0.03, steps=2, generator=torch.Generator().manual_seed(0))
    AttackSpec("fgsm", eps=0.1, alpha=0.1, steps=1).run(model, x, y, bounds=(0.0, 1.0))
    assert all(p.grad is None for p in model.parameters())
    assert not x.requires_grad


def test_same_generator_seed_same_examples(linear_problem):
    x, y, W, b = linear_problem
    f = _linear_forward(W, b)
    kw = dict(eps=0.1, alpha=0.02, steps=3)
    a = pgd(f, x, y, **kw, generator=torch.Generator().manual_seed(7))
    b_ = pgd(f, x, y, **kw, generator=torch.Generator().manual_seed(7))
    c = pgd(f, x, y, **kw, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b_)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("bad", [dict(eps=-0.1), dict(alpha=-0.1), dict(steps=-1)])
def test_negative_parameters_raise(linear_problem, bad):
    x, y, W, b = linear_problem
    kw = dict(eps=0.1, alpha=0.02, steps=2)
    kw.update(bad)
    with pytest.raises(ValueError):
        pgd(_linear_forward(W, b), x, y, **kw)


def test_attack_registry_and_labels():
    assert "pgd" in ATTACKS and "fgsm" in ATTACKS
    assert AttackSpec("pgd", 8 / 255, 2 / 255, 20).label == "pgd-20"
    assert AttackSpec("pgd", 8 / 255, 2 / 255, 20, name="pgd20").label == "pgd20"


def test_fgsm_is_one_full_eps_step(linear_problem):
    x, y, W, b = linear_problem
    f = _linear_forward(W, b)
    spec = AttackSpec("fgsm", eps=0.05, alpha=0.001, steps=7)  # alpha and steps ignored: one step of size eps
    adv = spec.run(f, x, y, bounds=None)
    expected = pgd(f, x, y, eps=0.05, alpha=0.05, steps=1, random_start=False, bounds=None)
    assert torch.equal(adv, expected)
    assert torch.allclose((adv - x).abs(), torch.full_like(x, 0.05))


@pytest.fixture(scope="module")
def trained_digits(tmp_path_factory):
    """A linear classifier on the 8x8 digits, trained full-batch for a second or so."""
    model, data = trained_linear_digits(tmp_path_factory.mktemp("digits"))
    return model, data


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_pgd_and_fgsm_lower_accuracy_of_trained_model(trained_digits):
    model, data = trained_digits
    x, y = data.test_x, data.test_y
    clean = _accuracy(model, x, y)
    assert clean > 0.85
    eps, alpha = 0.1, 0.025
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    acc = {}
    for steps in (1, 5, 20):
        adv = pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, bounds=data.bounds, generator=gen())
        acc[steps] = _accuracy(model, adv, y)
    fgsm = AttackSpec("fgsm", eps=eps, alpha=eps, steps=1).run(model, x, y, bounds=data.bounds)
    acc_fgsm = _accuracy(model, fgsm, y)
    noise = (x + eps * (2 * torch.rand(x.shape, generator=gen()) - 1)).clamp(0, 1)
    acc_noise = _accuracy(model, noise, y)
    assert acc[20] < clean - 0.2
    assert acc_fgsm < clean - 0.1
    assert acc[20] <= acc[5] + 0.02 <= acc[1] + 0.04  # more steps do not help the model
    assert acc[20] <= acc_fgsm + 0.02  # many small steps at least as strong as one big step here
    assert acc[20] < acc_noise - 0.2  # the attack is not just noise
    assert all(p.grad is None for p in model.parameters())
