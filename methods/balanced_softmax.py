"""Balanced Softmax (Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition", NeurIPS 2020), in
adversarial training as AT-BSL (Yue et al., "Revisiting Adversarial Training under Long-Tailed Distributions",
CVPR 2024): the loss on the adversarial examples is cross-entropy of ``logits + log n_c``; the attack is plain
cross-entropy from ``x + 0.001·N(0, 1)``; predictions use the plain logits."""

from dataclasses import dataclass

from methods.base import LossInputs, Method
from methods.registry import register


@register("balanced-softmax")
@dataclass(frozen=True)
class BalancedSoftmax(Method):
    """Balanced Softmax / AT-BSL (Ren et al., NeurIPS 2020; Yue et al., CVPR 2024): CE of logits + log n_c."""

    description = "Balanced Softmax (AT-BSL): CE(logits + log n_c), plain logits at test time"
    card = {"paper": "Yue et al., Revisiting Adversarial Training under Long-Tailed Distributions (AT-BSL)",
            "venue": "CVPR", "year": 2024, "repository": "https://github.com/NISPLab/AT-BSL"}
    prediction_loss = "balanced-softmax"
    attack_start_std = 0.001
    # AT-BSL train: model.eval() before its PGD, model.train() after; the start is clipped only after the first step
    attack_recipe = {"bn_mode": "eval", "clip_start": False}

    def prediction(self, inputs: LossInputs):
        from methods import losses

        # log π_c = log n_c − log Σn: the constant shift leaves the softmax, and so the loss, unchanged.
        bias = losses.log_prior(inputs.class_counts)
        return losses.adjusted_cross_entropy(inputs.logits, inputs.targets, bias, weight=inputs.weight)
