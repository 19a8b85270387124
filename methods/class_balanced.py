"""Class-balanced re-weighting from the first epoch (Cui et al., CVPR 2019)."""

from dataclasses import dataclass

from methods.base import FocalFamily, Method
from methods.registry import register


@register("cb-reweight")
@dataclass(frozen=True)
class CBReweight(Method):
    """Weighted cross-entropy with class-balanced weights ``1/E_c`` (β 0.9999) from epoch 0."""

    description = "cross-entropy, class-balanced weights from the first epoch"
    card = {"paper": "Cui et al., Class-Balanced Loss Based on Effective Number of Samples",
            "venue": "CVPR", "year": 2019, "repository": "https://github.com/richardaecn/class-balanced-loss"}
    weight_schedule = "cb"


@register("cb-focal")
@dataclass(frozen=True)
class CBFocal(FocalFamily):
    """Focal loss (γ 1) with class-balanced weights from epoch 0 (softmax form, not Cui et al.'s sigmoid)."""

    description = "focal loss, class-balanced weights from the first epoch"
    card = {"paper": "Cui et al., Class-Balanced Loss Based on Effective Number of Samples",
            "venue": "CVPR", "year": 2019, "repository": "https://github.com/richardaecn/class-balanced-loss"}
    weight_schedule = "cb"
