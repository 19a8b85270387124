"""Logit adjustment (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021), both variants.

``logit-adjust``: the logit-adjusted loss, cross-entropy of ``logits + τ·log π`` (τ = 1), plain logits at test
time. ``logit-adjust-posthoc``: plain cross-entropy training, then predictions from ``logits − τ·log π`` — the
adjustment is part of the deployed model, so the evaluation attacks see it too.
"""

from dataclasses import dataclass

from methods.base import LossInputs, Method
from methods.registry import register


@register("logit-adjust")
@dataclass(frozen=True)
class LogitAdjust(Method):
    """Logit-adjusted loss (Menon et al., ICLR 2021): CE(logits + tau·log prior), tau 1.

    tau (float, 1.0): τ, scale of the log-prior adjustment.
    """

    description = "logit-adjusted loss: CE(logits + tau log prior), tau 1"
    card = {"paper": "Menon et al., Long-tail learning via logit adjustment",
            "venue": "ICLR", "year": 2021,
            "repository": "https://github.com/google-research/google-research/tree/master/logit_adjustment"}
    prediction_loss = "logit-adjust"
    tau: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check(self.tau >= 0, "tau", ">= 0")

    def prediction(self, inputs: LossInputs):
        from methods import losses

        bias = self.tau * losses.log_prior(inputs.class_counts)
        return losses.adjusted_cross_entropy(inputs.logits, inputs.targets, bias, weight=inputs.weight)


@register("logit-adjust-posthoc")
@dataclass(frozen=True)
class LogitAdjustPosthoc(Method):
    """Post-hoc logit adjustment (Menon et al., ICLR 2021): CE training, predictions from logits − tau·log prior.

    tau (float, 1.0): τ, scale of the log-prior subtracted at inference.
    """

    description = "CE training, post-hoc logits - tau log prior at test time, tau 1"
    card = {"paper": "Menon et al., Long-tail learning via logit adjustment",
            "venue": "ICLR", "year": 2021,
            "repository": "https://github.com/google-research/google-research/tree/master/logit_adjustment"}
    tau: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check(self.tau >= 0, "tau", ">= 0")

    def inference_bias(self, class_counts):
        from methods import losses

        return -self.tau * losses.log_prior(class_counts)
