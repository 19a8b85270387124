"""Adversarial (or natural) training of one cell, with an atomic checkpoint every epoch.

The recipe is methods.md §2: SGD with momentum and weight decay, linear warm-up then step decays at the
milestones, PGD on each batch (batch norm in the mode the config names), the method's loss on the adversarial
examples with its class weights for the epoch. The method decides, through its capabilities and never its name,
how an epoch draws examples (its sampler), what the attack maximises and from where it starts, whether the loss
also sees the clean logits, and which bias the trained model adds to its logits at inference. Everything random
draws from generators seeded from the cell and saved in the checkpoint, so a cell killed at any point resumes to
exactly the result of an uninterrupted run (on the CPU). With a validation set (``val_split``), the model is
validated every ``val_every`` epochs and the selected epoch's weights are the ones returned (:mod:`bench.selection`);
the test set is never read here. Losses and accuracies accumulate on the device; the host syncs once per epoch.
The method's batch-loop hooks (``methods.base``) are called for every method alike: its stage schedule
(``attack_on``), the attack's budget (``attack_budget``, per-sample ε for class-wise budgets), a context around the
optimisation step (``around_step``, adversarial weight perturbation) and its run-level state (``init_state``,
``observe``, ``end_epoch``; saved in the checkpoint).
Precision and device policy (bf16 autocast, channels-last, compiled backbone on CUDA; plain fp32 on the CPU) come
from :mod:`bench.accel`.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench import accel
from bench.attacks import crafting_mode, pgd
from bench.augment import augment  # also reached as bench.train.augment
from bench.data import PreparedData, derived_seed
from bench.errors import Diverged
from bench.io import write_atomic
from bench.models import Classifier, build_model
from bench.selection import Selector
from methods import LossInputs, Method
from methods.base import StepContext
from methods.samplers import SAMPLERS

CHECKPOINT = "checkpoint.pt"
FINAL = "final.pt"


def lr_at(epoch: int, config: dict[str, Any]) -> float:
    """Learning rate of an epoch: linear warm-up ``lr·(e+1)/W`` for ``e < W``, then ``× lr_decay`` per milestone."""
    base = config["lr"]
    warmup = config["warmup_epochs"]
    if epoch < warmup:
        return base * (epoch + 1) / warmup
    return base * config["lr_decay"] ** sum(epoch >= m for m in config["milestones"])


def _save_atomic(obj: dict, path: Path) -> None:
    write_atomic(path, lambda handle: torch.save(obj, handle))  # streamed into the temporary file, fsynced


@dataclass
class TrainOutcome:
    model: Classifier
    curves: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    images: int = 0
    resumed_from: int = 0  # epochs that were loaded from a checkpoint
    selection: dict | None = None  # the selected epoch and its validation scores (bench.selection)


def make_generators(seed: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """A CPU generator for batch order and a device generator for augmentation and attack starts."""
    order = torch.Generator().manual_seed(derived_seed("order", seed))
    noise = torch.Generator(device=device).manual_seed(derived_seed("noise", seed))
    return order, noise


def build_cell_model(config: dict[str, Any], method: Method, data: PreparedData) -> Classifier:
    """The cell's model, initialised from the cell's seed without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed("init", config["seed"]))
        model = build_model(config["model"], len(data.class_names), tuple(data.train_x.shape[1:]), method.classifier)
    return model.to(data.train_x.device)


