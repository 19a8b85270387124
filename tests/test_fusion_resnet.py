"""The stacked resnet18 (grouped convolutions, bench.fusion.stacked): each member's forward, backward and batch-norm
statistics equal its own unfused ones within float tolerance, a member's gradients do not depend on another
member's input, and a fused group of resnet18 cells trains end to end with the unfused runner's checkpoints.

Small on purpose (3×8×8 inputs, 2–3 members, one step): the CIFAR-shaped GPU measurement is
``benchmarks/bench_fusion.py --case resnet18-cuda`` (the GPU check)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import methods
from bench.data import PreparedData
from bench.fusion.stacked import StackedClassifier, stackable
from bench.fusion.train import Member, train_fused
from bench.models import build_model
from bench.suite import BUILTIN_DEFAULTS
from bench.train import CHECKPOINT, train

SHAPE = (3, 8, 8)
CLASSES = 10
# fp32: every element within 1e-4 of the reference tensor's largest magnitude (the grouped convolution, batch norm
# over M·C channels and the bmm heads sum in another order than a member's own layers; measured: at most 2.1e-5)
TOL = 1e-4


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, what
    if not expected.dtype.is_floating_point:
        assert torch.equal(actual, expected), what
        return
    scale = float(expected.abs().max())
    err = float((actual - expected).abs().max())
    assert err <= TOL * scale + 1e-12, f"{what}: max difference {err:.3g}, {err / max(scale, 1e-30):.3g} of {scale:.3g}"


def _members(m: int) -> list:
    out = []
    for seed in range(m):
        torch.manual_seed(seed)
        out.append(build_model("resnet18", CLASSES, SHAPE))
    return out


def _inputs(m: int, n: int = 6, seed: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(m, n, *SHAPE, generator=g), torch.randint(0, CLASSES, (m, n), generator=g)


def _stacked_step(members, x, y, project: bool = True):
    """One training-mode forward and backward of the stacked model: CE on every member, plus (``project``) the
    projection head of every member. Returns the logits ``[M, N, K]``."""
    stack = StackedClassifier(members)
    for model in members:
        model.zero_grad(set_to_none=True)
    logits, h = stack.forward_features(stack.weights(grad=True), x, True)
    loss = sum(F.cross_entropy(logits[i], y[i]) for i in range(len(members)))
    if project:
        loss = loss + stack.project(h, range(len(members))).square().mul(torch.arange(128.0, device=x.device)).sum()
    loss.backward()
    stack.sync_buffers()
    return logits.detach()


def _own_step(model, x, y, project: bool = True):
    model.zero_grad(set_to_none=True)
    logits, h = model.forward_features(x)
    loss = F.cross_entropy(logits, y)
    if project:
        loss = loss + model.project(h).square().mul(torch.arange(128.0, device=x.device)).sum()
    loss.backward()
    return logits.detach()


def test_resnet18_is_stackable():
    assert stackable(_members(1)[0])


@pytest.mark.parametrize("m", [1, 3])
def test_stacked_forward_backward_matches_each_member_alone(m):
    _match_each_member_alone(m, torch.device("cpu"))


@pytest.mark.gpu
def test_stacked_forward_backward_matches_on_cuda():
    """cuDNN's grouped kernels against each member's own convolutions, fp32 without TF32 (the fused path's policy
    for reported numbers), 11 members as the GPU benchmark fuses them."""
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        _match_each_member_alone(11, torch.device("cuda"))
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn
        torch.set_float32_matmul_precision(matmul)


def _match_each_member_alone(m: int, device: torch.device) -> None:
    members = [model.to(device) for model in _members(m)]
    alone = copy.deepcopy(members)
    x, y = (t.to(device) for t in _inputs(m))
    logits = _stacked_step(members, x, y)
    for i, (fused, own) in enumerate(zip(members, alone)):
        expected = _own_step(own, x[i], y[i])
        _close(logits[i], expected, f"member {i} logits")
        for (name, p), (_, q) in zip(fused.named_parameters(), own.named_parameters()):
            assert p.grad is not None, name
            _close(p.grad, q.grad, f"member {i} {name}.grad")
        for (name, b), (_, c) in zip(fused.named_buffers(), own.named_buffers()):  # running stats, batches tracked
            _close(b, c, f"member {i} {name}")
    # evaluation mode reads each member's own running statistics
    stack = StackedClassifier(members)
    with torch.no_grad():
        eval_logits, _ = stack.forward_features(stack.weights(grad=False), x, False)
    for i, own in enumerate(alone):
        own.eval()
        with torch.no_grad():
            _close(eval_logits[i], own(x[i]), f"member {i} evaluation logits")


def test_a_members_gradients_do_not_depend_on_another_members_input():
    members = _members(2)
    other = copy.deepcopy(members)
    x, y = _inputs(2)
    _stacked_step(members, x, y)
    x2 = x.clone()
    x2[1] = torch.rand_like(x2[1])  # only member 2's (index 1's) input changes
    _stacked_step(other, x2, y)
    for (name, p), (_, q) in zip(members[0].named_parameters(), other[0].named_parameters()):
        _close(p.grad, q.grad, f"member 1 {name}.grad")
    changed = [not torch.allclose(p.grad, q.grad) for p, q in zip(members[1].parameters(), other[1].parameters())]
    assert any(changed)  # member 2 did see its new input


def _data(n: int = 32) -> PreparedData:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % CLASSES
    return PreparedData(
        train_x=torch.rand(n, *SHAPE, generator=g), train_y=y, test_x=torch.zeros(1, *SHAPE),
        test_y=torch.zeros(1, dtype=torch.int64), class_names=[str(c) for c in range(CLASSES)],
        train_counts=np.bincount(y.numpy(), minlength=CLASSES).tolist(), subset_hash="test", bounds=(0.0, 1.0),
    )


def _cell(method: str) -> tuple[dict, methods.Method]:
    config = {**BUILTIN_DEFAULTS, "model": "resnet18", "epochs": 1, "batch_size": 16, "milestones": [],
              "warmup_epochs": 0, "lr": 0.01, "augment": "none", "seed": 0, "method": method,
              "train_attack": {"kind": "pgd", "eps": 0.03, "alpha": 0.01, "steps": 1, "random_start": True,
                               "bn_mode": "train"}}
    return config, methods.get(method).for_run(epochs=1, milestones=[])


def test_fused_resnet18_group_trains_end_to_end(tmp_path: Path):
    data = _data()
    cells = [_cell("ce"), _cell("srat-ce")]  # srat-ce: the projection head too
    members = [Member(config=c, method=m, run_dir=tmp_path / "fused" / str(i)) for i, (c, m) in enumerate(cells)]
    outcomes = train_fused(members, data)
    for i, (outcome, (config, method)) in enumerate(zip(outcomes, cells)):
        assert not isinstance(outcome, BaseException), outcome
        assert len(outcome.curves) == 1 and np.isfinite(outcome.curves[0]["loss"])
        assert (tmp_path / "fused" / str(i) / CHECKPOINT).exists()  # the unfused runner's checkpoint, per member
        own = train(config, methods.get(config["method"]).for_run(epochs=1, milestones=[]), data,
                    tmp_path / "own" / str(i))
        # within tolerance of the unfused runner (PGD's sign may flip on a near-zero gradient: not bit for bit)
        assert outcome.curves[0]["loss"] == pytest.approx(own.curves[0]["loss"], rel=1e-2)
