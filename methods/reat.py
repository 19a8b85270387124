"""REAT (Li, Xu & Zhang, "Alleviating the Effect of Data Imbalance on Adversarial Training", arXiv 2307.10205,
2023 — the 2026 papers' "Adversarial Training Over Long-Tailed Distribution"; reference GuanlinLee/REAT,
``loss_functions.py`` and ``train.py``), transcribed from the reference code:

* attack: PGD maximising the re-balancing loss ``RBL``, cross-entropy weighted by ``w_c ∝ 1/(E_c + 1e-5)``,
  ``E_c = (1 − β_c^{a_c})/(1 − β_c)``, ``β_c = (n_c − 1)/n_c``, where ``a_c`` counts the previous epoch's adversarial
  examples the model predicted as class ``c`` (its training counts in the first epoch), normalised to Σw = C —
  state the method carries across batches (``init_state`` / ``observe`` / ``end_epoch``, checkpointed);
* loss: Balanced Softmax ``CE(logits + log n_c)`` on the adversarial examples plus the tail feature term ``TAIL``
  on their penultimate features (``methods.losses_lt.reat_tail_loss``), with the reference's reduction.

Reference facts and the choices made (see the card): the ``nn.KLDivLoss(size_average='none')`` of the tail term
is the legacy flag, truthy, i.e. a *mean* over all N·F elements — one scalar per anchor — not the per-pair KL its
name suggests (``tail_reduction = "pair"`` is that reading); the tail classes are the last third by index
(``C//3*2+1 …``); the attack runs with the model in eval mode from a uniform start not clipped to [0, 1] before
the first step (its ``attack_recipe``: eval mode, ``clip_start = false``); the reference also computes an unused
clean forward in eval mode per batch (skipped: it changes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.balanced_softmax import BalancedSoftmax
from methods.base import LossInputs
from methods.registry import register

TAIL_REDUCTIONS = ("mean", "pair")


@register("reat")
@dataclass(frozen=True)
class REAT(BalancedSoftmax):
    """REAT (Li et al., 2023): Balanced Softmax on adversarial examples + tail feature term; the attack maximises
    CE weighted by the effective number of the previous epoch's adversarial predictions.

    tail_weight (float, 1.0): weight of the tail feature term (the reference adds it with weight 1).
    tail_reduction (str, "mean"): ``mean`` (the reference's KLDivLoss reduction: a mean over all elements) or
        ``pair`` (the per-pair KL, summed over the features).
    """

    description = "REAT: Balanced Softmax + tail feature term; RBL-weighted attack from last epoch's predictions"
    card = {"paper": "Li, Xu & Zhang, Alleviating the Effect of Data Imbalance on Adversarial Training (REAT)",
            "venue": "arXiv 2307.10205", "year": 2023, "repository": "https://github.com/GuanlinLee/REAT",
            "file": "loss_functions.py (BSL, RBL, REAT), train.py",
            "hyperparameters": {"tail_weight": "1.0: weight of the tail feature term (reference: 1)",
                                "tail_reduction": "mean: the reference's KLDivLoss(size_average='none') is a mean over "
                                                  "all elements; 'pair' = per-pair KL summed over features"},
            "notes": "RBL counts start at the training counts and are the previous epoch's predicted classes of the "
                     "adversarial examples (train-mode logits of the step); tail classes by index C//3*2+1..C-1; "
                     "RobustLT's re-implementation counts predictions after the step instead."}
    prediction_loss = "reat"
    attack_start_std = None  # REAT's attack starts uniformly in the ε-ball (Balanced Softmax's AT-BSL: Gaussian)
    needs_features = True
    tail_weight: float = 1.0
    tail_reduction: str = "mean"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check(self.tail_weight >= 0, "tail_weight", ">= 0")
        self._check(self.tail_reduction in TAIL_REDUCTIONS, "tail_reduction", f"one of {', '.join(TAIL_REDUCTIONS)}")

    def prediction(self, inputs: LossInputs):
        from methods import losses_lt

        if inputs.features is None:
            raise ValueError(f"method {self.name} needs the features of its inputs but got none")
        tail = losses_lt.reat_tail_loss(inputs.features, inputs.targets, inputs.class_counts, self.tail_reduction)
        return super().prediction(inputs) + self.tail_weight * tail

    def init_state(self, class_counts):
        import torch

        counts = torch.as_tensor(class_counts).to(torch.float64)
        return {"train_counts": counts.clone(), "predicted": counts.clone(), "counting": torch.zeros_like(counts)}

    def observe(self, state, inputs: LossInputs) -> None:
        import torch

        c = state["counting"]
        c += torch.bincount(inputs.logits.detach().argmax(1), minlength=c.shape[0]).to(c.dtype)

    def end_epoch(self, state, epoch: int) -> None:
        state["predicted"].copy_(state["counting"])
        state["counting"].zero_()

    def attack_loss(self, clean_logits, state=None):
        from methods import losses_lt

        if not state:
            raise ValueError(f"method {self.name}: its attack needs the run state (init_state)")
        return losses_lt.rbl_attack_loss(losses_lt.rbl_weights(state["train_counts"], state["predicted"]))
