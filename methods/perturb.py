"""Adversarial weight perturbation (AWP; Wu, Xia & Wang, NeurIPS 2020), as csdongxian/AWP computes it.

The reference (``AT_AWP/utils_awp.py`` and ``trades_AWP/utils_awp.py``, identical but for the proxy's loss):

1. ``calc_awp``: a proxy network gets the model's state; in training mode it takes one plain SGD step
   (``lr`` = the proxy optimiser's, no momentum, no weight decay) on ``−L``, ``L`` the method's own training loss of
   the batch (AT: CE of the adversarial examples; TRADES: natural CE + β·KL). ``diff_in_weights`` then keeps, for
   every state-dict entry whose name contains ``weight`` and that has more than one dimension (convolution kernels
   and linear weight matrices; batch-norm scales and all biases are left alone), ``d = ‖w‖ / (‖w' − w‖ + 1e-20) ·
   (w' − w)``, ``w'`` the proxy's weight after its step.
2. ``perturb``: ``w += γ·d``; the training forward, backward and optimiser step run on the perturbed weights.
3. ``restore``: ``w += (−γ)·d`` after the step, so the update is the optimiser's step taken at ``w + γd``.

Here the proxy is the model itself: its batch-norm buffers are saved before the probing forward and put back after
it (a proxy's forward in training mode never touches the model's running statistics), the gradient of ``L`` is
taken with :func:`torch.autograd.grad` (nothing accumulates in ``.grad``), and the proxy's step is computed in the
same float operations as SGD's ``w' = w − lr·(−∇L)``, then ``w' − w``. A weight the loss does not reach (the
projection head of a method without the separation term) has no gradient, so ``d = 0``, as in the reference, where
SGD skips parameters without a gradient. Torch-backed; imported when a step is perturbed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

EPS = 1e-20  # the reference's EPS in diff_in_weights


def perturbed_weights(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters AWP perturbs: name contains ``weight`` and more than one dimension, in state-dict order."""
    return [(name, p) for name, p in model.named_parameters() if "weight" in name and p.dim() > 1]


def awp_direction(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], proxy_lr: float) -> list[torch.Tensor]:
    """The reference's ``diff_in_weights`` after one proxy SGD step on ``−loss_fn()``: one tensor per
    :func:`perturbed_weights` entry (``‖w‖ / (‖w' − w‖ + 1e-20) · (w' − w)``). The model's weights, buffers and
    ``.grad`` are left as they were."""
    params = perturbed_weights(model)
    buffers = [b.detach().clone() for b in model.buffers()]
    try:
        loss = -loss_fn()
        grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
    finally:
        with torch.no_grad():
            for saved, b in zip(buffers, model.buffers()):
                b.copy_(saved)
    out = []
    with torch.no_grad():
        for (_, w), g in zip(params, grads):
            if g is None:
                out.append(torch.zeros_like(w))
                continue
            stepped = w.detach().clone().add_(g, alpha=-proxy_lr)  # torch.optim.SGD: p.add_(grad, alpha=-lr)
            diff = stepped - w
            out.append(w.norm() / (diff.norm() + EPS) * diff)
    return out


@contextlib.contextmanager
def adversarial_weight_perturbation(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], gamma: float,
                                    proxy_lr: float) -> Iterator[list[torch.Tensor]]:
    """Perturb ``model``'s weights by ``γ·d`` (:func:`awp_direction`) for the body of the ``with`` block, then add
    ``(−γ)·d`` back — the reference's ``perturb`` / ``restore`` (``param.add_(coeff * diff)``)."""
    direction = awp_direction(model, loss_fn, proxy_lr)
    params = [p for _, p in perturbed_weights(model)]
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(1.0 * gamma * d)
    try:
        yield direction
    finally:
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(-1.0 * gamma * d)
