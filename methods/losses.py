"""Prediction and feature losses (methods.md §3): one function per formula, shapes validated.

Shapes: ``logits`` ``[N, C]``, ``targets`` ``[N]`` (int64 class indices), ``weight`` ``[C]`` or ``None``,
``features`` ``[N, D]`` (already L2-normalised for the separation loss).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

_HALF = (torch.bfloat16, torch.float16)


def in_float32(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Run a loss in float32 even under autocast (bf16 training, ``precision = "auto"`` on CUDA): half-precision
    tensor arguments are upcast and autocast is off inside. For the feature losses whose matrix products feed a
    softmax over similarities or a difference that cancels (SRAT's separation loss, REAT's tail term): in bf16
    they are off by 1e-3 to 5 % of their value, where cross-entropy (which autocast keeps in float32) is exact."""

    def up(value):
        return value.float() if isinstance(value, torch.Tensor) and value.dtype in _HALF else value

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        device = tensors[0].device.type if tensors else "cpu"
        with torch.autocast(device_type=device, enabled=False):
            return fn(*map(up, args), **{k: up(v) for k, v in kwargs.items()})

    return wrapper


def _check_logits(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, C], got shape {tuple(logits.shape)}")
    if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must be [N] with N = {logits.shape[0]} (from logits), got shape {tuple(targets.shape)}"
        )
    if weight is not None and (weight.dim() != 1 or weight.shape[0] != logits.shape[1]):
        raise ValueError(f"weight must be [C] with C = {logits.shape[1]}, got shape {tuple(weight.shape)}")


def _positive_counts(class_counts: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Class counts as float64 ``[C]`` on their own device, checked non-empty and positive.

    The positivity check reads the values, so it runs for CPU counts only: on a GPU it would synchronise the
    host on every batch, and the runner's counts come from a validated training subset anyway.
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
    if counts.numel() == 0 or (counts.device.type == "cpu" and bool((counts <= 0).any())):
        raise ValueError(f"class_counts must be non-empty and positive, got {counts.tolist()}")
    return counts


def focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None, gamma: float = 1.0
) -> torch.Tensor:
    """Softmax focal loss as the SRAT/LDAM reference code computes it.

    ``ℓ_i = w_{y_i}·CE_i``, ``p_i = exp(−ℓ_i)``, ``L = mean_i (1 − p_i)^γ ℓ_i`` — a plain mean over the batch,
    so unlike weighted CE it depends on the overall scale of ``weight``.
    """
    _check_logits(logits, targets, weight)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    per_sample = F.cross_entropy(logits, targets, weight=weight, reduction="none")
    p = torch.exp(-per_sample)
    return ((1.0 - p) ** gamma * per_sample).mean()


def ldam_margins(class_counts: Sequence[int] | torch.Tensor, max_m: float = 0.5) -> torch.Tensor:
    """LDAM margins ``m_c = max_m · (n_min / n_c)^{1/4}``, shape ``[C]``, float32."""
    counts = _positive_counts(class_counts)
    if max_m < 0:
        raise ValueError(f"max_m must be >= 0, got {max_m}")
    return (max_m * (counts.min() / counts) ** 0.25).to(torch.float32)


def ldam_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_counts: Sequence[int] | torch.Tensor,
    weight: torch.Tensor | None = None,
    max_m: float = 0.5,
    s: float = 30.0,
) -> torch.Tensor:
    """Label-distribution-aware margin loss (Cao et al., 2019).

    Subtract ``m_{y_i}`` from the true-class logit, scale every logit by ``s``, then (weighted) cross-entropy.
    """
    _check_logits(logits, targets, weight)
    margins = ldam_margins(class_counts, max_m).to(logits.device, logits.dtype)
    if margins.shape[0] != logits.shape[1]:
        raise ValueError(f"class_counts must have C = {logits.shape[1]} entries, got {margins.shape[0]}")
    if s <= 0:
        raise ValueError(f"s must be > 0, got {s}")
    shifted = logits - F.one_hot(targets, logits.shape[1]).to(logits.dtype) * margins[targets].unsqueeze(1)
    return F.cross_entropy(s * shifted, targets, weight=weight)


def cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """PyTorch's (weighted) cross-entropy: ``Σ w_{y_i} CE_i / Σ w_{y_i}``, shapes validated."""
    _check_logits(logits, targets, weight)
    return F.cross_entropy(logits, targets, weight=weight)


