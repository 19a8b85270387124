"""RoBal (Wu et al., "Adversarial Robustness under Long-Tailed Distribution", CVPR 2021).

Three parts, with the defaults of the authors' CIFAR-10-LT configuration: a scale-invariant (cosine) classifier;
a training loss with a margin and a class-aware bias, ``CE(s·(cos − m·1[c = y]) + τ_b·log π, y)`` (s 10, m 0.1,
τ_b 1.2, τ_m 0), plus a TRADES regulariser ``6·KL(f(x) ‖ f(x′))`` on the cosines; and at inference the
reference's test-time head (``PostProc_Classifier``, ``*_robal_N_eval.yaml``: ``scale`` 10, ``tau_p`` 0.1,
``posthoc``), which predicts from ``10·cos − τ_p·log π``: the trained model carries that scale and bias, so every
prediction and every evaluation attack (PGD-20, AutoAttack, the guards) sees those logits, as the reference's
evaluation does. The training attack runs on the unscaled cosines (the training config's CosPlus ``scale: 1``).
The classifier is the reference's CosPlus head, ``cos`` being ``(h/‖h‖)·(w/(‖w‖ + 0.03125))`` (``classifier =
"cosplus"``; ``"cosine"`` is the plain cosine head).
"""

from dataclasses import dataclass

from methods.base import KLFamily, LossInputs
from methods.registry import register


@register("robal")
@dataclass(frozen=True)
class RoBal(KLFamily):
    """RoBal (Wu et al., CVPR 2021): cosine classifier, margin + class-aware bias loss, TRADES regulariser,
    inference boundary adjustment.

    s (float, 10.0): cosine scale in the loss. m (float, 0.1): margin. tau_b (float, 1.2): training bias
    τ_b·log π. tau_m (float, 0.0): class-aware margin term. kl_weight (float, 6.0): TRADES regulariser weight.
    tau_p (float, 0.1): inference boundary adjustment. eval_scale (float, 10.0): the test-time scale of the cosines
    (PostProc's ``scale``).
    """

    description = "RoBal: cosine classifier, margin + 1.2 log prior loss, 6 x TRADES KL, 10 cos - 0.1 log prior at test"
    card = {"paper": "Wu et al., Adversarial Robustness under Long-Tailed Distribution",
            "venue": "CVPR", "year": 2021, "repository": "https://github.com/wutong16/Adversarial_Long-Tail"}
    prediction_loss = "robal"
    # methods/train_modes.py pgd_adv_train: model.eval(), x + eps·U(0, 1) (rand_start_mode 'uniform'), clipped only
    # after the first PGD step
    attack_recipe = {"bn_mode": "eval", "start": "positive", "clip_start": False}
    legacy = {"eval_scale": 1.0}  # RoBal cells stored before eval_scale predicted from the unscaled cosines
    classifier: str = "cosplus"
    s: float = 10.0
    m: float = 0.1
    tau_b: float = 1.2
    tau_m: float = 0.0
    tau_p: float = 0.1
    eval_scale: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check(self.s > 0, "s", "> 0")
        self._check(self.eval_scale > 0, "eval_scale", "> 0")
        for name in ("m", "tau_b", "tau_m", "tau_p"):
            self._check(getattr(self, name) >= 0, name, ">= 0")

    @property
    def logit_scale(self) -> float:
        return float(self.s)

    @property
    def inference_scale(self) -> float:
        return float(self.eval_scale)

    def prediction(self, inputs: LossInputs):
        from methods import losses

        clean = inputs.require_clean(self.name)
        margin = losses.cosine_margin_loss(inputs.logits, inputs.targets, inputs.class_counts, m=self.m,
                                           s=self.s, tau_b=self.tau_b, tau_m=self.tau_m)
        return margin + self.kl_weight * losses.kl_per_sample(inputs.logits, clean).mean()

    def inference_bias(self, class_counts):
        from methods import losses

        return -self.tau_p * losses.log_prior(class_counts)
