"""SRAT (Wang et al., "Imbalanced Adversarial Training with Reweighting", ICDM 2022).

Each SRAT variant is its DRW baseline plus ``λ · L_sep``, the supervised contrastive separation loss on the
L2-normalised projection of the adversarial examples' features (λ = 2, τ = 0.07), active from the first epoch.
"""

from dataclasses import dataclass

from methods.base import FocalFamily, LDAMFamily, Method
from methods.registry import register


@register("srat-ce")
@dataclass(frozen=True)
class SRATCE(Method):
    """SRAT with cross-entropy: DRW class-balanced CE + λ·L_sep (λ 2, τ 0.07)."""

    description = "SRAT: DRW class-balanced CE + 2 x feature separation loss"
    card = {"paper": "Wang et al., Imbalanced Adversarial Training with Reweighting",
            "venue": "ICDM", "year": 2022, "repository": None}
    weight_schedule = "drw"
    lam: float = 2.0


@register("srat-focal")
@dataclass(frozen=True)
class SRATFocal(FocalFamily):
    """SRAT with focal loss: DRW class-balanced focal (γ 1) + λ·L_sep (λ 2, τ 0.07)."""

    description = "SRAT: DRW class-balanced focal + 2 x feature separation loss"
    card = {"paper": "Wang et al., Imbalanced Adversarial Training with Reweighting",
            "venue": "ICDM", "year": 2022, "repository": None}
    weight_schedule = "drw"
    lam: float = 2.0


@register("srat-ldam")
@dataclass(frozen=True)
class SRATLDAM(LDAMFamily):
    """SRAT with LDAM: DRW class-balanced LDAM (max_m 0.5, s 30) + λ·L_sep (λ 2, τ 0.07)."""

    description = "SRAT: DRW class-balanced LDAM + 2 x feature separation loss"
    card = {"paper": "Wang et al., Imbalanced Adversarial Training with Reweighting",
            "venue": "ICDM", "year": 2022, "repository": None}
    weight_schedule = "drw"
    lam: float = 2.0
