"""The stacked convolution of fused cnn-small cells (bench.fusion.stacked.MemberConv) against torch's own
``F.conv2d`` run member by member: forward and both gradients, in float64 so that only a wrong formula can fail."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.fusion.stacked import conv2d


@pytest.mark.parametrize(("c", "o", "k", "stride", "padding", "size"),
                         [(1, 16, 3, 1, 1, 8), (16, 32, 3, 2, 1, 8), (32, 64, 3, 2, 1, 4), (3, 5, 1, 2, 0, 7),
                          (2, 3, 3, 1, 0, 6)])
@pytest.mark.parametrize("members", [1, 3])
def test_member_conv_matches_each_members_own_conv2d(c, o, k, stride, padding, size, members):
    gen = torch.Generator().manual_seed(0)
    n = 5
    x = torch.randn(members, n, c, size, size, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(members, o, c, k, k, generator=gen, dtype=torch.float64, requires_grad=True)
    out = conv2d(x.permute(0, 2, 3, 4, 1), w, stride, padding)  # [M, O, H', W', N]
    upstream = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    gx, gw = torch.autograd.grad((out * upstream).sum(), (x, w))
    for m in range(members):
        xm, wm = x[m].detach().requires_grad_(True), w[m].detach().requires_grad_(True)
        ref = F.conv2d(xm, wm, stride=stride, padding=padding)  # [N, O, H', W']
        torch.testing.assert_close(out[m].permute(3, 0, 1, 2), ref)
        rx, rw = torch.autograd.grad((ref * upstream[m].permute(3, 0, 1, 2)).sum(), (xm, wm))
        torch.testing.assert_close(gx[m], rx)
        torch.testing.assert_close(gw[m], rw)


def test_member_conv_computes_only_the_gradients_asked_for():
    """The attack freezes the weights, the training step takes no input gradient: neither is computed."""
    x = torch.randn(2, 4, 1, 8, 8)
    w = torch.randn(2, 6, 1, 3, 3, requires_grad=True)
    (gw,) = torch.autograd.grad(conv2d(x.permute(0, 2, 3, 4, 1), w, 1, 1).sum(), (w,))
    assert gw.shape == w.shape and x.grad is None
    x.requires_grad_(True)
    (gx,) = torch.autograd.grad(conv2d(x.permute(0, 2, 3, 4, 1), w.detach(), 1, 1).sum(), (x,))
    assert gx.shape == x.shape
