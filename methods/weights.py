"""Class weights and their per-epoch schedules (methods.md §3).

Each formula lives here once; methods and reports import it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from bench.registry import Registry
from methods.choices import NORMALIZATIONS


def _as_counts(class_counts: Sequence[int] | torch.Tensor) -> torch.Tensor:
    counts = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
    if counts.numel() == 0:
        raise ValueError("class_counts is empty")
    if bool((counts <= 0).any()):
        raise ValueError(f"class_counts must be positive, got {counts.tolist()}")
    return counts


def class_balanced(
    class_counts: Sequence[int] | torch.Tensor, beta: float = 0.9999, normalize: str = "max"
) -> torch.Tensor:
    """Cui et al.'s class-balanced weights ``w_c ∝ (1 − β) / (1 − β^{n_c})``, shape ``[C]``, float32.

    ``normalize="max"`` sets the most frequent class to 1 (the SRAT reference: 78.89 for CIFAR-10 step-100);
    ``"sum"`` makes the weights sum to ``C`` (Cui et al., LDAM-DRW). Computed in float64 because ``β^{n}`` for
    ``β = 0.9999`` loses digits in float32.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    counts = _as_counts(class_counts)
    effective = (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts)) / (1.0 - beta)
    weights = 1.0 / effective
    if normalize == "max":
        weights = weights / weights.min()  # the most frequent class has the smallest 1/E_c
    else:
        weights = weights / weights.sum() * counts.numel()
    return weights.to(torch.float32)


def fixed_under_weight(class_counts: Sequence[int] | torch.Tensor, under_weight: float) -> torch.Tensor:
    """Weight 1 for the well-represented half of the classes, ``under_weight`` for the rest (paper §2.2, §5.4).

    Well-represented = the ``C // 2`` classes with the most training examples (ties broken by class index).
    """
    if under_weight <= 0:
        raise ValueError(f"under_weight must be positive, got {under_weight}")
    counts = _as_counts(class_counts)
    weights = torch.full((counts.numel(),), float(under_weight))
    weights[well_represented(counts)] = 1.0
    return weights


def well_represented(class_counts: Sequence[int] | torch.Tensor) -> list[int]:
    """Indices of the ``C // 2`` classes with the most training examples (stable: lower index wins ties)."""
    counts = _as_counts(class_counts).tolist()
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    return sorted(order[: len(counts) // 2])


# A schedule maps (method, epoch, class counts) to the weights of that epoch, or None for uniform weights.
Schedule = Callable[..., "torch.Tensor | None"]
SCHEDULES: Registry[Schedule] = Registry("weight schedule")


@SCHEDULES.register("uniform")
def uniform(method, epoch: int, class_counts) -> torch.Tensor | None:
    """All classes weigh 1, every epoch."""
    return None


@SCHEDULES.register("cb")
def cb_every_epoch(method, epoch: int, class_counts) -> torch.Tensor | None:
    """Class-balanced weights from the first epoch (CB-Reweight, CB-Focal)."""
    return _imbalance_weights(method, class_counts)


@SCHEDULES.register("drw")
def deferred(method, epoch: int, class_counts) -> torch.Tensor | None:
    """Deferred re-weighting: uniform before ``method.drw_epoch``, class-balanced from then on."""
    return None if epoch < method.drw_epoch else _imbalance_weights(method, class_counts)


def _imbalance_weights(method, class_counts) -> torch.Tensor:
    """Class-balanced weights, or the fixed under-represented weight when the method sets one."""
    if getattr(method, "under_weight", None) is not None:
        return fixed_under_weight(class_counts, method.under_weight)
    return class_balanced(class_counts, beta=method.beta, normalize=method.normalize)
