"""How an epoch draws its training examples, by name (:attr:`methods.Method.sampler`).

A sampler maps the training labels ``[n]`` (CPU, int64) and the cell's batch-order generator to the epoch's
``n`` example indices. ``uniform`` is one pass in random order (``torch.randperm``, what every reweighting method
uses); ``class-balanced`` draws ``n`` indices with replacement, each class equally likely (probability of an
example ``∝ 1/n_y``) — resampling in place of reweighting.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench.registry import Registry

Sampler = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
SAMPLERS: Registry[Sampler] = Registry("sampler")


@SAMPLERS.register("uniform")
def uniform(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Every example once, in random order."""
    return torch.randperm(labels.shape[0], generator=generator)


@SAMPLERS.register("class-balanced")
def class_balanced(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws with replacement, example ``i`` with probability ``1 / (C·n_{y_i})``: classes equally likely."""
    counts = torch.bincount(labels)
    weights = 1.0 / counts[labels].to(torch.float64)
    return torch.multinomial(weights, labels.shape[0], replacement=True, generator=generator)
