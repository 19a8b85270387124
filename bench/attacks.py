"""L∞ attacks (methods.md §2), as a registry of evaluation/training attacks built from config tables.

:func:`pgd` is the one PGD: ``x ← clip(x0 + clip(x + α·sign(∇x CE) − x0, −ε, ε), lo, hi)`` from a uniform
random start in ``[−ε, ε]``, maximising plain unweighted cross-entropy of the logits. Gradients are taken with
respect to the input only (``torch.autograd.grad``), so no parameter gradient is computed or accumulated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.registry import Registry

Forward = Callable[[torch.Tensor], torch.Tensor]


def pgd(
    forward: Forward,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Adversarial examples for ``forward`` (any callable batch → logits) within the L∞ ball of radius ``eps``.

    ``bounds`` is the valid input range (``None`` for unbounded data such as the Gaussian mixture);
    ``generator`` makes the random start reproducible. Returns a detached tensor shaped like ``x``.
    """
    if eps < 0 or alpha < 0 or steps < 0:
        raise ValueError(f"pgd needs eps, alpha, steps >= 0, got {eps}, {alpha}, {steps}")
    x0 = x.detach()
    if random_start and eps > 0:
        noise = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_adv = x0 + (2 * noise - 1) * eps
    else:
        x_adv = x0.clone()
    if bounds is not None:
        x_adv = x_adv.clamp(*bounds)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(forward(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = x_adv + alpha * grad.sign()
            x_adv = x0 + (x_adv - x0).clamp(-eps, eps)
            if bounds is not None:
                x_adv = x_adv.clamp(*bounds)
    return x_adv.detach()


@dataclass(frozen=True)
class AttackSpec:
    """A configured attack: ``kind`` from :data:`ATTACKS`, its parameters, and the label stored with results."""

    kind: str
    eps: float
    alpha: float
    steps: int
    random_start: bool = True
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or f"{self.kind}-{self.steps}"

    def run(self, forward: Forward, x, y, *, bounds, generator=None) -> torch.Tensor:
        return ATTACKS.get(self.kind)(self, forward, x, y, bounds=bounds, generator=generator)


AttackFn = Callable[..., torch.Tensor]
ATTACKS: Registry[AttackFn] = Registry("attack")


@ATTACKS.register("pgd")
def _pgd(spec: AttackSpec, forward, x, y, *, bounds, generator=None) -> torch.Tensor:
    """L∞ PGD with cross-entropy (Madry et al., 2018)."""
    return pgd(forward, x, y, eps=spec.eps, alpha=spec.alpha, steps=spec.steps,
               random_start=spec.random_start, bounds=bounds, generator=generator)


@ATTACKS.register("fgsm")
def _fgsm(spec: AttackSpec, forward, x, y, *, bounds, generator=None) -> torch.Tensor:
    """FGSM: one signed-gradient step of size ε from the clean input (no random start)."""
    return pgd(forward, x, y, eps=spec.eps, alpha=spec.eps, steps=1, random_start=False, bounds=bounds)
