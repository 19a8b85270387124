"""Fused training: the cells of a group trained as one stacked model, each exactly as it would train fused alone.

Every member keeps what :func:`bench.train.train` would keep for its cell — its ``Classifier`` (built from its
seed), its own SGD optimiser, batch-order and noise generators, method state and checkpoint — and goes through the
same recipe: its sampler draws its epoch, it augments its own batch with its own generator, its method sets the
attack's objective, budget and start, its loss, class weights, stage schedule, step hook (``around_step``: AWP
probes the member's own loss alone and perturbs its own weights around the stacked step), validation and model
selection (its own model, validated unfused) and inference bias. What is shared is the arithmetic: each forward
and backward runs once over the stacked members (:mod:`bench.fusion.stacked`), and the PGD update is one set of
single-rounding tensor operations over all members (bit for bit each member's own formula).

A member's numbers do not depend on its company (CPU): every stacked operation computes a member's slice the same
way whatever the member count, and a pass that concerns only some members (the clean forward of TRADES-like
methods, the attack of members whose stage schedule trains naturally this epoch) runs over those members only, so
no member's batch-norm statistics see a forward its unfused run would not make. A member whose loss is not finite
at the end of an epoch ends there (``Diverged``, its own outcome), and so does one whose own code raises (its
exception, :func:`_each`); the others go on.

Checkpoints are ``bench.train``'s, one per member (``runs/<hash>/checkpoint.pt``), so a fused cell resumes unfused
and the other way round; members resumed at different epochs train together from the epoch each is at.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bench import train as unfused
from bench.attacks import _per_sample, pgd_step, random_start_point
from bench.augment import augment
from bench.data import PreparedData
from bench.errors import Diverged
from bench.fusion.stacked import StackedClassifier
from bench.selection import Selector
from bench.train import (
    CHECKPOINT,
    TrainOutcome,
    build_cell_model,
    lr_at,
    make_generators,
)
from methods import LossInputs, Method
from methods.base import StepContext
from methods.samplers import SAMPLERS

OnEpoch = Callable[[int, int, dict], None]


@dataclass
class Member:
    """One cell of a fused group and everything its unfused run would hold."""

    config: dict[str, Any]
    method: Method
    run_dir: Path
    on_epoch: OnEpoch | None = None
    model: Any = None
    optimizer: Any = None
    order_gen: Any = None
    noise_gen: Any = None
    outcome: TrainOutcome | None = None
    state: dict = field(default_factory=dict)
    selector: Any = None  # validation and model selection (bench.selection), inactive without val_split
    start: int = 0
    error: BaseException | None = None  # set when the member ended early (Diverged)


def _fresh(member: Member, data: PreparedData, counts: torch.Tensor) -> None:
    """A member's first-epoch objects, as :func:`bench.train.train` makes them (fp32 eager: the fused path's policy)."""
    config = member.config
    member.model = build_cell_model(config, member.method, data)
    member.optimizer = torch.optim.SGD(member.model.parameters(), lr=config["lr"], momentum=config["momentum"],
                                       weight_decay=config["weight_decay"], foreach=True)
    member.order_gen, member.noise_gen = make_generators(config["seed"], data.train_x.device)
    member.outcome = TrainOutcome(member.model)
    member.state = member.method.init_state(counts)
    member.selector = Selector(config, member.method, data)
    member.start = 0


def _load(member: Member, data: PreparedData, counts: torch.Tensor) -> None:
    """Fresh objects, then the member's checkpoint if it has one (set aside and restarted when unreadable)."""
    _fresh(member, data, counts)
    member.run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = member.run_dir / CHECKPOINT
    if not checkpoint.exists():
        return
    try:
        member.start = unfused._resume(checkpoint, member.config, member.model, member.optimizer, member.order_gen,
                                       member.noise_gen, member.outcome, member.state, member.selector)
    except Exception as exc:
        if isinstance(exc, PermissionError) or "out of memory" in str(exc):
            raise
        aside = unfused.set_aside(checkpoint)
        print(f"{checkpoint} cannot be resumed ({unfused._why_unreadable(exc)}); kept as {aside.name}, the cell "
              "restarts from scratch", file=sys.stderr, flush=True)
        _fresh(member, data, counts)


class _Stacks:
    """Stacked models over subsets of the members, keeping each member's batch-norm statistics in one place: when
    another subset's stack is used, the previous one writes its statistics back to the members first."""

    def __init__(self, members: Sequence[Member]) -> None:
        self.members = members
        self.cache: dict[tuple[int, ...], StackedClassifier] = {}
        self.current: StackedClassifier | None = None

    def get(self, indices: Sequence[int]) -> StackedClassifier:
        key = tuple(indices)
        stack = self.cache.get(key)
        if stack is None:
            stack = self.cache[key] = StackedClassifier([self.members[i].model for i in key])
        if stack is not self.current:
            if self.current is not None:
                self.current.sync_buffers()
            stack.reload_buffers()
            self.current = stack
        return stack

    def flush(self) -> None:
        """Write the statistics back to the members and hold none, so that code working on a member's own modules
        (a step hook that saves and restores its buffers) sees them current; the next :meth:`get` re-reads them."""
        if self.current is not None:
            self.current.sync_buffers()
        self.current = None

    def sync(self) -> None:
        self.flush()
        self.cache.clear()


