"""Evaluation of a trained model on the whole test set: clean and under every configured attack, per sample."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bench.attacks import AttackSpec
from bench.data import PreparedData, derived_seed
from bench.models import Classifier
from bench.suite import attack_label


def attack_specs(config: dict[str, Any]) -> list[AttackSpec]:
    return [
        AttackSpec(kind=a["kind"], eps=a["eps"], alpha=a["alpha"], steps=a["steps"],
                   random_start=a["random_start"], name=attack_label(a))
        for a in config["eval_attacks"]
    ]


def evaluate(model: Classifier, data: PreparedData, config: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per-test-sample correctness, ``{"clean": bool[n], "pgd-20": bool[n], …}`` in the suite's order.

    The model is in eval mode; each attack's random start draws from a generator seeded by the cell's seed and
    the attack's label, so results do not depend on which other attacks ran.
    """
    model.eval()
    specs = attack_specs(config)
    out: dict[str, list[torch.Tensor]] = {"clean": [], **{s.label: [] for s in specs}}
    device = data.test_x.device
    generators = {s.label: torch.Generator(device=device).manual_seed(derived_seed("eval", config["seed"], s.label))
                  for s in specs}
    batch = config["eval_batch_size"]
    for start in range(0, data.test_x.shape[0], batch):
        x = data.test_x[start : start + batch]
        y = data.test_y[start : start + batch]
        with torch.no_grad():
            out["clean"].append(model(x).argmax(1) == y)
        for spec in specs:
            x_adv = spec.run(model, x, y, bounds=data.bounds, generator=generators[spec.label])
            with torch.no_grad():
                out[spec.label].append(model(x_adv).argmax(1) == y)
    return {label: torch.cat(flags).cpu().numpy() for label, flags in out.items()}
