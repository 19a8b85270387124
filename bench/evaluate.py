"""Evaluation of a trained model on the whole test set: clean and under every configured attack, per sample."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from bench import accel
from bench.attacks import AttackSpec
from bench.data import PreparedData, derived_seed
from bench.models import Classifier


def attack_specs(config: dict[str, Any]) -> list[AttackSpec]:
    """The cell's evaluation attacks (its validated ``eval_attacks`` tables), in the suite's order."""
    return [AttackSpec.from_table(a) for a in config["eval_attacks"]]


def evaluate(
    model: Classifier,
    data: PreparedData,
    config: dict[str, Any],
    specs: Sequence[AttackSpec] | None = None,
    on_step: Callable[[str, int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Per-test-sample correctness, ``{"clean": bool[n], "pgd-20": bool[n], …}`` in the suite's order.

    ``specs`` replaces the cell's own attacks (``bench evaluate`` adds attacks to a finished run). The model is
    in eval mode; each attack's random choices draw from a generator seeded by the cell's seed and the attack's
    label, so results do not depend on which other attacks ran, nor on whether the attack ran with the suite or
    was added later. Precision is the cell's ``eval_precision`` (:mod:`bench.accel`; fp32 unless set).
    ``on_step(label, done, total)`` is told before each attack runs on a batch (progress: ``done`` of ``total``
    attack-batches finished).
    """
    model.eval()
    specs = attack_specs(config) if specs is None else list(specs)
    out: dict[str, list[torch.Tensor]] = {"clean": [], **{s.label: [] for s in specs}}
    device = data.test_x.device
    generators = {s.label: torch.Generator(device=device).manual_seed(derived_seed("eval", config["seed"], s.label))
                  for s in specs}
    batch = config["eval_batch_size"]
    total = -(-data.test_x.shape[0] // batch) * len(specs)
    step = 0
    with accel.Policy.resolve(config, device).evaluation():
        for start in range(0, data.test_x.shape[0], batch):
            x = data.test_x[start : start + batch]
            y = data.test_y[start : start + batch]
            with torch.no_grad():
                out["clean"].append(model(x).argmax(1) == y)
            for spec in specs:
                if on_step is not None:
                    on_step(spec.label, step, total)
                step += 1
                x_adv = spec.run(model, x, y, bounds=data.bounds, generator=generators[spec.label])
                with torch.no_grad():
                    out[spec.label].append(model(x_adv).argmax(1) == y)
    return {label: torch.cat(flags).cpu().numpy() for label, flags in out.items()}


def feature_dump(model: Classifier, data: PreparedData, config: dict[str, Any]) -> dict:
    """Penultimate features of ``config["features"]`` train and test points, clean and under the first attack.

    The points are drawn from a generator seeded by the cell's seed only, so every method at one seed dumps the
    same points (their pictures can be compared side by side).
    """
    n = config["features"]
    if n <= 0:
        return {}
    model.eval()
    spec = attack_specs(config)[0] if config["eval_attacks"] else None
    out = {}
    for split, x_all, y_all in (("train", data.train_x, data.train_y), ("test", data.test_x, data.test_y)):
        pick = torch.randperm(x_all.shape[0], generator=torch.Generator().manual_seed(derived_seed("features", config["seed"], split)))
        pick = pick[: min(n, x_all.shape[0])].to(x_all.device)
        x, y = x_all[pick], y_all[pick]
        with torch.no_grad():
            out[(split, "clean")] = (y.cpu().numpy(), model.forward_features(x)[1].float().cpu().numpy())
        if spec is not None:
            gen = torch.Generator(device=x.device).manual_seed(derived_seed("features-attack", config["seed"], split))
            x_adv = spec.run(model, x, y, bounds=data.bounds, generator=gen)
            with torch.no_grad():
                out[(split, spec.label)] = (y.cpu().numpy(), model.forward_features(x_adv)[1].float().cpu().numpy())
    return out