def _each(members: Sequence[Member], indices: Sequence[int], call: Callable[[int], Any]) -> dict[int, Any]:
    """``{i: call(i)}`` over the members at ``indices``. A member whose call raises ends there with that exception
    (its ``failed`` outcome, as it would end alone) and is left out; the others go on, their numbers unchanged
    since none depends on its company."""
    out = {}
    for i in indices:
        try:
            out[i] = call(i)
        except Exception as exc:  # noqa: BLE001 - the member's own failure, kept as its outcome
            members[i].error = exc
    return out


def _fused_pgd(stack: StackedClassifier, x: torch.Tensor, y: torch.Tensor, members: Sequence[Member],
               budgets: Sequence[Any], losses: Sequence[Any], attack: dict, bounds, training: bool) -> torch.Tensor:
    """:func:`bench.attacks.pgd` for each member of ``stack`` at once; ``x`` ``[A, N, ...]``, ``y`` ``[A, N]``.

    Each member's start uses its own generator and formula; each step's update ``x0 + clip(x + α·sign(g) − x0, −ε,
    ε)`` is computed over all members with per-member ``α``/``ε`` tensors: every operation rounds once (``α·sign(g)``
    is exact), so a member's result is bit for bit its own formula's. A member whose start or objective raises ends
    (:func:`_each`); its slice is left as it is.
    """
    x0 = x.detach()
    starts, alphas, epss = [], [], []
    for i, (member, budget) in enumerate(zip(members, budgets)):
        xi = x0[i]
        eps, alpha, start_eps = budget.eps, budget.alpha, budget.start_eps
        per_sample = any(isinstance(v, torch.Tensor) for v in (eps, alpha, start_eps))
        if per_sample:
            eps, alpha, start_eps = (None if v is None else _per_sample(v, xi) for v in (eps, alpha, start_eps))
        radius = eps if start_eps is None else start_eps
        starts.append(random_start_point(xi, radius, member.noise_gen, std=member.method.attack_start_std,
                                         start=attack.get("start", "symmetric"))
                      if attack["random_start"] else xi.clone())
        alphas.append(alpha if per_sample else _per_sample(alpha, xi))  # [N, 1, …] either way
        epss.append(eps if per_sample else _per_sample(eps, xi))
    x_adv = torch.stack(starts)
    if bounds is not None and attack.get("clip_start", True):
        x_adv = x_adv.clamp(*bounds)
    alpha_t, eps_t = torch.stack(alphas), torch.stack(epss)
    w = stack.weights(grad=False)
    for _ in range(attack["steps"]):
        x_adv.requires_grad_(True)
        logits, _ = stack.forward_features(w, x_adv, training)
        live = [k for k, m in enumerate(members) if m.error is None]
        objectives = _each(members, live, lambda k: F.cross_entropy(logits[k], y[k]) if losses[k] is None
                           else losses[k](logits[k], y[k]).sum())
        if not objectives:
            break
        (grad,) = torch.autograd.grad(torch.stack(list(objectives.values())).sum(), x_adv)
        x_adv = pgd_step(x_adv, grad, x0, alpha_t, eps_t, bounds)
    return x_adv.detach()


