"""Deferred class-balanced re-weighting, DRW (Cao et al., NeurIPS 2019): uniform, then CB from ``drw_epoch``."""

from dataclasses import dataclass

from methods.base import FocalFamily, LDAMFamily, Method
from methods.registry import register


@register("drcb-ce")
@dataclass(frozen=True)
class DRCBCE(Method):
    """Cross-entropy; uniform weights before ``drw_epoch`` (default: first LR milestone, 160), CB after."""

    description = "cross-entropy, class-balanced weights deferred to the DRW epoch"
    card = {"paper": "Cao et al., Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss",
            "venue": "NeurIPS", "year": 2019, "repository": "https://github.com/kaidic/LDAM-DRW"}
    weight_schedule = "drw"


@register("drcb-focal")
@dataclass(frozen=True)
class DRCBFocal(FocalFamily):
    """Focal loss (γ 1) with deferred class-balanced weights."""

    description = "focal loss, class-balanced weights deferred to the DRW epoch"
    card = {"paper": "Cao et al., Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss",
            "venue": "NeurIPS", "year": 2019, "repository": "https://github.com/kaidic/LDAM-DRW"}
    weight_schedule = "drw"


@register("drcb-ldam")
@dataclass(frozen=True)
class DRCBLDAM(LDAMFamily):
    """LDAM-DRW: LDAM (max_m 0.5, s 30) with deferred class-balanced weights."""

    description = "LDAM margin loss, class-balanced weights deferred to the DRW epoch (LDAM-DRW)"
    card = {"paper": "Cao et al., Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss",
            "venue": "NeurIPS", "year": 2019, "repository": "https://github.com/kaidic/LDAM-DRW"}
    weight_schedule = "drw"