@in_float32
def separation_loss(features: torch.Tensor, targets: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """SRAT's feature separation loss: supervised contrastive loss over one view (Khosla et al., 2020).

    ``features`` are L2-normalised projections ``[N, D]``. For each anchor with at least one same-class partner,
    ``ℓ_i = −mean_{p∈P(i)} log(exp(S_ip) / Σ_{a≠i} exp(S_ia))`` with ``S = z zᵀ / τ``; the loss is the mean over
    anchors that have a partner. Anchors without one still act as negatives. Returns 0 (connected to the graph)
    when no anchor has a partner.
    """
    if features.dim() != 2:
        raise ValueError(f"features must be [N, D], got shape {tuple(features.shape)}")
    if targets.dim() != 1 or targets.shape[0] != features.shape[0]:
        raise ValueError(
            f"targets must be [N] with N = {features.shape[0]} (from features), got shape {tuple(targets.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = features.shape[0]
    sim = features @ features.T / temperature
    sim = sim - sim.max(dim=1, keepdim=True).values.detach()
    not_self = ~torch.eye(n, dtype=torch.bool, device=features.device)
    positives = (targets.unsqueeze(0) == targets.unsqueeze(1)) & not_self
    log_denominator = torch.logsumexp(sim.masked_fill(~not_self, float("-inf")), dim=1, keepdim=True)
    log_prob = sim - log_denominator
    n_pos = positives.sum(dim=1)
    has_partner = n_pos > 0
    if not bool(has_partner.any()):
        return features.sum() * 0.0
    per_anchor = -(log_prob * positives).sum(dim=1)[has_partner] / n_pos[has_partner]
    return per_anchor.mean()


def log_prior(class_counts: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """``log π_c = log(n_c / Σn)``, shape ``[C]``, float32: the bias of logit adjustment and Balanced Softmax."""
    counts = _positive_counts(class_counts)
    return torch.log(counts / counts.sum()).to(torch.float32)


def adjusted_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, bias: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of ``logits + bias`` (a ``[C]`` shift): logit-adjusted loss (Menon et al., 2021) with
    ``bias = τ·log π``, Balanced Softmax (Ren et al., 2020) with ``bias = log n_c`` — the same loss at τ = 1,
    since a softmax ignores a constant shift."""
    _check_logits(logits, targets, weight)
    if bias.shape != (logits.shape[1],):
        raise ValueError(f"bias must be [C] with C = {logits.shape[1]}, got shape {tuple(bias.shape)}")
    return F.cross_entropy(logits + bias.to(logits.device, logits.dtype), targets, weight=weight)


def kl_per_sample(logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(reference) ‖ softmax(logits))`` per sample, ``[N]`` — TRADES' robustness term, with the
    clean prediction as the reference (PyTorch's ``KLDivLoss`` on ``log_softmax(logits)``, summed over classes)."""
    if logits.shape != reference_logits.shape or logits.dim() != 2:
        raise ValueError(
            f"logits and reference logits must both be [N, C], got {tuple(logits.shape)}, {tuple(reference_logits.shape)}"
        )
    return F.kl_div(F.log_softmax(logits, dim=1), F.softmax(reference_logits, dim=1), reduction="none").sum(1)


def trades_loss(
    logits: torch.Tensor,
    clean_logits: torch.Tensor,
    targets: torch.Tensor,
    beta: float = 6.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """TRADES (Zhang et al., ICML 2019): ``CE(f(x), y) + β · mean_i KL(f(x_i) ‖ f(x'_i))``.

    ``logits`` are the adversarial examples', ``clean_logits`` the clean inputs'; class weights (if any) weight
    the natural cross-entropy only, the KL term treats every sample alike as in the reference code.
    """
    _check_logits(clean_logits, targets, weight)
    return F.cross_entropy(clean_logits, targets, weight=weight) + beta * kl_per_sample(logits, clean_logits).mean()


def mart_loss(
    logits: torch.Tensor, clean_logits: torch.Tensor, targets: torch.Tensor, beta: float = 6.0
) -> torch.Tensor:
    """MART (Wang et al., ICLR 2020), as its reference code computes it.

    Boosted cross-entropy on the adversarial examples, ``CE(f(x'), y) − log(1.0001 − p'_{ŷ})`` with ``ŷ`` the
    most probable wrong class, plus ``β · mean_i KL(f(x_i) ‖ f(x'_i)) · (1.0000001 − p_y(x_i))`` — the KL term
    weighted by how badly the clean input is classified (KL on ``log(p' + 1e-12)``).
    """
    _check_logits(logits, targets, None)
    if clean_logits.shape != logits.shape:
        raise ValueError(f"clean logits must be {tuple(logits.shape)}, got {tuple(clean_logits.shape)}")
    adv_probs = F.softmax(logits, dim=1)
    top2 = adv_probs.argsort(dim=1)[:, -2:]
    wrong = torch.where(top2[:, -1] == targets, top2[:, -2], top2[:, -1])
    boosted = F.cross_entropy(logits, targets) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), wrong)
    clean_probs = F.softmax(clean_logits, dim=1)
    true_probs = clean_probs.gather(1, targets[:, None]).squeeze(1)
    kl = F.kl_div(torch.log(adv_probs + 1e-12), clean_probs, reduction="none").sum(1)
    return boosted + beta * (kl * (1.0000001 - true_probs)).mean()


def cosine_margin_loss(
    cosines: torch.Tensor,
    targets: torch.Tensor,
    class_counts: Sequence[int] | torch.Tensor,
    m: float = 0.1,
    s: float = 10.0,
    tau_b: float = 1.2,
    tau_m: float = 0.0,
) -> torch.Tensor:
    """RoBal's training loss (Wu et al., CVPR 2021, their ``MultiMarginLoss``) on cosine logits.

    ``CE(s·(cos − m_y·1[c = y]) + τ_b·log π, y)`` with class-aware margins ``m_c = m + τ_m·log(n_c/n_min)/s``.
    """
    _check_logits(cosines, targets, None)
    counts = _positive_counts(class_counts)
    margins = (m + tau_m * torch.log(counts / counts.min()) / s).to(cosines.device, cosines.dtype)
    shifted = cosines - F.one_hot(targets, cosines.shape[1]).to(cosines.dtype) * margins[targets].unsqueeze(1)
    bias = (tau_b * log_prior(counts)).to(cosines.device, cosines.dtype)
    return F.cross_entropy(s * shifted + bias, targets)