def set_aside(path: Path) -> Path:
    """Rename a broken file to ``<name>.corrupt-<UTC time>`` beside it (kept for inspection, never deleted)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, target)
    return target


def _why_unreadable(exc: BaseException) -> str:
    """A short reason a checkpoint could not be loaded (torch's own messages run to paragraphs)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, EOFError) or not text:
        return f"{type(exc).__name__}: the file is empty or cut short"
    if "WeightsUnpickler error:" in text:  # not a torch checkpoint, or one holding more than weights
        detail = text.split("WeightsUnpickler error:", 1)[1].split(" Check the documentation")[0].strip()
        text = f"not a checkpoint: {detail}"
    elif "PytorchStreamReader" in text:  # a truncated or damaged zip archive
        text = text.split(". ")[0]
    return f"{type(exc).__name__}: {text.strip()[:160]}"


def _start(config: dict[str, Any], method: Method, data: PreparedData):
    """A fresh model (prepared by its device policy), optimiser and generators for a cell's first epoch."""
    device = data.train_x.device
    model = build_cell_model(config, method, data)
    policy = accel.Policy.resolve(config, device, model)  # bf16, channels-last, compile on CUDA; fp32 eager on CPU
    policy.prepare(model)
    # foreach: one kernel per operation over all parameters instead of one per parameter (bit-identical on the CPU)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config["lr"], momentum=config["momentum"], weight_decay=config["weight_decay"],
        foreach=True,
    )
    order_gen, noise_gen = make_generators(config["seed"], device)
    return model, policy, optimizer, order_gen, noise_gen


def _resume(checkpoint: Path, config: dict[str, Any], model: Classifier, optimizer: torch.optim.Optimizer,
            order_gen: torch.Generator, noise_gen: torch.Generator, outcome: TrainOutcome,
            method_state: dict, selector: Selector | None = None) -> int:
    """Load a checkpoint into the fresh objects; returns the epoch to continue from. Raises on a broken file."""
    loaded = torch.load(checkpoint, map_location=noise_gen.device, weights_only=True)
    if not isinstance(loaded, dict):
        raise ValueError(f"holds a {type(loaded).__name__}, not a checkpoint")
    epoch = int(loaded["epoch"])
    if not 0 <= epoch < config["epochs"]:
        raise ValueError(f"epoch {epoch} is outside this cell's {config['epochs']} epochs")
    model.load_state_dict(loaded["model"])
    optimizer.load_state_dict(loaded["optimizer"])
    order_gen.set_state(loaded["order_rng"])
    noise_gen.set_state(loaded["noise_rng"].to("cpu"))
    outcome.curves = list(loaded["curves"])
    outcome.train_seconds = float(loaded["train_seconds"])
    outcome.images = int(loaded["images"])
    outcome.resumed_from = epoch + 1
    saved = loaded.get("method_state", {})
    if set(saved) != set(method_state):
        raise ValueError(f"holds method state {sorted(saved)}, this method keeps {sorted(method_state)}")
    for key, value in saved.items():
        method_state[key].copy_(value)
    if selector is not None:
        selector.resume(loaded)
    return epoch + 1


