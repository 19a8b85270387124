"""AWP on PGD-AT and on TRADES (Wu, Xia & Wang, "Adversarial Weight Perturbation Helps Robust Generalization",
NeurIPS 2020; reference csdongxian/AWP). AWP itself is a capability of every method (``Method.around_step``,
``methods.perturb``): ``method_args.awp_gamma`` switches it on for any of them. These are the two pairs the
reference ships, with its defaults.

Defaults, from the code that produced the paper's numbers:

* ``awp`` (``AT_AWP/train_cifar10.py``): γ = 0.01 (``--awp-gamma`` default; ``awp_size=0.01`` in the shipped
  ``AT_AWP/logs/cifar10_linf/*_awp/output.log``), warm-up 0 (epochs counted from 0: AWP from the first epoch),
  proxy SGD lr 0.01. The paper's text and RobustLT's (CVPR 2026) ``awp_cifar10.yaml`` use γ = 5e-3: set
  ``method_args.awp_gamma = 0.005``.
* ``trades-awp`` (``trades_AWP/train_trades_cifar.py``): β 6, γ 5e-3, proxy lr 0.1 (``args.lr``) and
  ``--awp-warmup 10`` with epochs counted from 1 (``range(1, epochs + 1)``, ``epoch >= 10``): AWP from the 10th
  epoch, which is 0-indexed epoch 9 here (``awp_warmup = 9``); ``awp_warmup = 10`` is the 0-indexed reading.
"""

from dataclasses import dataclass

from methods.base import Method
from methods.registry import register
from methods.trades import TRADES

_AWP_REFERENCE = "https://github.com/csdongxian/AWP"
_AWP_PAPER = "Wu, Xia & Wang, Adversarial Weight Perturbation Helps Robust Generalization"
_AWP_NOTES = ("AWP perturbs each weight matrix / kernel w (name containing 'weight', more than one dimension) by "
              "gamma*||w||*d/(||d|| + 1e-20), d = one proxy SGD step ascending the method's own loss of the batch, "
              "before forward/backward/step, and subtracts the same vector after the step; the proxy's forward "
              "leaves the model's batch-norm statistics untouched. RobustLT's re-implementation (core/methods/awp.py) "
              "takes the proxy step with the training optimiser itself (momentum, weight decay, current lr) and "
              "starts after epoch awp_warmup (1-indexed '>'); bench follows the original repository.")


@register("awp")
@dataclass(frozen=True)
class AWP(Method):
    """PGD-AT with adversarial weight perturbation (AT-AWP): CE on the adversarial examples, weights perturbed by
    γ (0.01) per layer relative to their norm around each step.

    awp_gamma (float, 0.01): γ, the relative weight perturbation (reference default; the paper's text: 5e-3).
    awp_warmup (int, 0): first 0-indexed epoch with AWP. awp_proxy_lr (float, 0.01): the proxy SGD step's lr.
    """

    description = "PGD-AT + adversarial weight perturbation (gamma 0.01, per-layer relative), CE on adv"
    card = {"paper": _AWP_PAPER, "venue": "NeurIPS", "year": 2020, "repository": _AWP_REFERENCE,
            "file": "AT_AWP/utils_awp.py, AT_AWP/train_cifar10.py",
            "hyperparameters": {"awp_gamma": "0.01: relative weight perturbation gamma (paper text 5e-3)",
                                "awp_warmup": "0: first 0-indexed epoch with AWP",
                                "awp_proxy_lr": "0.01: lr of the proxy SGD step (cancels up to rounding)"},
            "notes": _AWP_NOTES}
    prediction_loss = "ce"
    # AT_AWP/train_cifar10.py crafts with the model in train mode (model.train() follows each batch's attack; only
    # an epoch's first batch, after the previous epoch's model.eval() test, is crafted in eval mode): SRAT's recipe.
    # trades-awp inherits TRADES' eval-mode recipe (trades_AWP/train_trades_cifar.py perturb_input: model.eval()).
    awp_gamma: float = 0.01


@register("trades-awp")
@dataclass(frozen=True)
class TRADESAWP(TRADES):
    """TRADES with adversarial weight perturbation (TRADES-AWP): CE(clean) + β (6) KL(clean ‖ adv), KL attack,
    weights perturbed by γ (5e-3) from the reference's 10th epoch on.

    kl_weight (float, 6.0): TRADES' β. awp_gamma (float, 0.005): γ. awp_warmup (int, 9): first 0-indexed epoch
    with AWP (the reference's 1-indexed 10). awp_proxy_lr (float, 0.1): the proxy SGD step's lr (``args.lr``).
    """

    description = "TRADES + adversarial weight perturbation (gamma 5e-3 from the 10th epoch)"
    card = {"paper": _AWP_PAPER, "venue": "NeurIPS", "year": 2020, "repository": _AWP_REFERENCE,
            "file": "trades_AWP/utils_awp.py, trades_AWP/train_trades_cifar.py",
            "hyperparameters": {"kl_weight": "6.0: TRADES' beta (natural CE + beta * KL)",
                                "awp_gamma": "0.005: relative weight perturbation gamma",
                                "awp_warmup": "9: first 0-indexed epoch with AWP (reference: --awp-warmup 10 with "
                                              "epochs counted from 1; 10 is the 0-indexed reading)",
                                "awp_proxy_lr": "0.1: lr of the proxy SGD step (the reference passes args.lr)"},
            "notes": _AWP_NOTES}
    awp_gamma: float = 0.005
    awp_warmup: int = 9
    awp_proxy_lr: float = 0.1
