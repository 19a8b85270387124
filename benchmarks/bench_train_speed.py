"""PGD-10 adversarial training throughput: the runner's step vs a reference-style loop, side by side, interleaved.

(a) the runner: ``bench.train.train`` itself, on data held as one tensor on the device, batched augmentation, the
    attack taking input gradients only, losses accumulated on the device, and the cell's speed policy
    (``bench.accel``: on CUDA bf16 autocast, channels-last, compiled backbone, cuDNN autotuning; fp32 eager on the
    CPU). Its time per epoch is wall time including the epoch's checkpoint.
(b) a loop written as the authors' script does it: a DataLoader over PIL images with per-sample torchvision
    transforms (random crop + flip where the case augments), fp32, batch 128, a PGD whose every step calls
    ``loss.backward()`` (so it also computes the parameter gradients it does not need), and ``loss.item()`` every
    batch. On the CPU the loader runs in the main process (workers would take the compute cores); on CUDA it has
    up to 4 worker processes and pinned memory, as a GPU script would.

Both train the same model on the same data shape, in one process with the same torch threads. The other machine
load moves both alike only if they run at the same time, so they alternate epoch by epoch: each round is one
runner epoch and one reference epoch, after one warm-up epoch of each (on CUDA the runner's warm-up includes
compiling); the figures are medians over the rounds, the ratio is the median of the per-round ratios.

FLOPs: one runner batch (10 attack steps with input gradients only, then the training forward/backward) is counted
with ``torch.utils.flop_counter.FlopCounterMode``; FLOP/s = that × batches/s. On CUDA it is set against the
card's dense bf16 peak (benchmarks/machine.py).

    python benchmarks/bench_train_speed.py [--cases digits,resnet18,resnet18-cuda] [--batches N] [--rounds 3]
                                           [--threads N] [--precision auto] [--compile auto]
                                           [--channels-last auto] [--json out.json]

Prints the machine, versions, images/s of each side, the ratio and the FLOP rate; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import machine
import methods
from bench.attacks import pgd
from bench.data import PreparedData
from bench.models import build_model
from bench.suite import BUILTIN_DEFAULTS
from bench.train import train

BATCH = 128
STEPS = 10


@dataclass(frozen=True)
class Case:
    model: str
    shape: tuple[int, ...]
    augment: str
    eps: float
    alpha: float
    device: str
    batches: int  # default batches of 128 per timed epoch: enough for a stable time, few enough for 2 CPU cores


CASES = {
    "digits": Case("cnn-small", (1, 8, 8), "none", 0.1, 0.025, "cpu", 4),  # the quick suite's model and data shape
    "resnet18": Case("resnet18", (3, 32, 32), "crop-flip", 8 / 255, 2 / 255, "cpu", 1),
    "resnet18-cuda": Case("resnet18", (3, 32, 32), "crop-flip", 8 / 255, 2 / 255, "cuda", 50),
}


def synthetic(shape: tuple[int, ...], classes: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8), rng.integers(0, classes, size=n)


class ReferenceLoop:
    """The reference-style loop of the module docstring; :meth:`epoch` returns its wall time in seconds."""

    def __init__(self, case: Case, x: np.ndarray, y: np.ndarray) -> None:
        from PIL import Image
        from torch.utils.data import DataLoader, Dataset
        from torchvision import transforms

        steps = [transforms.RandomCrop(case.shape[1], padding=4), transforms.RandomHorizontalFlip()]
        transform = transforms.Compose([*(steps if case.augment != "none" else []), transforms.ToTensor()])
        gray = case.shape[0] == 1

        class Images(Dataset):
            def __len__(self) -> int:
                return len(y)

            def __getitem__(self, i: int):
                image = x[i].transpose(1, 2, 0)
                return transform(Image.fromarray(image.squeeze(-1) if gray else image)), int(y[i])

        cuda = case.device == "cuda"
        workers = min(4, len(os.sched_getaffinity(0))) if cuda else 0
        self.loader = DataLoader(Images(), batch_size=BATCH, shuffle=True, num_workers=workers, pin_memory=cuda,
                                 persistent_workers=workers > 0)
        self.device = torch.device(case.device)
        self.case = case
        torch.manual_seed(0)
        self.model = build_model(case.model, 10, case.shape).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def epoch(self) -> float:
        eps, alpha, model = self.case.eps, self.case.alpha, self.model
        start = time.perf_counter()
        model.train()
        for xb, yb in self.loader:
            xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
            x_adv = (xb + torch.empty_like(xb).uniform_(-eps, eps)).clamp(0, 1)
            for _ in range(STEPS):
                x_adv.requires_grad_(True)
                loss = F.cross_entropy(model(x_adv), yb)
                model.zero_grad()
                loss.backward()  # as the reference: parameter gradients too
                x_adv = torch.min(torch.max(x_adv.detach() + alpha * x_adv.grad.sign(), xb - eps), xb + eps).clamp(0, 1)
            loss = F.cross_entropy(model(x_adv), yb)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            loss.item()  # the reference logs the loss every batch: a host sync
        return time.perf_counter() - start


def step_flops(case: Case) -> int:
    """FLOPs of one runner batch: PGD-10 with input gradients only, then the training forward and backward."""
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(case.device)
    model = build_model(case.model, 10, case.shape).to(device).train()
    x = torch.rand(BATCH, *case.shape, device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)
    with FlopCounterMode(display=False) as counter:
        # model(z + 0): the counter's module tracker hooks module inputs, and autograd.grad refuses a hooked leaf
        x_adv = pgd(lambda z: model(z + 0), x, y, eps=case.eps, alpha=case.alpha, steps=STEPS)
        F.cross_entropy(model(x_adv), y).backward()
    return int(counter.get_total_flops())


def measure(name: str, batches: int, rounds: int, overrides: dict) -> dict:
    """Interleaved runner and reference epochs (module docstring); medians over ``rounds``."""
    case = CASES[name]
    device = torch.device(case.device)
    n = batches * BATCH
    x, y = synthetic(case.shape, 10, n)
    data = PreparedData(
        train_x=(torch.as_tensor(x, dtype=torch.float32) / 255).to(device), train_y=torch.as_tensor(y).to(device),
        test_x=torch.zeros(1, *case.shape, device=device), test_y=torch.zeros(1, dtype=torch.int64, device=device),
        class_names=[str(c) for c in range(10)], train_counts=np.bincount(y, minlength=10).tolist(),
        subset_hash="bench", bounds=(0.0, 1.0),
    )
    config = {**BUILTIN_DEFAULTS, "model": case.model, "epochs": rounds + 1, "batch_size": BATCH, "milestones": [],
              "warmup_epochs": 0, "augment": case.augment, "seed": 0, **overrides,
              "train_attack": {"kind": "pgd", "eps": case.eps, "alpha": case.alpha, "steps": STEPS,
                               "random_start": True, "bn_mode": "train"}}
    reference = ReferenceLoop(case, x, y)
    runner_s: list[float] = []
    reference_s: list[float] = []
    warmup_s: list[float] = []  # the first epoch of each side: on CUDA the runner's includes compiling
    resume = time.perf_counter()

    def on_epoch(done: int, total: int, row: dict) -> None:
        nonlocal resume
        runner_wall = time.perf_counter() - resume
        reference_wall = reference.epoch()  # after the runner's warm-up epoch: the reference's warm-up
        if done > 1:
            runner_s.append(runner_wall)
            reference_s.append(reference_wall)
        else:
            warmup_s.extend((runner_wall, reference_wall))
        resume = time.perf_counter()

    method = methods.get("ce").for_run(epochs=rounds + 1, milestones=[])
    with tempfile.TemporaryDirectory() as tmp:
        train(config, method, data, Path(tmp), on_epoch)
    from bench.accel import Policy

    policy = Policy.resolve(config, device, build_model(case.model, 10, case.shape))
    flops = step_flops(case)
    runner_ips = statistics.median(n / s for s in runner_s)
    reference_ips = statistics.median(n / s for s in reference_s)
    out = {
        "policy": policy.describe(), "images_per_epoch": n, "rounds": rounds,
        "runner_images_per_s": round(runner_ips, 1), "reference_images_per_s": round(reference_ips, 1),
        "ratio": round(statistics.median(r / s for s, r in zip(runner_s, reference_s)), 2),
        "ratio_per_round": [round(r / s, 2) for s, r in zip(runner_s, reference_s)],
        "runner_epoch_s": [round(s, 3) for s in runner_s], "reference_epoch_s": [round(s, 3) for s in reference_s],
        "runner_warmup_epoch_s": round(warmup_s[0], 3), "reference_warmup_epoch_s": round(warmup_s[1], 3),
        "gflop_per_batch": round(flops / 1e9, 2), "runner_tflops": round(flops * runner_ips / BATCH / 1e12, 4),
    }
    peak = machine.bf16_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    if peak:
        out["share_of_bf16_peak"] = round(flops * runner_ips / BATCH / peak, 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_cases = "digits,resnet18" + (",resnet18-cuda" if torch.cuda.is_available() else "")
    parser.add_argument("--cases", default=default_cases, help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--batches", type=int, default=0, help="batches of 128 per timed epoch (0: the case's own)")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs of each side, interleaved")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both sides (0: torch's default)")
    parser.add_argument("--precision", default="auto", help="the runner's precision key (bench.accel)")
    parser.add_argument("--compile", default="auto", choices=["auto", "true", "false"])
    parser.add_argument("--channels-last", default="auto", choices=["auto", "true", "false"],
                        help="the runner's channels_last key (bench.accel)")
    parser.add_argument("--json", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    switch = {"true": True, "false": False}
    overrides = {"precision": args.precision, "compile": switch.get(args.compile, "auto"),
                 "channels_last": switch.get(args.channels_last, "auto")}
    names = args.cases.split(",")
    unknown = [c for c in names if c not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}; valid: {', '.join(CASES)}")
    cuda = any(CASES[c].device == "cuda" for c in names)
    if cuda and not torch.cuda.is_available():
        parser.error("a -cuda case needs a CUDA device")
    info = machine.describe(torch.device("cuda") if cuda else None)
    results = {"machine": info, "cases": {}}
    print(machine.line(info))
    print(f"PGD-{STEPS} adversarial training, batch {BATCH}; median of {args.rounds} interleaved rounds")
    print(f"{'case':<15}{'runner img/s':>14}{'reference img/s':>17}{'ratio':>8}  {'runner FLOP rate':<26}policy")
    for name in names:
        row = measure(name, args.batches or CASES[name].batches, args.rounds, overrides)
        results["cases"][name] = row
        rate = f"{row['runner_tflops'] * 1e3:.1f} GFLOP/s"
        if "share_of_bf16_peak" in row:
            rate = f"{row['runner_tflops']:.1f} TFLOP/s, {100 * row['share_of_bf16_peak']:.1f}% of peak"
        print(f"{name:<15}{row['runner_images_per_s']:>14,.1f}{row['reference_images_per_s']:>17,.1f}"
              f"{row['ratio']:>7.2f}x  {rate:<26}{row['policy']}   rounds {row['ratio_per_round']}")
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