def train(
    config: dict[str, Any],
    method: Method,
    data: PreparedData,
    run_dir: Path,
    on_epoch: Callable[[int, int, dict], None] | None = None,
) -> TrainOutcome:
    """Train one cell, resuming from ``run_dir/checkpoint.pt`` if present; raises :class:`Diverged` on NaN.

    A checkpoint that cannot be resumed (truncated, not a checkpoint, another model's) is moved aside — kept as
    ``checkpoint.pt.corrupt-<time>``, never deleted — and the cell starts from scratch, with one line on stderr.
    """
    device = data.train_x.device
    model, policy, optimizer, order_gen, noise_gen = _start(config, method, data)
    outcome = TrainOutcome(model)
    counts = torch.as_tensor(data.train_counts, dtype=torch.float32, device=device)
    state = method.init_state(counts)  # the method's run-level tensors (REAT's predicted-class counts), or {}
    selector = Selector(config, method, data)  # validation and model selection; inactive without val_split
    start = 0
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = run_dir / CHECKPOINT
    if checkpoint.exists():
        try:
            start = _resume(checkpoint, config, model, optimizer, order_gen, noise_gen, outcome, state, selector)
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with the file, the cell trains again
            if isinstance(exc, PermissionError) or "out of memory" in str(exc):
                raise  # not the file's content: moving it aside would not help
            aside = set_aside(checkpoint)
            reason = _why_unreadable(exc)
            print(f"{checkpoint} cannot be resumed ({reason}); kept as {aside.name}, the cell restarts from scratch",
                  file=sys.stderr, flush=True)
            model, policy, optimizer, order_gen, noise_gen = _start(config, method, data)  # nothing half-loaded
            outcome, start, state = TrainOutcome(model), 0, method.init_state(counts)
            selector = Selector(config, method, data)

    sampler = SAMPLERS.get(method.sampler)
    labels = data.train_y.cpu()
    attack = config["train_attack"]
    n = data.train_x.shape[0]
    batch_size = config["batch_size"]
    for epoch in range(start, config["epochs"]):
        t0 = time.perf_counter()
        lr = lr_at(epoch, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        weight = method.class_weights(epoch, data.train_counts)
        weight = weight.to(device) if weight is not None else None
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        perm = sampler(labels, order_gen).to(device)
        adversarial = attack != "none" and method.attack_on(epoch)  # the method's stage schedule
        for start_idx in range(0, n, batch_size):
            idx = perm[start_idx : start_idx + batch_size]
            x = augment(data.train_x[idx], config["augment"], noise_gen, bounds=data.bounds)
            y = data.train_y[idx]
            x_adv = x
            if adversarial:
                with crafting_mode(model, attack["bn_mode"]), policy.attack(model):  # autocast; no parameter grads
                    clean_for_attack = None
                    if method.attack_uses_clean:
                        with torch.no_grad():
                            clean_for_attack = model(x)
                    budget = method.attack_budget(epoch, config["epochs"], y, attack["eps"], attack["alpha"], counts)
                    x_adv = pgd(model, x, y, eps=budget.eps, alpha=budget.alpha, steps=attack["steps"],
                                random_start=attack["random_start"], bounds=data.bounds, generator=noise_gen,
                                loss=method.attack_loss(clean_for_attack, state), start_std=method.attack_start_std,
                                start_eps=budget.start_eps, start=attack.get("start", "symmetric"),
                                clip_start=attack.get("clip_start", True))
            model.train()

            def batch_loss(x=x, x_adv=x_adv, y=y) -> tuple[torch.Tensor, LossInputs]:
                with policy.autocast():  # forward and loss; backward runs outside, as autocast wants
                    clean_logits = model(x) if method.needs_clean_logits else None
                    logits, h = model.forward_features(x_adv)
                    projection = model.project(h) if method.uses_projection else None
                    inputs = LossInputs(logits=logits, targets=y, class_counts=counts, epoch=epoch, weight=weight,
                                        projection=projection, clean_logits=clean_logits, features=h)
                    return method.loss(inputs), inputs

            with method.around_step(StepContext(model, epoch, lambda: batch_loss()[0])):  # AWP: perturb … restore
                loss, inputs = batch_loss()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            method.observe(state, inputs)
            loss_sum += loss.detach() * y.shape[0]
            correct += (inputs.logits.detach().argmax(1) == y).sum()
        method.end_epoch(state, epoch)
        mean_loss = float(loss_sum) / n
        if not math.isfinite(mean_loss):
            raise Diverged(f"training loss is {mean_loss} at epoch {epoch}")
        seconds = time.perf_counter() - t0
        outcome.train_seconds += seconds
        outcome.images += n
        row = {"epoch": epoch, "lr": lr, "loss": mean_loss, "train_accuracy": int(correct) / n, "seconds": seconds}
        if selector.due(epoch):  # val_clean, val_robust: eval mode, own generator, training's streams untouched
            row.update(selector.validate(model, epoch))
        outcome.curves.append(row)
        _save_atomic(
            {
                "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "order_rng": order_gen.get_state(), "noise_rng": noise_gen.get_state(),
                "curves": outcome.curves, "train_seconds": outcome.train_seconds, "images": outcome.images,
                "method_state": state, **selector.checkpoint(),
            },
            checkpoint,
        )
        if on_epoch is not None:
            on_epoch(epoch + 1, config["epochs"], row)
    policy.release(model)  # evaluation runs eager
    outcome.selection = selector.finish(model)  # the selected epoch's weights (the last epoch's unless selecting)
    model.set_inference(method.inference_scale, method.inference_bias(data.train_counts))
    return outcome


def save_final(model: Classifier, run_dir: Path) -> None:
    """Keep the final weights (for re-evaluation with new attacks) and drop the resumable checkpoint."""
    _save_atomic({"model": model.state_dict()}, run_dir / FINAL)
    (run_dir / CHECKPOINT).unlink(missing_ok=True)
