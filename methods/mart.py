"""MART (Wang et al., "Improving Adversarial Robustness Requires Revisiting Misclassified Examples", ICLR 2020)."""

from dataclasses import dataclass

from methods.base import KLFamily, LossInputs
from methods.registry import register


@register("mart")
@dataclass(frozen=True)
class MART(KLFamily):
    """MART (Wang et al., ICLR 2020): boosted CE on adversarial examples + kl_weight (6) x KL(clean || adv)
    weighted by 1 - p_y(clean); cross-entropy attack from x + 0.001·N(0, 1) as the reference code.

    kl_weight (float, 6.0): β of the misclassification-aware KL term.
    """

    description = "MART: boosted CE(adv) + 6 x (1 - p_y) KL(clean || adv), uniform weights"
    card = {"paper": "Wang et al., Improving Adversarial Robustness Requires Revisiting Misclassified Examples",
            "venue": "ICLR", "year": 2020, "repository": "https://github.com/YisenWang/MART"}
    prediction_loss = "mart"
    attack_start_std = 0.001
    # mart_loss: model.eval() while crafting, model.train() after; the start is clipped only after the first step
    attack_recipe = {"bn_mode": "eval", "clip_start": False}

    def prediction(self, inputs: LossInputs):
        from methods import losses

        return losses.mart_loss(inputs.logits, inputs.require_clean(self.name), inputs.targets, beta=self.kl_weight)
