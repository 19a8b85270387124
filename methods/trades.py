"""TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019),
and its combination with SRAT's feature separation loss.

The loss is ``CE(f(x), y) + β·KL(f(x) ‖ f(x′))``; the attack maximises the KL term from ``x + 0.001·N(0, 1)``
(the reference code's start), β = 6. β is called ``kl_weight`` here because ``beta`` is the class-balanced β.

Known difference: the reference's step runs three train-mode forwards (``model(x_natural)`` for the CE, then
``model(x_adv)``, then ``model(x_natural)`` again for the KL target); bench runs the clean and the adversarial one.
The loss and its gradient are the same (the two clean forwards give the same batch-statistics output), but the
batch-norm running statistics get two updates per step instead of three, so eval-mode predictions differ slightly.
"""

from dataclasses import dataclass

from methods.base import KLFamily, LossInputs
from methods.registry import register


@register("trades")
@dataclass(frozen=True)
class TRADES(KLFamily):
    """TRADES (Zhang et al., ICML 2019): natural CE + kl_weight (6) x KL(clean || adversarial), KL attack.

    kl_weight (float, 6.0): β, weight of the KL robustness term.
    """

    description = "TRADES: CE(clean) + 6 x KL(clean || adv), KL attack, uniform weights"
    card = {"paper": "Zhang et al., Theoretically Principled Trade-off between Robustness and Accuracy",
            "venue": "ICML", "year": 2019, "repository": "https://github.com/yaodongyu/TRADES"}
    prediction_loss = "trades"
    attack_objective = "kl"
    attack_start_std = 0.001
    # trades_loss: model.eval() while crafting, model.train() after; the start x + 0.001·N(0,1) is clipped only after
    # the first step
    attack_recipe = {"bn_mode": "eval", "clip_start": False}

    def prediction(self, inputs: LossInputs):
        from methods import losses

        clean = inputs.require_clean(self.name)
        return losses.trades_loss(inputs.logits, clean, inputs.targets, beta=self.kl_weight, weight=inputs.weight)


@register("srat-trades")
@dataclass(frozen=True)
class SRATTRADES(TRADES):
    """SRAT's recipe on TRADES: DRW class-balanced weights on the natural CE + λ·L_sep (λ 2, τ 0.07) on the
    adversarial examples' projected features."""

    description = "TRADES with DRW class-balanced CE + 2 x feature separation loss"
    card = {"paper": "Wang et al., Imbalanced Adversarial Training with Reweighting (on TRADES, Zhang et al., ICML 2019)",
            "venue": "ICDM", "year": 2022, "repository": None}
    weight_schedule = "drw"
    attack_recipe = {}  # the SRAT family keeps SRAT's train-mode attack
    lam: float = 2.0
