"""Robust accuracy users can trust: worst case over attacks, PGD-vs-AutoAttack gaps, and gradient-masking guards.

Pure functions over per-sample flags (``{label: bool[n]}``, ``clean`` first, as stored in ``sample_flags``):

* :func:`worst_case` — robust only if correct clean and under every attack of the run;
* :func:`class_correct` — per-class counts of a flag vector;
* :func:`pgd_aa_gap` — robust accuracy under PGD minus under AutoAttack, overall and per class.

Readers over a results database, tidy like :func:`bench.results.read.load_results`: :func:`worst_case_frame`
(``attack = "worst-case"``), :func:`pgd_aa_gap_frame`, and :func:`bench.results.read.load_guards`.

Guards are computed per run at the end of evaluation (``bench run``, ``bench evaluate``) and stored in the
``guards`` table; the cell key ``guards`` lists which (default :data:`DEFAULT_GUARDS`), and each runs only where it
applies. A guard is *flagged* when its value is above its threshold. All thresholds are shares of the test set
(0.02 = 2 percentage points).

``zero-grad-share`` (threshold 0.01)
    Share of test inputs whose input gradient of the (float32, unscaled) cross-entropy is exactly zero in every
    entry. PGD and FGSM step along ``sign(∇)``: where it is zero they cannot move, so such inputs look robust
    (gradient masking — e.g. saturated softmax on very large logits). One forward/backward pass over the test set.
``scaled-pgd`` (threshold 0.02; only for methods with ``Method.scale_sensitive``)
    LDAM-family methods train on ``s · z`` but are attacked on the unscaled logits ``z`` (methods.md §3). At
    scale 1 their softmax is almost flat, so the cross-entropy gradient points toward "all other classes" rather
    than the nearest one, and PGD underestimates their vulnerability. The guard reruns the run's first PGD attack
    (same ε, α, steps, restarts) on the cross-entropy of ``s · z`` — the scale the method trained at, read from
    ``Method.logit_scale`` — computed in float64 so that a large scale does not saturate the softmax to an
    exactly-zero gradient (float32 underflows at margins ≈ 100, float64 at ≈ 745). Chosen over a fixed factor
    (e.g. ×100), which saturates at small margins, and over dividing by a temperature, which helps only models
    with too-large logits: the method's own scale is what its loss landscape was shaped at. Only inputs that
    survived the plain attack are attacked again; the value is the share of test inputs robust under plain PGD
    but not under the scaled one.
``pgd-aa-gap`` (threshold 0.02; when both a ``pgd`` and an ``autoattack`` attack were evaluated)
    Robust accuracy under the run's first ``pgd`` attack minus under its first ``autoattack`` attack. AutoAttack is
    a stronger, parameter-free ensemble; a gap of more than 2 points says PGD overstates robustness. The detail
    gives the gap per class and the shares of inputs that only one of the two broke. Free: it reads the flags.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from bench.attacks import AttackSpec
from bench.catalog import DEFAULT_GUARDS, GUARD_NAMES, declared  # names and defaults, declared torch-free
from bench.data import PreparedData, derived_seed
from bench.registry import Registry
from bench.results.read import RESULT_COLUMNS, load_guards, load_results, load_sample_flags

__all__ = [
    "DEFAULT_GUARDS", "GUARDS", "Guard", "GuardContext", "GuardResult", "class_correct", "guard_names",
    "load_guards", "pgd_aa_gap", "pgd_aa_gap_frame", "run_guards", "worst_case", "worst_case_frame",
    "zero_gradient_flags",
]

ZERO_GRAD_THRESHOLD = 0.01  # share of test inputs with an all-zero input gradient
SCALED_PGD_THRESHOLD = 0.02  # share of test inputs robust to PGD but not to PGD on s·logits (2 points)
PGD_AA_GAP_THRESHOLD = 0.02  # robust accuracy under PGD minus under AutoAttack (2 points)
WORST_CASE = "worst-case"  # the attack label of worst_case_frame's rows


# -- pure functions over flags ------------------------------------------------------------------------------


def worst_case(flags: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per-sample worst case: correct clean **and** under every attack in ``flags`` (bool ``[n]``)."""
    if not flags:
        raise ValueError("worst_case needs at least one flag vector")
    vectors = [np.asarray(v, dtype=bool) for v in flags.values()]
    if len({v.shape for v in vectors}) != 1:
        raise ValueError(f"flag vectors differ in length: {sorted({v.size for v in vectors})}")
    return np.logical_and.reduce(vectors)