def _batch(members: Sequence[Member], active: Sequence[int], stacks: _Stacks, data: PreparedData,
           idx: dict[int, torch.Tensor], epoch: int, weights: dict, counts: torch.Tensor) -> dict[int, tuple]:
    """One optimisation step of every member in ``active`` on its batch ``idx[i]``; ``{i: (loss, correct)}`` of
    the members still alive after it (a member whose own code raised has ended, :func:`_each`)."""
    first = members[active[0]].config
    attack, epochs = first["train_attack"], first["epochs"]

    def live(indices: Sequence[int]) -> list[int]:
        return [i for i in indices if members[i].error is None]

    def batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (augment(data.train_x[idx[i]], members[i].config["augment"], members[i].noise_gen, bounds=data.bounds),
                data.train_y[idx[i]])

    xy = _each(members, active, batch)
    xs, ys = {i: v[0] for i, v in xy.items()}, {i: v[1] for i, v in xy.items()}
    x_adv = dict(xs)
    attacking = [i for i in live(active) if attack != "none" and members[i].method.attack_on(epoch)]
    if attacking:
        bn_train = attack["bn_mode"] != "eval"  # train and frozen use batch statistics
        frozen = attack["bn_mode"] == "frozen"  # … and frozen leaves the running ones as they are
        clean_att = {}
        clean_for_attack = [i for i in attacking if members[i].method.attack_uses_clean]
        if clean_for_attack:
            stack = stacks.get(clean_for_attack)
            with torch.no_grad(), stack.statistics_frozen(frozen):
                logits, _ = stack.forward_features(stack.weights(grad=False),
                                                   torch.stack([xs[i] for i in clean_for_attack]), bn_train)
            clean_att = {i: logits[k] for k, i in enumerate(clean_for_attack)}
        recipe = _each(members, attacking, lambda i: (
            members[i].method.attack_budget(epoch, epochs, ys[i], attack["eps"], attack["alpha"], counts),
            members[i].method.attack_loss(clean_att.get(i), members[i].state)))
        attacking = live(attacking)
        if attacking:
            stack = stacks.get(attacking)
            with stack.statistics_frozen(frozen):
                adv = _fused_pgd(stack, torch.stack([xs[i] for i in attacking]),
                                 torch.stack([ys[i] for i in attacking]), [members[i] for i in attacking],
                                 [recipe[i][0] for i in attacking], [recipe[i][1] for i in attacking], attack,
                                 data.bounds, bn_train)
            for k, i in enumerate(attacking):
                x_adv[i] = adv[k]
    stepping = live(active)

    def probe(i: int) -> torch.Tensor:
        """Member ``i``'s training loss of the batch on its current weights, computed alone (a step hook's proxy,
        AWP's); the forward's batch-norm updates stay in a stack that is re-read afterwards, so they are dropped."""
        try:
            inputs = _loss_inputs(members, [i], stacks, xs, x_adv, ys, epoch, weights, counts)[i]
            return members[i].method.loss(inputs)
        finally:
            stacks.get([i]).reload_buffers()

    stacks.flush()  # a hook saves and restores its member's buffers: they must be current
    with ExitStack() as hooks:  # each member's around_step (AWP: perturb … restore) around the one stacked step
        _each(members, stepping, lambda i: hooks.enter_context(members[i].method.around_step(
            StepContext(members[i].model, epoch, lambda i=i: probe(i)))))
        losses = _stacked_step(members, live(stepping), stacks, xs, x_adv, ys, epoch, weights, counts)
    return _each(members, list(losses), lambda i: _observe(members[i], ys[i], *losses[i]))


def _loss_inputs(members: Sequence[Member], indices: Sequence[int], stacks: _Stacks, xs: dict, x_adv: dict,
                 ys: dict, epoch: int, weights: dict, counts: torch.Tensor) -> dict[int, LossInputs]:
    """The training forward of the members at ``indices`` (the clean one for those whose loss needs it, then the
    adversarial one, the projection head where used): each member's :class:`LossInputs`, with autograd."""
    clean_logits = {}
    clean_for_loss = [i for i in indices if members[i].method.needs_clean_logits]
    if clean_for_loss:
        stack = stacks.get(clean_for_loss)
        logits, _ = stack.forward_features(stack.weights(grad=True), torch.stack([xs[i] for i in clean_for_loss]),
                                           True)
        clean_logits = {i: logits[k] for k, i in enumerate(clean_for_loss)}
    stack = stacks.get(indices)
    logits, h = stack.forward_features(stack.weights(grad=True), torch.stack([x_adv[i] for i in indices]), True)
    projecting = [k for k, i in enumerate(indices) if members[i].method.uses_projection]
    projection = dict(zip(projecting, stack.project(h, projecting))) if projecting else {}
    return {i: LossInputs(logits=logits[k], targets=ys[i], class_counts=counts, epoch=epoch, weight=weights[i],
                          projection=projection.get(k), clean_logits=clean_logits.get(i), features=h[k])
            for k, i in enumerate(indices)}


def _stacked_step(members: Sequence[Member], stepping: Sequence[int], stacks: _Stacks, xs: dict, x_adv: dict,
                  ys: dict, epoch: int, weights: dict, counts: torch.Tensor) -> dict[int, tuple]:
    """The training forward, one backward and each member's optimiser step; ``{i: (inputs, loss)}`` of the members
    that stepped."""
    if not stepping:
        return {}
    inputs = _loss_inputs(members, stepping, stacks, xs, x_adv, ys, epoch, weights, counts)
    losses = _each(members, stepping, lambda i: (inputs[i], members[i].method.loss(inputs[i])))
    if not losses:
        return {}
    for i in losses:
        members[i].optimizer.zero_grad(set_to_none=True)
    torch.stack([total for _, total in losses.values()]).sum().backward()
    stepped = _each(members, list(losses), lambda i: members[i].optimizer.step())
    return {i: losses[i] for i in stepped}


