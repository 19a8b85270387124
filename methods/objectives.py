"""What a method's training attack maximises, by name (:attr:`methods.Method.attack_objective`).

``ce`` is PGD's cross-entropy (Madry et al.); ``kl`` is TRADES' ``KL(f(x) ‖ f(x′))`` against the clean
prediction, which the runner computes without gradients in the attack's batch-norm mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.registry import Registry

if TYPE_CHECKING:
    import torch

Loss = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]  # (logits, labels) -> per-sample [N]


@dataclass(frozen=True)
class Objective:
    """``build(clean_logits)`` gives the per-sample loss for :func:`bench.attacks.pgd` (``None`` = its default
    cross-entropy); ``needs_clean`` says whether ``clean_logits`` must be computed first."""

    needs_clean: bool
    build: Callable[[torch.Tensor | None], Loss | None]


def _kl_to_clean(clean_logits: torch.Tensor | None) -> Loss:
    if clean_logits is None:
        raise ValueError("the kl attack objective needs the clean logits")
    from methods.losses import kl_per_sample

    reference = clean_logits.detach()
    return lambda logits, _labels: kl_per_sample(logits, reference)


OBJECTIVES: Registry[Objective] = Registry("attack objective")
OBJECTIVES.register("ce")(Objective(needs_clean=False, build=lambda _clean: None))
OBJECTIVES.register("kl")(Objective(needs_clean=True, build=_kl_to_clean))
