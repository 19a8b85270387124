"""Uniformly weighted baselines: cross-entropy (Madry et al.'s PGD-AT), focal and LDAM."""

from dataclasses import dataclass

from methods.base import FocalFamily, LDAMFamily, Method
from methods.registry import register


@register("ce")
@dataclass(frozen=True)
class CE(Method):
    """PGD adversarial training with cross-entropy (Madry et al., ICLR 2018), uniform weights."""

    description = "cross-entropy, uniform weights (PGD-AT)"
    card = {"paper": "Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks",
            "venue": "ICLR", "year": 2018, "repository": "https://github.com/MadryLab/cifar10_challenge"}


@register("focal")
@dataclass(frozen=True)
class Focal(FocalFamily):
    """Softmax focal loss (Lin et al., ICCV 2017) as the reference code computes it, γ = 1, uniform weights."""

    description = "focal loss (gamma 1), uniform weights"
    card = {"paper": "Lin et al., Focal Loss for Dense Object Detection",
            "venue": "ICCV", "year": 2017, "repository": "https://github.com/facebookresearch/Detectron"}


@register("ldam")
@dataclass(frozen=True)
class LDAM(LDAMFamily):
    """LDAM loss (Cao et al., NeurIPS 2019), max_m 0.5, s 30, uniform weights."""

    description = "LDAM margin loss (max_m 0.5, s 30), uniform weights"
    card = {"paper": "Cao et al., Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss",
            "venue": "NeurIPS", "year": 2019, "repository": "https://github.com/kaidic/LDAM-DRW"}