def _observe(member: Member, y: torch.Tensor, inputs: LossInputs, total: torch.Tensor) -> tuple:
    """After the step (and its hook): the method's run state sees the batch; ``(loss · n, correct)``."""
    member.method.observe(member.state, inputs)
    return total.detach() * y.shape[0], (inputs.logits.detach().argmax(1) == y).sum()


def train_fused(members: Sequence[Member], data: PreparedData) -> list[TrainOutcome | BaseException]:
    """Train every member; returns, per member, its :class:`TrainOutcome` or the exception that ended it."""
    device = data.train_x.device
    if device.type == "cuda":  # cuDNN autotuning, as the unfused policy (bench.accel): the shapes repeat every batch
        torch.backends.cudnn.benchmark = True
    counts = torch.as_tensor(data.train_counts, dtype=torch.float32, device=device)
    for member in members:
        _load(member, data, counts)
    labels = data.train_y.cpu()
    n = data.train_x.shape[0]
    batch_size, epochs = members[0].config["batch_size"], members[0].config["epochs"]
    samplers = [SAMPLERS.get(m.method.sampler) for m in members]
    stacks = _Stacks(members)
    for epoch in range(min(m.start for m in members), epochs):
        active = [i for i, m in enumerate(members) if m.error is None and m.start <= epoch]
        if not active:
            continue
        t0 = time.perf_counter()

        def epoch_start(i: int) -> tuple[torch.Tensor | None, torch.Tensor]:
            m = members[i]
            for group in m.optimizer.param_groups:
                group["lr"] = lr_at(epoch, m.config)
            weight = m.method.class_weights(epoch, data.train_counts)
            return (weight.to(device) if weight is not None else None), samplers[i](labels, m.order_gen).to(device)

        drawn = _each(members, active, epoch_start)
        active = list(drawn)
        weights, perms = {i: v[0] for i, v in drawn.items()}, {i: v[1] for i, v in drawn.items()}
        if len({perms[i].shape[0] for i in active}) > 1:
            raise ValueError("fused members' samplers drew epochs of different lengths")
        length = perms[active[0]].shape[0] if active else 0
        loss_sum = {i: torch.zeros((), device=device) for i in active}
        correct = {i: torch.zeros((), device=device, dtype=torch.long) for i in active}
        for start_idx in range(0, length, batch_size):
            active = [i for i in active if members[i].error is None]
            if not active:
                break
            stepped = _batch(members, active, stacks, data,
                             {i: perms[i][start_idx:start_idx + batch_size] for i in active}, epoch, weights, counts)
            for i, (batch_loss, batch_correct) in stepped.items():
                loss_sum[i] += batch_loss
                correct[i] += batch_correct
        stacks.sync()
        active = [i for i in active if members[i].error is None]
        seconds = (time.perf_counter() - t0) / max(len(active), 1)  # the group's time, split between its members

        def epoch_end(i: int) -> None:
            m = members[i]
            m.method.end_epoch(m.state, epoch)
            mean_loss = float(loss_sum[i]) / n
            if not math.isfinite(mean_loss):
                m.error = Diverged(f"training loss is {mean_loss} at epoch {epoch}")
                return
            _end_epoch(m, epoch, lr_at(epoch, m.config), mean_loss, int(correct[i]) / n, seconds, n)

        _each(members, active, epoch_end)
    out: list[TrainOutcome | BaseException] = []
    for m in members:
        if m.error is not None:
            out.append(m.error)
            continue
        m.outcome.selection = m.selector.finish(m.model)  # the selected epoch's weights (else the last epoch's)
        m.model.set_inference(m.method.inference_scale, m.method.inference_bias(data.train_counts))
        out.append(m.outcome)
    return out


def _end_epoch(m: Member, epoch: int, lr: float, loss: float, accuracy: float, seconds: float, n: int) -> None:
    """The member's curve row and checkpoint, exactly as :func:`bench.train.train` writes them."""
    m.outcome.train_seconds += seconds
    m.outcome.images += n
    row = {"epoch": epoch, "lr": lr, "loss": loss, "train_accuracy": accuracy, "seconds": seconds}
    if m.selector.due(epoch):  # the member's own model, unfused: the same scores whatever its company
        row.update(m.selector.validate(m.model, epoch))
    m.outcome.curves.append(row)
    unfused._save_atomic(
        {
            "epoch": epoch, "model": m.model.state_dict(), "optimizer": m.optimizer.state_dict(),
            "order_rng": m.order_gen.get_state(), "noise_rng": m.noise_gen.get_state(),
            "curves": m.outcome.curves, "train_seconds": m.outcome.train_seconds, "images": m.outcome.images,
            "method_state": m.state, **m.selector.checkpoint(),
        },
        m.run_dir / CHECKPOINT,
    )
    if m.on_epoch is not None:
        m.on_epoch(epoch + 1, m.config["epochs"], row)
