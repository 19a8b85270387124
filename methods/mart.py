"""MART (Wang et al., "Improving Adversarial Robustness Requires Revisiting Misclassified Examples", ICLR 2020)."""

from dataclasses import dataclass

from methods.base import LossInputs, Method
from methods.registry import register


@register("mart")
@dataclass(frozen=True)
class MART(Method):
    """MART (Wang et al., ICLR 2020): boosted CE on adversarial examples + kl_weight (6) x KL(clean || adv)
    weighted by 1 - p_y(clean); cross-entropy attack from x + 0.001·N(0, 1) as the reference code.

    kl_weight (float, 6.0): β of the misclassification-aware KL term.
    """

    description = "MART: boosted CE(adv) + 6 x (1 - p_y) KL(clean || adv), uniform weights"
    prediction_loss = "mart"
    needs_clean_logits = True
    attack_start_std = 0.001
    kl_weight: float = 6.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check(self.kl_weight >= 0, "kl_weight", ">= 0")

    def prediction(self, inputs: LossInputs):
        from methods import losses

        return losses.mart_loss(inputs.logits, inputs.require_clean(self.name), inputs.targets, beta=self.kl_weight)
