"""RobustLT (Zhang, Guo, Li, Shi & Liu, "Taming the Long Tail: Rebalancing Adversarial Training via Adaptive
Perturbation", CVPR 2026; reference zhang-lilin/RobustLT ``core/methods/robustlt.py``): class-wise perturbation
budgets with an ε warm-up, a capability of every method's training attack (``method_args.cw_eps_alpha``,
``cw_eps_warmup``, ``cw_eps_start``; ``Method.attack_budget``, ``methods.losses_lt.classwise_budgets``). The
reference enhances PGD-AT, AWP, RoBal, REAT, AT-BSL and TAET with it; ``robustlt`` is its PGD-AT pair
(``configs/cifar10lf/robustlt_pgdat_cifar10.yaml``: α 0.3, β 0.8); ``method_args.cw_eps_alpha = 0.3`` with
``cw_eps_warmup = 0.8`` adds it to any other method (``at-bsl-aua`` gives its ``robustlt_atbsl``).
"""

from dataclasses import dataclass

from methods.base import Method
from methods.registry import register


@register("robustlt")
@dataclass(frozen=True)
class RobustLT(Method):
    """RobustLT on PGD-AT (Zhang et al., CVPR 2026): CE on adversarial examples crafted with class-wise budgets
    ``ε_c = (1 − α)ε + τ·sqrt(log(n_max/n_c))·ε`` (sample-weighted mean ε), grown linearly over the first β of
    the run; step ``α·ε_c/ε``.

    cw_eps_alpha (float, 0.3): α, the share of the budget redistributed towards rare classes.
    cw_eps_warmup (float, 0.8): β, fraction of the run over which the budgets grow from 0.
    cw_eps_start (str, "global"): random start radius, the global ε (reference) or the class's.
    """

    description = "RobustLT (PGD-AT): class-wise eps budgets (alpha 0.3) with a linear warm-up over 0.8 of the run"
    card = {"paper": "Zhang et al., Taming the Long Tail: Rebalancing Adversarial Training via Adaptive Perturbation",
            "venue": "CVPR", "year": 2026, "repository": "https://github.com/zhang-lilin/RobustLT",
            "file": "core/methods/robustlt.py, core/methods/utils.py, configs/cifar10lf/robustlt_pgdat_cifar10.yaml",
            "hyperparameters": {
                "cw_eps_alpha": "0.3: alpha; eps_c = (1-alpha)*eps + tau*sqrt(log(n_max/n_c))*eps, tau = alpha / "
                                "sum_c (n_c/N) sqrt(log(n_max/n_c))",
                "cw_eps_warmup": "0.8: beta; intensity min(e / (beta*epochs), 1), e 0-indexed (the reference's "
                                 "current_epoch - 1 with epochs counted from 1): budget 0 in the first epoch",
                "cw_eps_start": "global: uniform start in the global eps-ball, projected on eps_c after the first "
                                "step (the reference); 'class' starts in the class's ball"},
            "notes": "the reference attacks in train mode with batch-norm statistics frozen (track_running_stats "
                     "False) from a uniform start clipped to [0, 1] (utils.py); bench's bn_mode 'frozen' is that mode. "
                     "With every class at n_max the reference divides 0 by 0; here every budget is (1-alpha)*eps."}
    prediction_loss = "ce"
    attack_recipe = {"bn_mode": "frozen"}  # train mode, track_running_stats False: batch statistics, none kept
    cw_eps_alpha: float = 0.3
    cw_eps_warmup: float = 0.8
