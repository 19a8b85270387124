"""The four model-selection keys of a cell (``val_split``, ``select``, ``val_every``, ``val_attack``): their
defaults, their checks and how they enter a cell's identity. Torch-free, so reading a suite never imports torch;
:mod:`bench.selection` applies them during training and :mod:`bench.data.subset` holds the images out.

* ``val_split`` (float in [0, 1), default 0 = no validation set): the share of each class's *kept* training images
  held out for validation, at least one per class (``max(1, round(share × n_c))``, halves rounded up:
  :func:`bench.data.profiles.held_out`), drawn from ``(dataset, imbalance, seed)`` only, so every method at one
  seed holds out the same images. The model trains on the rest: the class counts the methods' weights see (and
  ``class_metrics.n_train``) are the counts after the split.
* ``select`` (default ``"last"``, the paper's protocol): which epoch's weights are evaluated on the test set —
  ``"last"``, ``"best-val-robust"`` (highest robust validation accuracy under ``val_attack``) or ``"best-val-clean"``
  (highest clean validation accuracy); ties go to the earlier epoch. Accuracy here is *class-balanced* (the mean
  of the per-class accuracies), the quantity a balanced test set's overall accuracy estimates.
* ``val_every`` (int >= 1, default 1): validate after every ``val_every``-th epoch, and always after the last.
* ``val_attack`` (an ``eval_attacks`` table, or ``"none"``): the attack of the robust validation accuracy. Default
  (:func:`default_val_attack`): L∞ PGD, 10 steps, random start, with the training attack's ε and α (for a
  naturally trained cell, those of its first evaluation attack with a step size α); ``"none"`` (clean only) for ``best-val-clean``.
  The model is in eval mode, as in evaluation.

A cell without a validation set (``val_split = 0``, ``select = "last"``) carries none of these keys in its
resolved config, so adding them changed no existing cell's hash; with one it carries all four, resolved.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.errors import BenchError, valid_choices
from bench.suite_attacks import eval_attack, whole
from bench.values import parse_number

SELECTION_KEYS = ("val_split", "select", "val_every", "val_attack")
SELECTS = ("last", "best-val-robust", "best-val-clean")
DEFAULTS: dict[str, Any] = {"val_split": 0.0, "select": "last", "val_every": 1}
VAL_ATTACK_STEPS = 10  # PGD steps of the default validation attack


def default_val_attack(config: Mapping[str, Any]) -> dict[str, Any] | str:
    """The validation attack a cell gets unless it names one (see the module's docstring)."""
    if config["select"] == "best-val-clean":
        return "none"
    train = config["train_attack"]
    source = train if isinstance(train, dict) else next(
        (a for a in config["eval_attacks"] if "alpha" in a), None)
    if source is None:
        return "none"  # best-val-robust then asks for a val_attack (apply)
    return {"kind": "pgd", "eps": source["eps"], "alpha": source["alpha"], "steps": VAL_ATTACK_STEPS,
            "random_start": True}


def apply(c: dict[str, Any], where: str) -> None:
    """Check the selection keys of the merged config ``c`` (its ``train_attack`` and ``eval_attacks`` already
    normalised) and leave them in ``c`` resolved — or, without a validation set, not at all. One-line errors."""
    given = {key: c.pop(key) for key in SELECTION_KEYS if key in c}
    out = {**DEFAULTS, **{k: v for k, v in given.items() if k != "val_attack"}}
    split = out["val_split"]
    number = parse_number(split, f"{where}: val_split")
    if not 0 <= number < 1:
        raise BenchError(f"{where}: val_split = {split!r} must be in [0, 1): the share of each class's training "
                         "images held out for validation, e.g. 0.1 (0 = none)")
    out["val_split"] = split = float(number)
    if not isinstance(out["select"], str) or out["select"] not in SELECTS:
        raise BenchError(f"{where}: select = {out['select']!r} is unknown{valid_choices(str(out['select']), SELECTS)}")
    out["val_every"] = whole(out["val_every"], f"{where}: val_every", minimum=1)
    attack = given.get("val_attack", default_val_attack({**c, **out}))
    if attack not in ("none", False):
        attack = eval_attack(attack, f"{where}: val_attack")
    else:
        attack = "none"
    if split == 0:
        if out["select"] != "last":
            raise BenchError(f"{where}: select = {out['select']!r} needs a validation set; set val_split, e.g. "
                             "val_split = 0.1 (a share of each class's training images), or select = \"last\"")
        return  # no validation set: none of the keys is part of the cell
    if out["select"] == "best-val-robust" and attack == "none":
        raise BenchError(f"{where}: select = \"best-val-robust\" needs a val_attack; give a table such as "
                         "val_attack = { kind = \"pgd\", eps = \"8/255\", alpha = \"2/255\", steps = 10 }")
    c.update(out, val_attack=attack)
