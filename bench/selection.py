"""Model selection on a validation set held out of the training images, never on the test set.

A cell with ``val_split`` > 0 (:mod:`bench.selection_keys`) is validated after every ``val_every``-th epoch and
after the last: clean accuracy, and robust accuracy under ``val_attack``, both *class-balanced* (the mean of the
per-class accuracies, what a balanced test set's overall accuracy estimates), of the model as it would be
evaluated — eval mode, the method's inference-time bias added — and in the evaluation's precision. The attack
draws from its own generator, seeded by the cell's seed and the epoch, so validating perturbs none of training's
random streams (nor the batch-norm statistics, in eval mode): the training curve is the same whether or how often
the cell validates. :class:`Selector` keeps the weights of the best epoch so far (``best-val-robust`` /
``best-val-clean``; ties go to the earlier epoch) in memory and in the checkpoint, so a cell resumed after a kill
selects the same epoch; at the end it loads them, and evaluation sees only the selected model. With ``select =
"last"`` the last epoch is kept, and its validation scores are reported.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bench import accel
from bench.attacks import AttackSpec
from bench.data import PreparedData, derived_seed
from bench.models import Classifier
from methods import Method

CRITERION = {"best-val-robust": "val_robust", "best-val-clean": "val_clean"}  # select -> the score it maximises


def balanced_accuracy(correct: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    """Mean over the classes present in ``y`` of the per-class accuracy; ``correct`` bool ``[N]``, ``y`` ``[N]``."""
    total = torch.bincount(y, minlength=num_classes)
    hits = torch.bincount(y[correct], minlength=num_classes)
    present = total > 0
    return float((hits[present].double() / total[present].double()).mean())


class Selector:
    """Validation and the choice of the epoch whose weights a cell reports (see the module's docstring).

    Inactive (every method a no-op) for a cell without a validation set, so such a cell trains, checkpoints and
    reports exactly as before the keys existed.
    """

    def __init__(self, config: dict[str, Any], method: Method, data: PreparedData):
        self.active = float(config.get("val_split", 0.0)) > 0
        if not self.active:
            return
        if data.val_x is None or data.val_y is None:
            raise ValueError("a cell with val_split > 0 needs data prepared with its validation split")
        self.config = config
        self.select = config["select"]
        self.every = config["val_every"]
        self.epochs = config["epochs"]
        attack = config["val_attack"]
        self.spec = AttackSpec.from_table(attack) if isinstance(attack, dict) else None
        self.x, self.y, self.bounds = data.val_x, data.val_y, data.bounds
        self.num_classes = len(data.class_names)
        self.scale, self.bias = method.inference_scale, method.inference_bias(data.train_counts)
        self.best: dict[str, Any] = {"epoch": -1, "score": -math.inf, "scores": {}}
        self.best_state: dict[str, torch.Tensor] | None = None

    def due(self, epoch: int) -> bool:
        """Whether ``epoch`` (0-indexed) is validated: every ``val_every``-th, and the last."""
        return self.active and ((epoch + 1) % self.every == 0 or epoch == self.epochs - 1)

    def validate(self, model: Classifier, epoch: int) -> dict[str, float]:
        """The model's validation scores after ``epoch`` (``val_clean``, and ``val_robust`` with an attack); the
        model's mode and logit adjustment are restored afterwards."""
        was_training = model.training
        model.eval()
        model.set_inference(self.scale, self.bias)
        generator = torch.Generator(device=self.x.device).manual_seed(
            derived_seed("val", self.config["seed"], epoch))
        clean, robust = [], []
        batch = self.config["eval_batch_size"]
        try:
            with accel.Policy.resolve(self.config, self.x.device).evaluation():
                for start in range(0, self.x.shape[0], batch):
                    x, y = self.x[start : start + batch], self.y[start : start + batch]
                    with torch.no_grad():
                        clean.append(model(x).argmax(1) == y)
                    if self.spec is not None:
                        x_adv = self.spec.run(model, x, y, bounds=self.bounds, generator=generator)
                        with torch.no_grad():
                            robust.append(model(x_adv).argmax(1) == y)
        finally:
            model.set_inference()
            model.train(was_training)
        scores = {"val_clean": balanced_accuracy(torch.cat(clean), self.y, self.num_classes)}
        if robust:
            scores["val_robust"] = balanced_accuracy(torch.cat(robust), self.y, self.num_classes)
        self._consider(model, epoch, scores)
        return scores

    def _consider(self, model: Classifier, epoch: int, scores: dict[str, float]) -> None:
        criterion = CRITERION.get(self.select)
        if criterion is None:  # select = "last": the latest validated epoch, whose weights are the model's own
            self.best = {"epoch": epoch, "score": 0.0, "scores": dict(scores)}
            return
        if scores[criterion] > self.best["score"]:  # strictly better: a tie keeps the earlier epoch
            self.best = {"epoch": epoch, "score": scores[criterion], "scores": dict(scores)}
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def checkpoint(self) -> dict[str, Any]:
        """What a checkpoint keeps of the selection so far (nothing for an inactive selector)."""
        if not self.active:
            return {}
        return {"selection": {**self.best, "state": self.best_state}}

    def resume(self, loaded: dict[str, Any]) -> None:
        """Restore the selection from a checkpoint written by :meth:`checkpoint`."""
        if not self.active:
            return
        saved = loaded["selection"]
        self.best = {"epoch": int(saved["epoch"]), "score": float(saved["score"]),
                     "scores": {k: float(v) for k, v in saved["scores"].items()}}
        state = saved.get("state")
        self.best_state = None if state is None else {k: v.to(self.x.device) for k, v in state.items()}

    def finish(self, model: Classifier) -> dict[str, Any] | None:
        """Load the selected epoch's weights into ``model``; the record of the choice (None when inactive):
        ``select``, ``epoch``, ``val_clean``, ``val_robust`` (None without an attack), ``val_attack`` (label)
        and ``val_images``."""
        if not self.active:
            return None
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        scores = self.best["scores"]
        return {"select": self.select, "epoch": self.best["epoch"], "val_clean": scores.get("val_clean"),
                "val_robust": scores.get("val_robust"), "val_attack": self.spec.label if self.spec else None,
                "val_images": int(self.x.shape[0])}