def class_correct(flags: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: (number of correct samples, number of samples), each ``[n_classes]``."""
    flags, labels = np.asarray(flags, dtype=bool), np.asarray(labels)
    if flags.shape != labels.shape:
        raise ValueError(f"flags {flags.shape} and labels {labels.shape} differ in shape")
    correct = np.bincount(labels[flags], minlength=n_classes)[:n_classes]
    total = np.bincount(labels, minlength=n_classes)[:n_classes]
    return correct, total


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")


def pgd_aa_gap(pgd_flags: np.ndarray, aa_flags: np.ndarray, labels: np.ndarray,
               class_names: Sequence[str]) -> tuple[float, dict[str, Any]]:
    """Robust accuracy under PGD minus under AutoAttack, and a detail dict (per-class gaps, one-sided shares)."""
    pgd_flags, aa_flags = np.asarray(pgd_flags, bool), np.asarray(aa_flags, bool)
    n = pgd_flags.size
    pgd_c, total = class_correct(pgd_flags, labels, len(class_names))
    aa_c, _ = class_correct(aa_flags, labels, len(class_names))
    per_class = {str(name): _ratio(pgd_c[c] - aa_c[c], total[c]) for c, name in enumerate(class_names)}
    detail = {
        "pgd_accuracy": _ratio(pgd_flags.sum(), n),
        "aa_accuracy": _ratio(aa_flags.sum(), n),
        "pgd_only": _ratio((pgd_flags & ~aa_flags).sum(), n),  # robust to PGD, broken by AutoAttack
        "aa_only": _ratio((aa_flags & ~pgd_flags).sum(), n),  # robust to AutoAttack, broken by PGD
        "per_class": per_class,
        "max_class_gap": max((v for v in per_class.values() if not math.isnan(v)), default=float("nan")),
    }
    return detail["pgd_accuracy"] - detail["aa_accuracy"], detail


# -- guards -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardResult:
    """One guard's outcome for one run (a ``guards`` table row)."""

    name: str
    value: float
    threshold: float
    flagged: bool
    detail: dict

    def row(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GuardContext:
    """What a guard may read: the model (eval mode), the data, the cell, and every evaluated attack's flags.

    ``Guard.applies`` reads only ``config``, ``method``, the labels of ``correct`` and ``specs``, so it can be
    asked before a checkpoint is loaded (``forward`` and ``data`` may then be ``None``).
    """

    forward: Callable[[torch.Tensor], torch.Tensor] | None
    data: PreparedData | None
    config: Mapping[str, Any]
    method: Any  # methods.Method: logit_scale, scale_sensitive
    correct: Mapping[str, np.ndarray | None]  # "clean" and attack labels -> per-sample flags, in attack order
    specs: Mapping[str, AttackSpec]  # attack label -> its spec

    def first(self, kind: str) -> str | None:
        """Label of the first evaluated attack of ``kind``, or ``None``."""
        return next((label for label in self.correct if label in self.specs and self.specs[label].kind == kind), None)


@dataclass(frozen=True)
class Guard:
    """A registered guard: ``check(ctx)`` computes it where ``applies(ctx)``."""

    name: str
    threshold: float
    needs_model: bool  # False: computed from stored flags alone (cheap; recomputed whenever attacks are added)
    applies: Callable[[GuardContext], bool]
    check: Callable[[GuardContext], GuardResult]
    description: str


GUARDS: Registry[Guard] = Registry("guard")


def register_guard(name: str, *, threshold: float, needs_model: bool, applies: Callable[[GuardContext], bool]):
    """Decorator: register ``check(ctx) -> GuardResult`` as guard ``name``, run where ``applies(ctx)``."""

    def decorate(check: Callable[[GuardContext], GuardResult]):
        description = (check.__doc__ or "").strip().splitlines()[0]
        GUARDS.register(declared("guard", name, GUARD_NAMES))(Guard(name, threshold, needs_model, applies, check,
                                                                    description))
        return check

    return decorate


def guard_names(config: Mapping[str, Any]) -> list[str]:
    """The guards a cell asks for (its ``guards`` key, else :data:`DEFAULT_GUARDS`)."""
    return list(config.get("guards", DEFAULT_GUARDS))


def run_guards(ctx: GuardContext, names: Iterable[str] | None = None, skip: Iterable[str] = ()) -> list[GuardResult]:
    """Every guard of ``names`` (default: the cell's) that applies, except those in ``skip``."""
    skip = set(skip)
    out = []
    for name in guard_names(ctx.config) if names is None else names:
        guard = GUARDS.get(name)
        if name not in skip and guard.applies(ctx):
            out.append(guard.check(ctx))
    return out


def zero_gradient_flags(forward, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> np.ndarray:
    """Per input: whether the gradient of its cross-entropy w.r.t. the input is exactly zero everywhere.

    Per-sample losses are summed (not averaged), so no gradient underflows by the batch size; the model must be
    in eval mode, so one input's gradient does not depend on the others in its batch.
    """
    out = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].detach().clone().requires_grad_(True)
        loss = F.cross_entropy(forward(xb), y[start : start + batch_size], reduction="sum")
        (grad,) = torch.autograd.grad(loss, xb)
        out.append((grad.flatten(1) == 0).all(1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=bool)


def _per_class(flags: np.ndarray, ctx: GuardContext) -> dict[str, float]:
    labels = ctx.data.test_y.cpu().numpy()
    hit, total = class_correct(flags, labels, len(ctx.data.class_names))
    return {str(name): _ratio(hit[c], total[c]) for c, name in enumerate(ctx.data.class_names)}


@register_guard("zero-grad-share", threshold=ZERO_GRAD_THRESHOLD, needs_model=True, applies=lambda ctx: True)
def _zero_grad_share(ctx: GuardContext) -> GuardResult:
    """Share of test inputs whose cross-entropy input gradient is exactly zero (gradient masking)."""
    zero = zero_gradient_flags(ctx.forward, ctx.data.test_x, ctx.data.test_y, ctx.config["eval_batch_size"])
    value = float(zero.mean()) if zero.size else 0.0
    clean = np.asarray(ctx.correct.get("clean", np.ones_like(zero)), dtype=bool)
    detail = {"n": int(zero.size), "zero": int(zero.sum()),
              "share_among_correct": _ratio((zero & clean).sum(), clean.sum()), "per_class": _per_class(zero, ctx)}
    return GuardResult("zero-grad-share", value, ZERO_GRAD_THRESHOLD, value > ZERO_GRAD_THRESHOLD, detail)


@register_guard("scaled-pgd", threshold=SCALED_PGD_THRESHOLD, needs_model=True,
                applies=lambda ctx: bool(ctx.method.scale_sensitive) and ctx.first("pgd") is not None)
def _scaled_pgd(ctx: GuardContext) -> GuardResult:
    """For scale-sensitive methods: PGD on the method's training logit scale, vs plain PGD."""
    label = ctx.first("pgd")
    factor = float(ctx.method.logit_scale) / float(ctx.method.inference_scale)  # the model's logits × factor
    spec = ctx.specs[label]
    plain = np.asarray(ctx.correct[label], dtype=bool)

    def scaled(x: torch.Tensor) -> torch.Tensor:
        return ctx.forward(x).to(torch.float64) * factor

    survived = plain.copy()
    idx = np.flatnonzero(plain)
    if idx.size:
        generator = torch.Generator(device=ctx.data.test_x.device).manual_seed(
            derived_seed("guard", "scaled-pgd", ctx.config["seed"], label))
        batch = ctx.config["eval_batch_size"]
        index = torch.as_tensor(idx, device=ctx.data.test_x.device)
        for start in range(0, idx.size, batch):
            pick = index[start : start + batch]
            x, y = ctx.data.test_x[pick], ctx.data.test_y[pick]
            x_adv = spec.run(scaled, x, y, bounds=ctx.data.bounds, generator=generator)
            with torch.no_grad():
                survived[idx[start : start + batch]] = (ctx.forward(x_adv).argmax(1) == y).cpu().numpy()
    n = plain.size
    value = _ratio((plain & ~survived).sum(), n)
    plain_c, both_c = _per_class(plain, ctx), _per_class(survived, ctx)
    detail = {"attack": label, "factor": factor, "plain_accuracy": _ratio(plain.sum(), n),
              "scaled_accuracy": _ratio(survived.sum(), n),
              "per_class": {k: plain_c[k] - both_c[k] for k in plain_c}}
    return GuardResult("scaled-pgd", value, SCALED_PGD_THRESHOLD, value > SCALED_PGD_THRESHOLD, detail)


@register_guard("pgd-aa-gap", threshold=PGD_AA_GAP_THRESHOLD, needs_model=False,
                applies=lambda ctx: ctx.first("pgd") is not None and ctx.first("autoattack") is not None)
def _pgd_aa_gap(ctx: GuardContext) -> GuardResult:
    """Robust accuracy under the first PGD attack minus under AutoAttack (when both were evaluated)."""
    pgd_label, aa_label = ctx.first("pgd"), ctx.first("autoattack")
    value, detail = pgd_aa_gap(ctx.correct[pgd_label], ctx.correct[aa_label], ctx.data.test_y.cpu().numpy(),
                               ctx.data.class_names)
    detail = {"pgd": pgd_label, "autoattack": aa_label, **detail}
    return GuardResult("pgd-aa-gap", value, PGD_AA_GAP_THRESHOLD, value > PGD_AA_GAP_THRESHOLD, detail)


# -- readers over a results database ------------------------------------------------------------------------


def worst_case_frame(url: str, suite: str | None = None) -> pd.DataFrame:
    """Per run × class, the worst case over all of the run's attacks, tidy like :func:`load_results`.

    One row per finished run and class with ``attack = "worst-case"`` and ``attack_order`` after the run's last
    attack: a test sample counts as correct only if it is correct clean and under every stored attack (the flags
    of ``sample_flags``). Runs without attacks, or stored before test labels were kept (``bench evaluate`` adds
    them), are left out.
    """
    results = load_results(url, suite)
    stored = load_sample_flags(url, suite)
    frames = []
    for run_id, rows in results.groupby("run_id", sort=True):
        entry = stored.get(int(run_id))
        if entry is None or entry["labels"] is None or len(entry["flags"]) < 2:
            continue
        worst = worst_case(entry["flags"])
        clean = rows[rows["attack"] == "clean"].sort_values("class_index").copy()
        correct, _ = class_correct(worst, entry["labels"], int(clean["class_index"].max()) + 1)
        clean["attack"] = WORST_CASE
        clean["attack_order"] = int(rows["attack_order"].max()) + 1
        clean["correct"] = correct[clean["class_index"].to_numpy()]
        clean["accuracy"] = [_ratio(c, n) for c, n in zip(clean["correct"], clean["n_test"])]
        frames.append(clean)
    if not frames:
        return pd.DataFrame(columns=[*RESULT_COLUMNS, "config"])
    return pd.concat(frames, ignore_index=True)


GAP_COLUMNS = ["run_id", "cell_hash", "suite", "method", "dataset", "imbalance", "seed", "model", "class_index",
               "class_name", "n_train", "n_test", "pgd", "autoattack", "pgd_accuracy", "aa_accuracy", "gap"]


def pgd_aa_gap_frame(url: str, suite: str | None = None) -> pd.DataFrame:
    """Per run × class: accuracy under the run's first ``pgd`` attack, under its first ``autoattack``, and the gap.

    Runs that lack either kind are left out. ``gap = pgd_accuracy − aa_accuracy`` (a share; ×100 for points).
    """
    results = load_results(url, suite)
    stored = load_sample_flags(url, suite)
    frames = []
    for run_id, rows in results.groupby("run_id", sort=True):
        tables = stored.get(int(run_id), {}).get("attacks", {})
        order = rows.drop_duplicates("attack").sort_values("attack_order")["attack"].tolist()
        pgd = next((a for a in order if tables.get(a, {}).get("kind") == "pgd"), None)
        aa = next((a for a in order if tables.get(a, {}).get("kind") == "autoattack"), None)
        if pgd is None or aa is None:
            continue
        p = rows[rows["attack"] == pgd].set_index("class_index")
        a = rows[rows["attack"] == aa].set_index("class_index")
        frame = p[["run_id", "cell_hash", "suite", "method", "dataset", "imbalance", "seed", "model", "class_name",
                   "n_train", "n_test"]].copy()
        frame["pgd"], frame["autoattack"] = pgd, aa
        frame["pgd_accuracy"] = p["accuracy"]
        frame["aa_accuracy"] = a["accuracy"].reindex(p.index)
        frame["gap"] = frame["pgd_accuracy"] - frame["aa_accuracy"]
        frames.append(frame.reset_index())
    if not frames:
        return pd.DataFrame(columns=GAP_COLUMNS)
    return pd.concat(frames, ignore_index=True)[GAP_COLUMNS]


def detail_of(row: Mapping[str, Any]) -> dict:
    """The parsed JSON ``detail`` of a :func:`load_guards` row."""
    return json.loads(row["detail"]) if row.get("detail") else {}
