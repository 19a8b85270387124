"""Formulas of the long-tailed adversarial-training methods of 2023-2026 (REAT, TAET, RobustLT), one function each,
transcribed from the authors' reference code (repository and file named in each docstring). Torch-backed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.losses import _check_logits, in_float32


def tail_classes(num_classes: int) -> list[int]:
    """REAT's tail classes by index (``loss_functions.REAT``): ``range(C // 3 * 2 + 1, C)`` — 7, 8, 9 of CIFAR-10,
    67…99 of CIFAR-100. By index, as the reference: class 0 is the most frequent in its (and bench's) profiles."""
    return list(range(num_classes // 3 * 2 + 1, num_classes))


def rbl_weights(class_counts: torch.Tensor, predicted_counts: torch.Tensor) -> torch.Tensor:
    """REAT's re-balancing weights (GuanlinLee/REAT ``loss_functions.RBL``), float32 ``[C]``:
    ``β_c = (n_c − 1)/n_c``, ``E_c = (1 − β_c^{a_c}) / (1 − β_c)`` with ``a_c`` the number of the previous epoch's
    adversarial examples predicted as ``c``, ``w_c = 1/(E_c + 1e-5)``, normalised to ``Σ w = C``."""
    n = class_counts.detach().to(torch.float64)
    beta = ((n - 1.0) / n).to(torch.float32)  # Python float division, stored in a float32 array
    a = predicted_counts.detach().to(torch.float32)
    effective = (1.0 - beta**a) / (1.0 - beta)
    w = 1.0 / (effective + 1e-5)
    return w / w.sum() * n.shape[0]


def rbl_attack_loss(weight: torch.Tensor):
    """The per-sample objective whose sum is REAT's attack loss ``F.cross_entropy(logits, y, weight=w)`` (mean
    reduction: ``Σ w_{y_i} CE_i / Σ w_{y_i}``): sample ``i`` contributes ``w_{y_i}·CE_i / Σ_j w_{y_j}``."""

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = weight.to(logits.device, logits.dtype)[y]
        return w * F.cross_entropy(logits, y, reduction="none") / w.sum()

    return loss


@in_float32
def reat_tail_loss(features: torch.Tensor, targets: torch.Tensor, class_counts: torch.Tensor,
                   reduction: str = "mean") -> torch.Tensor:
    """REAT's tail feature term (``loss_functions.REAT``, the ``TAIL`` sum), on the penultimate features ``f``.

    With ``q_a = softmax(f_a)`` (detached) for each tail-class anchor ``a`` in the batch, ``p_j = log_softmax(f_j)``,
    ``s_{aj} = −1`` when ``y_j = y_a`` else ``+1`` and ``W_{aj} = w_{y_a} + w_{y_j}``, ``w_c = sqrt(Σn / n_c)``:

    * ``reduction = "mean"`` (the reference): its ``nn.KLDivLoss(size_average='none')`` is the legacy
      ``size_average`` flag, truthy, so the reduction is ``mean`` over all N·F elements:
      ``k_a = mean_{j,d} q_ad (log q_ad − p_jd)``, a scalar per anchor, and
      ``TAIL = mean_j Σ_a k_a·s_{aj}·W_{aj} / A``;
    * ``reduction = "pair"`` (the per-pair KL the loss's name suggests): ``k_{aj} = Σ_d q_ad (log q_ad − p_jd)``
      and ``TAIL = mean_j Σ_a k_{aj}·s_{aj}·W_{aj} / A``.

    ``A`` is the number of tail anchors; with none the term is 0.
    """
    if features.dim() != 2 or targets.shape != features.shape[:1]:
        raise ValueError(f"features must be [N, F] with targets [N], got {tuple(features.shape)}, "
                         f"{tuple(targets.shape)}")
    if reduction not in ("mean", "pair"):
        raise ValueError(f"reduction must be 'mean' or 'pair', got {reduction!r}")
    counts = torch.as_tensor(class_counts, device=features.device).to(features.dtype)
    tail = torch.tensor(tail_classes(counts.shape[0]), device=targets.device)
    anchors = torch.isin(targets, tail).to(features.dtype)  # every row computed, non-anchors masked: no host sync
    w = torch.sqrt(1.0 / (counts / counts.sum()))
    sign = torch.where(targets[:, None] == targets[None, :], -1.0, 1.0).to(features.dtype)  # [anchor, j]
    pair_w = w[targets][:, None] + w[targets][None, :]
    q = F.softmax(features.detach(), dim=1)  # the anchors' detached targets
    log_p = F.log_softmax(features, dim=1)
    neg_entropy = torch.xlogy(q, q).sum(1)  # Σ_d q_ad log q_ad
    cross = q @ log_p.T  # [a, j]: Σ_d q_ad log p_jd
    if reduction == "mean":  # mean over j and d of q_ad (log q_ad − log p_jd)
        k = ((neg_entropy - cross.mean(1)) / features.shape[1])[:, None]
    else:
        k = neg_entropy[:, None] - cross
    return (anchors[:, None] * k * sign * pair_w).sum(0).mean() / anchors.sum().clamp(min=1.0)


def harl_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.1, beta: float = 0.1,
              gamma: float = 0.1) -> torch.Tensor:
    """TAET's hierarchical adversarial robustness loss (BuhuiOK/TAET ``code/HARL.py``, the notebook's ``HARL``).

    ``L_c = Σ_{i: y_i = c} CE_i / (n_c^batch + 1e-10)`` for every class ``c`` (0 for a class absent from the
    batch), ``L̄ = mean_c L_c``, ``π_c = L_c / (Σ_c L_c + 1e-10)``:
    ``α·L̄ + β·mean_c (L_c − L̄)² + γ·Σ_c π_c²``.
    """
    _check_logits(logits, targets, None)
    per_sample = F.cross_entropy(logits, targets, reduction="none")
    onehot = F.one_hot(targets, logits.shape[1]).to(per_sample.dtype)  # [N, C]
    class_losses = (per_sample[:, None] * onehot).sum(0) / (onehot.sum(0) + 1e-10)
    avg = class_losses.mean()
    normalized = class_losses / (class_losses.sum() + 1e-10)
    return alpha * avg + beta * ((class_losses - avg) ** 2).mean() + gamma * (normalized**2).sum()


def classwise_budgets(targets: torch.Tensor, class_counts: torch.Tensor, eps: float, alpha: float, epoch: int,
                      epochs: int, cw_alpha: float, warmup: float) -> tuple[torch.Tensor, torch.Tensor]:
    """RobustLT's class-wise perturbation budgets (zhang-lilin/RobustLT ``core/methods/robustlt.py``), per sample.

    ``s_c = sqrt(log(n_max / n_c))``, ``τ = α / Σ_c (n_c/N)·s_c``, ``ε_c = (1 − α)·ε + τ·s_c·ε`` (so
    ``Σ_c (n_c/N)·ε_c = ε``); intensity ``min(e / (β·E), 1)`` for 0-indexed epoch ``e`` of ``E`` (the reference's
    ``(current_epoch − 1)`` with its 1-indexed epochs), 1 when ``β = 0``; ``ε_i = ε_{y_i}·intensity`` and
    ``α_i = ε_i / ε · α``. Computed in float32 as the reference (its counts are an integer tensor). Where every
    class has ``n_max`` examples the reference divides 0 by 0; here ``τ·s_c`` is then 0 (every budget ``(1 − α)ε``).
    """
    n = torch.as_tensor(class_counts, device=targets.device).to(torch.float32)
    s = (n.max() / n).log().sqrt()
    denominator = ((n / n.sum()) * s).sum()
    tau = torch.where(denominator > 0, cw_alpha / denominator, 0.0)  # no host sync
    eps_max = (1 - cw_alpha) * eps + tau * s * eps
    intensity = min(epoch / (warmup * epochs), 1.0) if warmup > 0 else 1.0
    eps_i = (eps_max * intensity)[targets]
    alpha_i = eps_i / eps * alpha if eps > 0 else torch.zeros_like(eps_i)
    return eps_i, alpha_i
