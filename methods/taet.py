"""TAET (Wang et al., "TAET: Two-Stage Adversarial Equalization Training on Long-Tailed Distributions", CVPR 2025;
reference BuhuiOK/TAET-Two-Stage-Adversarial-Equalization-Training-on-Long-Tailed-Distributions,
``code/TAET/TAET.ipynb`` and ``code/HARL.py``).

Stage 1 (epochs ``e < stage1_epochs``, 0-indexed: the notebook's ``if epoch < 40`` over ``range(100)``): natural
training, cross-entropy on the clean batch, no attack (``Method.attack_on``). Stage 2: PGD from
``x + 0.001·N(0, 1)`` (the model in eval mode in the reference) and the hierarchical adversarial robustness loss
``HARL = α·L̄ + β·mean_c (L_c − L̄)² + γ·Σ_c π_c²`` on the adversarial examples (``methods.losses_lt.harl_loss``),
α = β = γ = 0.1. The notebook runs ``outputs = model(inputs)`` in training mode before every loss and discards it
(a second clean pass in stage 1): it only moves the batch-norm running statistics, and this method repeats it
(``needs_clean_logits``: the runner's clean forward, ignored by the loss) so those statistics match.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from methods.base import LossInputs, Method
from methods.registry import register

STAGE1_SHARE = 0.4  # the notebook's 40 natural epochs of 100


@register("taet")
@dataclass(frozen=True)
class TAET(Method):
    """TAET (Wang et al., CVPR 2025): natural CE for the first 40 % of the run, then PGD with HARL.

    stage1_epochs (int | None, None): natural epochs; ``None`` = ``floor(0.4·epochs)`` (the reference's 40 of 100).
    harl_alpha (float, 0.1): α, weight of the mean class loss. harl_beta (float, 0.1): β, weight of the variance of
    the class losses. harl_gamma (float, 0.1): γ, weight of Σ of the squared normalised class losses.
    """

    description = "TAET: natural CE for 40% of the run, then PGD + HARL (class-loss mean, variance, concentration)"
    card = {"paper": "Wang et al., TAET: Two-Stage Adversarial Equalization Training on Long-Tailed Distributions",
            "venue": "CVPR", "year": 2025,
            "repository": "https://github.com/BuhuiOK/TAET-Two-Stage-Adversarial-Equalization-Training-on-Long-Tailed"
                          "-Distributions",
            "file": "code/TAET/TAET.ipynb (train_model), code/HARL.py",
            "hyperparameters": {
                "stage1_epochs": "None = floor(0.4*epochs): natural epochs, 0-indexed e < 40 of 100 in the notebook "
                                 "(RobustLT's re-implementation: 1-indexed epoch < ce_epochs, i.e. 39)",
                "harl_alpha": "0.1: weight of the mean of the class-wise CE", "harl_beta": "0.1: weight of their "
                "variance", "harl_gamma": "0.1: weight of the sum of squared normalised class losses"},
            "notes": "HARL's own PGD defaults are eps 0.031, step 0.003 (TRADES' numbers), Gaussian start 0.001, "
                     "model in eval mode (bench's attack_recipe); bench takes eps and step from the cell's train_attack (set "
                     "train_attack.alpha = 0.003 to match). The notebook trains a torchvision ResNet-50 on 224x224 "
                     "upsampled CIFAR; the cell's model is used here. The discarded clean forward runs after the attack here "
                     "(before it in the notebook): an eval-mode attack reads running statistics one update older."}
    prediction_loss = "harl"
    needs_clean_logits = True  # the notebook's discarded clean forward in training mode (batch-norm statistics)
    attack_start_std = 0.001
    attack_recipe = {"bn_mode": "eval", "clip_start": False}  # HARL.py: eval mode, start clipped after the first step
    stage1_epochs: int | None = None
    harl_alpha: float = 0.1
    harl_beta: float = 0.1
    harl_gamma: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check(self.stage1_epochs is None or self.stage1_epochs >= 0, "stage1_epochs", ">= 0")
        for name in ("harl_alpha", "harl_beta", "harl_gamma"):
            self._check(getattr(self, name) >= 0, name, ">= 0")

    def for_run(self, *, epochs, milestones):
        method = super().for_run(epochs=epochs, milestones=milestones)
        if method.stage1_epochs is None:
            return dataclasses.replace(method, stage1_epochs=int(STAGE1_SHARE * epochs + 1e-9))
        return method

    def attack_on(self, epoch: int) -> bool:
        if self.stage1_epochs is None:
            raise ValueError(f"method {self.name}: call for_run() before attack_on() to fix stage1_epochs")
        return epoch >= self.stage1_epochs

    def prediction(self, inputs: LossInputs):
        from methods import losses, losses_lt

        if not self.attack_on(inputs.epoch):  # stage 1: natural CE on the clean batch
            return losses.cross_entropy(inputs.logits, inputs.targets)
        return losses_lt.harl_loss(inputs.logits, inputs.targets, self.harl_alpha, self.harl_beta, self.harl_gamma)
